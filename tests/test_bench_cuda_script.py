"""The prepared GPU benchmark script (benchmarks/bench_cuda.py) runs end to end on the CPU.

It is meant for a session that is lent a GPU machine; this keeps it from rotting between
such sessions. --quick uses tiny sizes, so the figures mean nothing here, only the keys.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cuda.py"


@pytest.mark.slow
def test_bench_cuda_quick_on_cpu(tmp_path):
    out = tmp_path / "bench_cuda.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["renyi_exact"]["max_abs_diff"] < 1e-10
    assert record["ksg"]["device_value"] == pytest.approx(record["ksg"]["cpu_value"], abs=1e-12)
    assert record["extraction"]["speedup"] > 0
    assert record["rescale"]["steps"] == 2
    assert set(record) >= {"renyi_approx", "mine"}


def test_bench_cuda_refuses_cuda_without_a_device(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "no CUDA device here" in done.stderr
    assert not (tmp_path / "x.json").exists()
