"""Early-exit (logit-lens) accuracy per layer."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import build_model

from mi_probe.early_exit import early_exit
from mi_probe.probe_data import ProbeExample
from mi_probe.rescale import ResidualScaling
from mi_probe.rescale_train import evaluate


def examples(n: int = 24, seed: int = 0) -> list[ProbeExample]:
    """Random prompts of 3-9 tokens with random targets (the checks compare losses)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        prompt = rng.integers(1, 300, rng.integers(3, 10)).tolist()
        out.append(ProbeExample(prompt, [int(rng.integers(0, 300))]))
    return out


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox", "opt"])
def test_last_layer_is_the_model_prediction(arch):
    model, data = build_model(arch, layers=3), examples()
    lens = early_exit(model, data, batch_size=5)
    own = evaluate(model, data, batch_size=7)
    assert lens.layers == [0, 1, 2, 3] and lens.examples == len(data)
    assert lens.accuracy[-1] == own.accuracy
    assert lens.loss[-1] == pytest.approx(own.loss, abs=1e-5)
    assert lens.loss[0] != pytest.approx(lens.loss[-1])


def test_zero_betas_keep_every_layer_at_the_embedding():
    model, data = build_model("llama", layers=3), examples(seed=1)
    with ResidualScaling(model, betas=[0.0, 0.0, 0.0]):
        lens = early_exit(model, data)
        own = evaluate(model, data)
    assert lens.loss == pytest.approx([lens.loss[0]] * 4, abs=1e-5)
    assert lens.loss[-1] == pytest.approx(own.loss, abs=1e-5)
