"""The probing pipeline (`mi-probe estimate`, `mi_probe.probe`) on tiny real checkpoints."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from mi_probe.cli.app import app
from tiny_models import save_checkpoint, write_prompt_target_jsonl
from typer.testing import CliRunner

import mi_probe
from mi_probe.adapters import find_adapter
from mi_probe.checkpoints import load_checkpoint
from mi_probe.errors import CheckpointError
from mi_probe.probe import replicate_indices
from mi_probe.probe_data import load_probe_data
from mi_probe.probe_results import ProbeResults

L = 3  # blocks of the tiny models


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_prompt_target_jsonl(tmp_path_factory.mktemp("data") / "probe.jsonl", n=40)


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _events(out: Path) -> Counter:
    lines = (out / "log.jsonl").read_text().splitlines()
    return Counter((e["event"], e["checkpoint"]) for e in map(json.loads, lines))


def _check_one_row_per_cell(rows, checkpoints):
    cells = Counter((r["checkpoint"], r["layer"], r["quantity"]) for r in rows)
    assert set(cells.values()) == {1}
    for c in checkpoints:
        assert sorted(layer for (ck, layer, q) in cells if ck == c and q == "predictive") == \
            sorted([*map(str, range(L + 1)), "final_norm"])
        assert sorted(layer for (ck, layer, q) in cells if ck == c and q == "incremental") == \
            [str(i) for i in range(1, L + 1)]


# -- the command, killed mid-way and resumed ------------------------------------------------
def test_cli_killed_mid_run_resumes_without_recomputing(tiny_trainer_run, data_file, tmp_path):
    out = tmp_path / "out"
    args = ["estimate", "--estimator", "renyi", str(tiny_trainer_run), "--data",
            str(data_file), "--samples", "30", "--out", str(out)]
    script = Path(sys.executable).parent / "mi-probe"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "mi_probe.cli.app"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not list((out / "parts").glob("checkpoint-10__*")) and time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    assert not (out / "figures").exists()
    first = {p.name: p.stat().st_mtime_ns for p in (out / "cache").glob("checkpoint-10__*")}
    assert first

    result = CliRunner().invoke(app, args)  # the same command, in-process, resumes
    assert result.exit_code == 0, result.output
    assert "found 3 checkpoints" in result.output and "ridge" in result.output
    events = _events(out)
    assert events[("extracted", "checkpoint-10")] == 1  # only the killed run extracted it
    assert events[("estimated", "checkpoint-10")] == 1
    assert events[("results_reused", "checkpoint-10")] == 1
    assert events[("extracted", "checkpoint-30")] == 1
    assert first == {p.name: p.stat().st_mtime_ns for p in (out / "cache").glob("checkpoint-10__*")}

    rows = _csv(out / "results.csv")
    _check_one_row_per_cell(rows, ["checkpoint-10", "checkpoint-20", "checkpoint-30"])
    assert {r["step"] for r in rows} == {"10", "20", "30"}
    assert {"checkpoint", "step", "layer", "quantity", "estimator", "value", "unit"} <= set(rows[0])
    assert len(_csv(out / "ridge.csv")) == 3
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["data"]["sha256"]
    assert [c["step"] for c in run["checkpoints"]] == [10, 20, 30]
    assert run["estimators"]["renyi"]["sigma"] == 1.0
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "heatmap.png", "incremental_by_layer.png", "mi_by_layer.png", "ridge.png"]

    fresh = mi_probe.probe(tiny_trainer_run, tmp_path / "fresh", data=str(data_file),
                           samples=30, plots=False)
    # the same rows; values equal up to rounding (threaded BLAS may sum in another order)
    assert [(r["checkpoint"], r["layer"], r["quantity"]) for r in rows] == \
        [(r.checkpoint, r.layer, r.quantity) for r in fresh.rows]
    assert [float(r["value"]) for r in rows] == pytest.approx([r.value for r in fresh.rows],
                                                              rel=1e-12, abs=1e-14)


def test_interrupted_run_and_second_estimator_reuse_finished_work(
        tiny_trainer_run, data_file, tmp_path):
    out = tmp_path / "out"
    common = {"data": str(data_file), "samples": 30, "plots": False}

    def interrupt(event):
        if event.kind == "estimate" and event.name == "checkpoint-20":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mi_probe.probe(tiny_trainer_run, out, progress=interrupt, **common)
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert len(_csv(out / "results.csv")) == 2 * L + 2  # checkpoint-10 only

    resumed = mi_probe.probe(tiny_trainer_run, out, **common)
    events = _events(out)
    assert events[("extracted", "checkpoint-10")] == 1
    assert events[("results_reused", "checkpoint-10")] == 1
    assert events[("extracted", "checkpoint-20")] == 1  # its states were cached
    assert events[("states_reused", "checkpoint-20")] == 1
    assert len(resumed.rows) == 3 * (2 * L + 2)

    again = mi_probe.probe(tiny_trainer_run, out, params={"renyi": {"alpha": 2}}, **common)
    events = _events(out)
    assert all(events[("extracted", c)] == 1 for c in resumed.checkpoints)  # no model runs
    assert all(events[("states_reused", c)] >= 1 for c in resumed.checkpoints)
    assert again.rows[0].value != resumed.rows[0].value

    over = mi_probe.probe(tiny_trainer_run, out, overwrite=True, **common)
    assert _events(out)[("extracted", "checkpoint-10")] == 1  # the log started over
    assert [r.value for r in over.rows] == [r.value for r in resumed.rows]


# -- numbers: the pipeline against a direct computation ------------------------------------
def _direct(checkpoint: Path, data_file: Path, samples: int):
    """I(Z_l; Y) and I(ΔZ_l; Y) from unpadded forwards with plain hooks, last real token."""
    loaded = load_checkpoint(checkpoint, need_tokenizer=True)
    model, adapter = loaded.model, find_adapter(loaded.model)
    examples = load_probe_data(data_file, loaded.tokenizer, samples=samples).examples
    z = {i: [] for i in range(L + 1)}
    norm = []
    for ex in examples:
        caught = {}
        hooks = [b.register_forward_hook(lambda m, a, o, i=i, c=caught: c.__setitem__(i + 1, o))
                 for i, b in enumerate(adapter.blocks())]
        with torch.no_grad():
            res = model(torch.tensor([ex.input_ids]), output_hidden_states=True)
        for h in hooks:
            h.remove()
        z[0].append(res.hidden_states[0][0, -1].double().numpy())
        for i in range(1, L + 1):
            z[i].append(caught[i][0, -1].double().numpy())
        norm.append(res.hidden_states[-1][0, -1].double().numpy())
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    zs = [np.array(z[i]) for i in range(L + 1)]
    emb = adapter.embedding().weight.detach().double().numpy()
    y = unit(emb[[ex.target_id for ex in examples]])
    pred = mi_probe.estimate_layers([unit(a) for a in [*zs, np.array(norm)]], y, "renyi")
    inc = mi_probe.estimate_layers([unit(zs[i] - zs[i - 1]) for i in range(1, L + 1)], y,
                                   "renyi")
    return [r.value for r in pred], [r.value for r in inc]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_pipeline_equals_direct_computation(which, side, tiny_gpt2, tiny_llama, data_file,
                                            tmp_path):
    ckpt = tiny_gpt2 if which == "gpt2" else tiny_llama
    res = mi_probe.probe(ckpt, tmp_path / "out", data=str(data_file), samples=25,
                         padding_side=side, batch_size=4, plots=False)
    pred, inc = _direct(ckpt, data_file, 25)
    got_pred = [r.value for r in res.select(quantity="predictive")]
    got_inc = [r.value for r in res.select(quantity="incremental")]
    np.testing.assert_allclose(got_pred, pred, atol=1e-6, rtol=0)
    np.testing.assert_allclose(got_inc, inc, atol=1e-6, rtol=0)
    assert res.rows[0].n == 25


# -- options -----------------------------------------------------------------------------
def test_seeds_targets_and_pooling(tiny_gpt2, tmp_path):
    res = mi_probe.probe(tiny_gpt2, tmp_path / "a", samples=20, seeds=3, context=12,
                         target="token-id", pooling="mean", unit="bits", plots=False)
    rows = _csv(tmp_path / "a" / "results.csv")
    assert {"std", "min", "max"} <= set(rows[0]) and rows[0]["seeds"] == "3"
    r = res.rows[0]
    assert r.min <= r.value <= r.max and r.std > 0 and r.unit == "bits" and r.n == 20
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["data"]["source"] == "builtin:pydoc_data.topics"
    assert run["checkpoints"][0]["data"]["samples"] == 60

    plain = mi_probe.probe(tiny_gpt2, tmp_path / "b", samples=20, context=12, plots=False,
                           incremental=False, final_norm=False, target="unembedding",
                           normalize=False)
    assert {r.quantity for r in plain.rows} == {"predictive"} and len(plain.rows) == L + 1
    assert "std" not in _csv(tmp_path / "b" / "results.csv")[0]


def test_replicates_are_disjoint_when_the_data_suffices():
    w = replicate_indices(pool=30, samples=10, seeds=3, seed=0)
    assert all(len(x) == 10 for x in w)
    assert len(set(np.concatenate(w))) == 30
    w = replicate_indices(pool=15, samples=10, seeds=3, seed=0)
    assert [len(x) for x in w] == [10, 10, 10] and len(set(np.concatenate(w))) == 15
    assert list(replicate_indices(8, 10, 1, 0)[0]) == list(range(8))


# -- failures ------------------------------------------------------------------------------
def test_bad_checkpoints_are_reported_and_skipped(tmp_path, data_file):
    root = tmp_path / "ckpt"
    save_checkpoint(root / "checkpoint-1", "gpt2", step=1)
    save_checkpoint(root / "checkpoint-2", "gpt2", step=2, seed=1)
    (root / "checkpoint-2" / "model.safetensors").write_bytes(b"not a safetensors file")
    save_checkpoint(root / "checkpoint-3", "gpt2", step=3, seed=2)
    (root / "checkpoint-3" / "model.safetensors").unlink()
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["estimate", str(root), "--data", str(data_file),
                                      "--samples", "20", "--out", str(out), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "skipped checkpoint-2" in result.output and "skipped checkpoint-3" in result.output
    assert {r["checkpoint"] for r in _csv(out / "results.csv")} == {"checkpoint-1"}
    failed = ProbeResults.load(out).failed
    assert set(failed) == {"checkpoint-2", "checkpoint-3"}
    assert "no weights found" in failed["checkpoint-3"]

    (root / "checkpoint-1" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no checkpoint could be probed"):
        mi_probe.probe(root, tmp_path / "out2", data=str(data_file), plots=False)


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "a"}\n', "expected keys prompt+target"),
    ("not json\n", "line 1: not valid JSON"),
    ("", "holds no records"),
])
def test_bad_data_gives_one_clear_message(tiny_gpt2, tmp_path, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    result = CliRunner().invoke(app, ["estimate", str(tiny_gpt2), "--data", str(bad),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "cache").exists()  # no model was run


def test_bad_options_fail_before_any_model_runs(tiny_gpt2, tmp_path):
    runner = CliRunner()
    for args, message in [
        (["--param", "nope=1"], "has a parameter 'nope'"),
        (["--param", "ksgx.k=1"], "not among the estimators"),
        (["--target", "onehot"], "target must be one of"),
        (["--estimator", "nosuch"], "unknown estimator 'nosuch'"),
    ]:
        result = runner.invoke(app, ["estimate", str(tiny_gpt2), "--out",
                                     str(tmp_path / "o"), *args])
        assert result.exit_code == 2 and message in result.output, result.output


# -- a Llama checkpoint through the command, then `mi-probe report` ------------------------
def test_llama_command_and_report(tiny_llama, data_file, tmp_path):
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(app, ["estimate", "--estimator", "renyi", str(tiny_llama), "--data",
                                 str(data_file), "--samples", "20", "--out", str(out),
                                 "--seeds", "2", "-p", "renyi.sigma=2"])
    assert result.exit_code == 0, result.output
    assert "llama-family adapter" in result.output and "▲" in result.output
    _check_one_row_per_cell(_csv(out / "results.csv"), ["model"])
    run = json.loads((out / "run.json").read_text())
    assert run["estimators"]["renyi"]["sigma"] == 2.0 and run["seeds"]["count"] == 2
    assert (out / "results.csv").stat().st_mode & 0o044 == 0o044  # not mkstemp's 0600
    (out / "figures" / "heatmap.png").unlink()
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert "▲" in report.output and (out / "figures" / "heatmap.png").is_file()
    missing = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_several_estimators_share_one_extraction(tiny_gpt2, data_file, tmp_path):
    out = tmp_path / "out"
    res = mi_probe.probe(tiny_gpt2, out, estimators=("renyi", "ksg"), data=str(data_file),
                         samples=30, params={"ksg": {"k": 3}}, plots=False)
    assert res.estimators == ["renyi", "ksg"]
    assert {(r.estimator, r.quantity) for r in res.rows} == {
        (e, q) for e in ("renyi", "ksg") for q in ("predictive", "incremental")}
    assert len(res.ridge) == 2
    events = _events(out)
    assert events[("extracted", "model")] == 1 and events[("estimated", "model")] == 2
    assert json.loads((out / "run.json").read_text())["estimators"]["ksg"]["k"] == 3
