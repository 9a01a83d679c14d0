"""`mi-probe rescale` / `mi-probe early-exit` end to end on tiny checkpoints, and run files."""

from __future__ import annotations

import json

import pytest
from mi_probe.cli.app import app
from tiny_models import write_prompt_target_jsonl
from typer.testing import CliRunner

from mi_probe.adapters import find_adapter
from mi_probe.checkpoints import load_checkpoint
from mi_probe.errors import CheckpointError
from mi_probe.rescale import load_betas
from mi_probe.rescale_run import run_rescale, select_checkpoint
from mi_probe.rescale_train import FitConfig

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rescale-data")
    return {"id": write_prompt_target_jsonl(root / "id.jsonl", 30),
            "ood": write_prompt_target_jsonl(root / "ood.jsonl", 20)}


def test_rescale_command_writes_results(tiny_trainer_run, data, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, [
        "rescale", str(tiny_trainer_run), "--fit", f"id={data['id']}",
        "--fit", f"ood={data['ood']}", "--eval", f"id={data['id']}", "--eval",
        f"ood={data['ood']}", "--seeds", "2", "--steps", "6", "--eval-every", "3",
        "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "β per block" in res.output and "early-exit accuracy" in res.output

    doc = json.loads((out / "betas.json").read_text())
    assert doc["num_layers"] == 3 and list(doc["fits"]) == ["id", "ood"]
    fit = doc["fits"]["ood"]
    assert fit["seeds"] == [0, 1] and len(fit["beta"]) == 2 and len(fit["beta_mean"]) == 3
    assert all(b >= 0 for seed in fit["beta"] for b in seed)
    assert set(fit["eval"]) == {"id", "ood"}
    assert {"before", "after", "after_per_seed"} <= set(fit["eval"]["id"])
    assert fit["eval"]["id"]["before"] == {k: doc["eval_before"]["id"][k]
                                           for k in ("loss", "accuracy")}
    assert len(doc["early_exit"]["ood"]["accuracy"]) == 4  # layers 0..3

    beta, meta = load_betas(out / "betas" / "ood-seed1.safetensors")
    assert beta.tolist() == pytest.approx(fit["beta"][1])
    assert meta["model"]["checkpoint_name"] == "checkpoint-30"  # the last step by default

    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["checkpoint"]["step"] == 30
    assert run["fit_data"]["id"]["sha256"] and run["environment"]["torch"]
    for png in ("betas.png", "early_exit.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_interrupted_run_keeps_finished_fits(tiny_gpt2, data, tmp_path):
    loaded = load_checkpoint(tiny_gpt2)
    out = tmp_path / "out"

    def stop_in_second_fit(name, seed, step, total, loss):
        if name == "ood":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_rescale(loaded, find_adapter(loaded.model), data, {"id": data["id"]},
                    config=FitConfig(steps=2), out=out, with_early_exit=False,
                    progress=stop_in_second_fit)
    doc = json.loads((out / "betas.json").read_text())
    assert list(doc["fits"]) == ["id"]
    assert (out / "betas" / "id-seed0.safetensors").is_file()
    assert not list((out / "betas").glob("ood*"))
    assert json.loads((out / "run.json").read_text())["status"] == "running"


def test_checkpoint_selection(tiny_trainer_run):
    assert select_checkpoint(tiny_trainer_run).name == "checkpoint-30"
    assert select_checkpoint(tiny_trainer_run, "checkpoint-10").step == 10
    assert select_checkpoint(tiny_trainer_run, "20").name == "checkpoint-20"
    with pytest.raises(CheckpointError, match="checkpoint-10, checkpoint-20"):
        select_checkpoint(tiny_trainer_run, "checkpoint-99")


@pytest.mark.parametrize("args, message", [
    (["--fit", "id_train.jsonl"], "expected NAME=FILE"),
    (["--fit", "id=does-not-exist.jsonl"], "no such data file"),
    (["--fit", "id={id}", "--lr", "0"], "lr must be a positive number"),
])
def test_bad_input_is_one_line(tiny_gpt2, data, args, message):
    args = [a.format(id=data["id"]) for a in args]
    res = runner.invoke(app, ["rescale", str(tiny_gpt2), *args])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output


def test_early_exit_command(tiny_gpt2, data, tmp_path):
    res = runner.invoke(app, ["early-exit", str(tiny_gpt2), "--eval", f"id={data['id']}",
                              "--device", "cpu", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "early_exit.json").read_text())
    assert saved["results"]["id"]["layers"] == [0, 1, 2, 3]
    assert saved["results"]["id"]["examples"] == 30
    assert (tmp_path / "early_exit.png").is_file()
