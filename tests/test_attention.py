"""Attention analysis: masks from spans and patterns, the measured mass, the CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from mi_probe.cli.app import app
from typer.testing import CliRunner

from mi_probe.attention import (
    attention_profile,
    pattern_spans,
    signal_mask,
    span_token_mask,
)
from mi_probe.errors import InputError, ParameterError
from mi_probe.probe_data import ProbeExample, load_probe_data
from mi_probe.tasks import write_arithmetic
from mi_probe.train import TrainConfig, train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Task data and a 2-checkpoint tiny GPT-2 run trained on it."""
    root = tmp_path_factory.mktemp("att")
    paths = write_arithmetic(root / "data", n_train=32, n_test=24, seed=0)
    cfg = TrainConfig(steps=2, save_every=2, layers=3, width=32, heads=2, batch_size=8,
                      device="cpu")
    train("tiny-gpt2", paths["id_train"], root / "run", cfg)
    return paths, root / "run"


def test_span_and_pattern_masks():
    offsets = [(0, 1), (2, 4), (5, 6), (6, 8)]
    assert span_token_mask(offsets, [[2, 3], [7, 8]]).tolist() == [False, True, False, True]
    assert pattern_spans("S a N b S c", r"S (\w)") == [[2, 3], [10, 11]]
    assert pattern_spans("S a N b", r"N \w") == [[4, 7]]
    with pytest.raises(ParameterError, match="regular expression"):
        pattern_spans("x", "(")
    bare = ProbeExample([1, 2], [3], {"prompt": "a b"}, [(0, 1), (2, 3)])
    with pytest.raises(InputError, match="signal-pattern"):
        signal_mask(bare)
    with pytest.raises(InputError, match="offsets"):
        signal_mask(ProbeExample([1, 2], [3]), r"a")


def _checkpoint_model(run_dir, step):
    from mi_probe.checkpoints import load_checkpoint

    return load_checkpoint(run_dir / f"checkpoint-{step}", need_tokenizer=True)


def test_profile_equals_a_direct_computation(run):
    paths, run_dir = run
    loaded = _checkpoint_model(run_dir, 2)
    examples = load_probe_data(paths["id_test"], loaded.tokenizer, samples=None).examples
    masks = [signal_mask(e) for e in examples]
    profile = attention_profile(loaded.model, examples, masks, batch_size=5)
    assert loaded.model.config._attn_implementation != "eager"  # switched back
    loaded.model.set_attn_implementation("eager")
    want = []
    with torch.no_grad():
        for ex, mask in zip(examples, masks, strict=True):
            att = loaded.model(torch.tensor([ex.input_ids]), output_attentions=True).attentions
            want.append([float(a[0, :, -1, torch.from_numpy(mask)].sum(-1).mean())
                         for a in att])
    np.testing.assert_allclose(profile.signal, np.mean(want, 0), atol=1e-6)
    assert profile.n == len(examples) and profile.num_layers == 3 and profile.heads == 2
    assert np.all(profile.signal + profile.self_ <= 1 + 1e-6)


def test_uniform_attention_gives_the_uniform_baseline(run):
    """With zero queries every score is equal: the mass on signal tokens must be their
    share of the prompt, the mass on itself and on the first token 1/T."""
    paths, run_dir = run
    loaded = _checkpoint_model(run_dir, 0)
    with torch.no_grad():
        for block in loaded.model.transformer.h:
            width = block.attn.c_attn.weight.shape[0]
            block.attn.c_attn.weight[:, :width] = 0  # GPT-2 Conv1D: (in, 3 * width), q first
            block.attn.c_attn.bias[:width] = 0
    examples = load_probe_data(paths["id_test"], loaded.tokenizer, samples=None).examples
    masks = [signal_mask(e) for e in examples]
    p = attention_profile(loaded.model, examples, masks)
    t = len(examples[0].input_ids)
    np.testing.assert_allclose(p.signal, p.uniform_signal, atol=1e-6)
    np.testing.assert_allclose(p.self_, 1 / t, atol=1e-6)
    np.testing.assert_allclose(p.first, 1 / t, atol=1e-6)
    assert p.uniform_signal == pytest.approx(5 / t)


def test_cli_writes_table_csv_and_figure(run, tmp_path):
    paths, run_dir = run
    res = CliRunner().invoke(app, ["attention", str(run_dir), "--data", str(paths["id_test"]),
                                   "--out", str(tmp_path), "--samples", "8", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "peak" in res.output and "2 checkpoints" in res.output
    rows = list(csv.DictReader((tmp_path / "attention.csv").open()))
    assert [(r["checkpoint"], r["layer"]) for r in rows] == [
        (f"checkpoint-{s}", str(layer)) for s in (0, 2) for layer in (1, 2, 3)]
    assert (tmp_path / "attention.png").stat().st_size > 5000
    res = CliRunner().invoke(app, ["attention", str(run_dir), "--data", str(paths["id_test"]),
                                   "--out", str(tmp_path), "--signal-pattern", "N (\\w)",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["attention", str(run_dir), "--data", str(paths["id_test"]),
                                   "--signal-pattern", "(", "--device", "cpu"])
    assert res.exit_code == 2 and "regular expression" in res.output
