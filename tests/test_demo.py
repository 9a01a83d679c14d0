"""`mi-probe demo --quick` end to end (a subprocess, as a user runs it) and its files."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from mi_probe.demo import MARKER, QUICK, prepare_out
from mi_probe.errors import ParameterError


def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    proc = subprocess.run(
        [sys.executable, "-c", "from mi_probe.cli.app import main; main()", "demo", "--quick",
         "--out", str(out), "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    # it ends with the tables and the path of the figures
    tail = proc.stdout.strip().splitlines()
    assert "demo.png" in tail[-1] and str(out) in tail[-1]
    assert "ridge" in proc.stdout and "β OOD" in proc.stdout

    summary = json.loads((out / MARKER).read_text())
    assert summary["status"] == "complete"
    assert set(summary["seconds"]) == {"data", "train", "probe", "rescale", "attention"}
    layers = QUICK.layers
    assert [r["layer"] for r in summary["layers"]] == list(range(layers + 1))
    assert all(r["beta_id"] >= 0 and r["beta_ood"] >= 0 for r in summary["layers"][1:])
    for fig in summary["figures"]:
        assert (out / fig).stat().st_size > 5000

    steps = list(range(0, QUICK.steps + 1, QUICK.save_every))
    assert sorted(int(p.name.split("-")[1]) for p in (out / "run").glob("checkpoint-*")) == steps
    rows = list(csv.DictReader((out / "probe" / "results.csv").open()))
    keys = {(r["checkpoint"], r["layer"], r["quantity"]) for r in rows}
    # layers 0..L and the final norm (predictive), blocks 1..L (incremental), per checkpoint
    assert len(keys) == len(rows) == len(steps) * ((layers + 2) + layers)
    betas = json.loads((out / "rescale" / "betas.json").read_text())
    assert set(betas["fits"]) == {"id", "ood"} and set(betas["early_exit"]) == {"id", "ood"}
    att = list(csv.DictReader((out / "attention" / "attention.csv").open()))
    assert len(att) == len(steps) * layers
    for name in ("id_train", "id_test", "ood_train", "ood_test"):
        assert (out / "data" / f"{name}.jsonl").is_file()


def test_demo_refuses_a_folder_that_is_not_its_own(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ParameterError, match="not a demo folder"):
        prepare_out(tmp_path)
    demo = tmp_path / "old-demo"
    (demo / "probe").mkdir(parents=True)
    (demo / MARKER).write_text("{}")
    (demo / "keep.txt").write_text("user file")
    prepare_out(demo)
    assert not (demo / "probe").exists() and (demo / "keep.txt").exists()
