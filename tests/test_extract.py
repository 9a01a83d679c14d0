"""Lean extraction (mi_probe.extract) against plain, unpadded forward passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import ARCHITECTURES, build_model

from mi_probe.adapters import find_adapter
from mi_probe.errors import InputError, ParameterError
from mi_probe.extract import extract_states


def _sequences(n: int = 9, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 300, size=int(rng.integers(2, 12))).tolist() for _ in range(n)]


def _plain_states(model, seqs):
    """Per sequence, unpadded: every token's state after each block (plain forward hooks),
    plus hidden_states[0] (embedding output) and hidden_states[-1] (after the final norm)."""
    adapter = find_adapter(model)
    out = []
    for s in seqs:
        caught = {}
        hooks = [b.register_forward_hook(lambda m, a, o, i=i, c=caught: c.__setitem__(i + 1, o))
                 for i, b in enumerate(adapter.blocks())]
        try:
            with torch.no_grad():
                res = model(torch.tensor([s]), output_hidden_states=True)
        finally:
            for h in hooks:
                h.remove()
        layers = {0: res.hidden_states[0][0]}
        layers.update({i: (o[0] if isinstance(o, tuple) else o)[0] for i, o in caught.items()})
        out.append((layers, res.hidden_states[-1][0]))
    return out


@pytest.fixture(scope="module", params=ARCHITECTURES)
def model_and_reference(request):
    model = build_model(request.param)
    seqs = _sequences()
    return model, seqs, _plain_states(model, seqs)


@pytest.mark.parametrize("side", ["right", "left"])
def test_last_token_matches_plain_forward(model_and_reference, side):
    model, seqs, ref = model_and_reference
    st = extract_states(model, seqs, batch_size=4, padding_side=side)
    assert st.n_tokens == sum(map(len, seqs)) and st.n_padded > st.n_tokens
    for layer in range(4):
        want = np.stack([r[0][layer][-1].numpy() for r in ref])
        np.testing.assert_allclose(st.layers[layer], want, atol=1e-5, rtol=0)
    want_norm = np.stack([r[1][-1].numpy() for r in ref])
    np.testing.assert_allclose(st.final_norm, want_norm, atol=1e-5, rtol=0)


def test_mean_pooling_and_positions(model_and_reference):
    model, seqs, ref = model_and_reference
    st = extract_states(model, seqs, layers=[2], final_norm=False, pooling="mean",
                        batch_size=3, padding_side="left")
    assert list(st.layers) == [2] and st.final_norm is None
    want = np.stack([r[0][2].mean(0).numpy() for r in ref])
    np.testing.assert_allclose(st.layers[2], want, atol=1e-5, rtol=0)
    pos = extract_states(model, seqs, layers=[1], positions=[[0, -1]] * len(seqs))
    assert pos.layers[1].shape == (len(seqs), 2, 32)
    np.testing.assert_allclose(pos.layers[1][:, 0], np.stack([r[0][1][0] for r in ref]),
                               atol=1e-5, rtol=0)


def test_stops_after_last_layer_and_never_runs_lm_head():
    model = build_model("llama", layers=4)
    adapter = find_adapter(model)
    calls = {"blocks": [], "head": 0, "norm": 0}
    hooks = [b.register_forward_hook(lambda m, a, o, i=i: calls["blocks"].append(i))
             for i, b in enumerate(adapter.blocks())]
    hooks.append(model.lm_head.register_forward_hook(
        lambda m, a, o: calls.__setitem__("head", calls["head"] + 1)))
    hooks.append(adapter.final_norm().register_forward_hook(
        lambda m, a, o: calls.__setitem__("norm", calls["norm"] + 1)))
    seqs = _sequences(5)
    extract_states(model, seqs, layers=[0, 2], final_norm=False, batch_size=5)
    assert calls == {"blocks": [0, 1], "head": 0, "norm": 0}
    calls["blocks"].clear()
    st = extract_states(model, seqs, batch_size=5)
    assert calls["blocks"] == [0, 1, 2, 3] and calls["head"] == 0 and calls["norm"] == 1
    assert sorted(st.layers) == [0, 1, 2, 3, 4]
    for h in hooks:
        h.remove()
    assert not any(b._forward_hooks or b._forward_pre_hooks for b in adapter.blocks())


def test_bad_input_is_reported():
    model = build_model("gpt2")
    with pytest.raises(InputError, match="outside the model's vocabulary"):
        extract_states(model, [[1, 2, 5000]])
    with pytest.raises(InputError, match="empty"):
        extract_states(model, [[1, 2], []])
    with pytest.raises(ParameterError, match="pooling"):
        extract_states(model, [[1, 2]], pooling="max")
    with pytest.raises(ParameterError, match="layers must lie in 0..3"):
        extract_states(model, [[1, 2]], layers=[4])
