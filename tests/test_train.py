"""Full fine-tuning: checkpoint layout, learning, exact resume, fine-tuning a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from mi_probe.cli.app import app
from safetensors.torch import load_file
from tiny_models import write_prompt_target_jsonl
from typer.testing import CliRunner

from mi_probe.checkpoints import discover_checkpoints, load_checkpoint
from mi_probe.errors import CheckpointError, FileFormatError, ParameterError
from mi_probe.tasks import write_arithmetic
from mi_probe.train import STATE_FILE, TrainConfig, batch_indices, lr_at, train

SMALL = {"layers": 2, "width": 32, "heads": 2, "batch_size": 8, "device": "cpu"}


@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    return write_arithmetic(tmp_path_factory.mktemp("task"), n_train=48, n_test=16, seed=0)


def test_checkpoints_in_trainer_layout_and_loss_falls(tmp_path, task_data):
    cfg = TrainConfig(steps=40, save_every=20, seed=1, **SMALL)
    res = train("tiny-gpt2", task_data["id_train"], tmp_path, cfg, eval_data=task_data["id_train"])
    refs = discover_checkpoints(tmp_path)
    assert [r.step for r in refs] == [0, 20, 40]
    assert [p.name for p in res.checkpoints] == ["checkpoint-0", "checkpoint-20", "checkpoint-40"]
    state = json.loads((tmp_path / "checkpoint-40" / "trainer_state.json").read_text())
    assert state["global_step"] == 40 and state["max_steps"] == 40
    # only the newest checkpoint keeps the optimizer state
    assert [r.step for r in refs if (r.path / STATE_FILE).exists()] == [40]
    evals = [h for h in res.history if "eval_loss" in h]
    assert [h["step"] for h in evals] == [0, 20, 40]
    assert evals[-1]["eval_loss"] < 0.8 * evals[0]["eval_loss"]
    loaded = load_checkpoint(refs[-1], need_tokenizer=True)
    assert loaded.model.config.model_type == "gpt2"
    assert loaded.tokenizer.convert_ids_to_tokens(loaded.tokenizer(" S a")["input_ids"]) == [
        "S", "a"]


class _Stop(Exception):
    pass


def test_interrupted_run_resumes_to_identical_weights(tmp_path, task_data):
    cfg = TrainConfig(steps=6, save_every=3, seed=2, save_initial=False, **SMALL)
    full = train("tiny-llama", task_data["id_train"], tmp_path / "full", cfg)

    def stop_after_4(kind, info):
        if kind == "step" and info["step"] == 4:
            raise _Stop

    with pytest.raises(_Stop):
        train("tiny-llama", task_data["id_train"], tmp_path / "cut", cfg, callback=stop_after_4)
    assert [r.step for r in discover_checkpoints(tmp_path / "cut")] == [3]
    resumed = train("tiny-llama", task_data["id_train"], tmp_path / "cut", cfg)
    assert resumed.resumed_from == 3 and full.resumed_from is None
    a = load_file(tmp_path / "full" / "checkpoint-6" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoint-6" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]
    # a finished run has nothing left to do; other settings are refused
    again = train("tiny-llama", task_data["id_train"], tmp_path / "cut", cfg)
    assert again.resumed_from == 6
    other = TrainConfig(steps=6, save_every=3, seed=3, save_initial=False, **SMALL)
    with pytest.raises(ParameterError, match="seed"):
        train("tiny-llama", task_data["id_train"], tmp_path / "cut", other)


def test_fine_tunes_an_existing_checkpoint(tmp_path, tiny_gpt2):
    data = write_prompt_target_jsonl(tmp_path / "pt.jsonl", n=12)
    cfg = TrainConfig(steps=2, save_every=1, save_initial=False, lr=1e-3, **SMALL)
    res = train(str(tiny_gpt2), data, tmp_path / "run", cfg)
    assert [p.name for p in res.checkpoints] == ["checkpoint-1", "checkpoint-2"]
    before = load_checkpoint(tiny_gpt2).model.state_dict()
    after = load_checkpoint(res.checkpoints[-1], need_tokenizer=True).model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2  # all weights train, not a subset


def test_bad_inputs(tmp_path, task_data):
    text = tmp_path / "text.jsonl"
    text.write_text('{"text": "hello world"}\n')
    with pytest.raises(FileFormatError, match="prompt/target"):
        train("tiny-gpt2", text, tmp_path / "a", TrainConfig(steps=1, **SMALL))
    with pytest.raises(CheckpointError, match="tiny model name"):
        train("no-such-model", task_data["id_train"], tmp_path / "b", TrainConfig(steps=1))
    with pytest.raises(ParameterError, match="multiple of heads"):
        TrainConfig(width=30, heads=4).validate()


def test_schedule_and_batch_order_are_pure_functions():
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.1)
    first = [batch_indices(s, 20, 8, 0).tolist() for s in range(2)]
    assert sorted(first[0] + first[1]) == sorted(set(first[0] + first[1]))  # no repeats
    assert batch_indices(2, 20, 8, 0).tolist() != first[0]  # a new epoch, a new order
    assert batch_indices(1, 20, 8, 0).tolist() == first[1]


def test_cli_train_shows_checkpoints(tmp_path, task_data):
    args = ["train", "tiny-gpt2", "--data", str(task_data["id_train"]), "--out",
            str(tmp_path), "--steps", "4", "--save-every", "2", "--layers", "2", "--width",
            "32", "--heads", "2", "--batch-size", "8", "--eval", str(task_data["id_test"]),
            "--device", "cpu"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "checkpoint-4" in res.output and "eval accuracy" in res.output
    res = CliRunner().invoke(app, [*args[:-4], "--lr", "0.5", "--device", "cpu"])
    assert res.exit_code == 2 and "other settings" in res.output
    res = CliRunner().invoke(app, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
