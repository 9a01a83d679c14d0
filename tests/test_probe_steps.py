"""Multi-token probing (`steps` T > 1): per-step MI and the sequence kernel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from mi_probe.plugins.renyi import RenyiEstimator, gram_matrix, matrix_entropy, sequence_gram
from tiny_models import _SENTENCES

import mi_probe
from mi_probe import probe
from mi_probe.checkpoints import load_checkpoint
from mi_probe.errors import ParameterError
from mi_probe.probe_data import load_probe_data


def test_sequence_gram_is_the_mean_pairwise_kernel():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(5, 3, 4)))
    k = sequence_gram(x, "gaussian", 1.3)
    want = np.zeros((5, 5))
    for i in range(5):
        for j in range(5):
            d2 = ((x[i][:, None, :] - x[j][None, :, :]) ** 2).sum(-1)
            want[i, j] = torch.exp(-d2 / (2 * 1.3**2)).mean()
    np.testing.assert_allclose(k.numpy(), want, rtol=1e-12)
    assert torch.linalg.eigvalsh(k).min() > -1e-12  # PSD
    np.testing.assert_allclose(sequence_gram(x[:, :1], "gaussian", 1.3).numpy(),
                               gram_matrix(x[:, 0], "gaussian", 1.3).numpy())


def test_sequence_mi_from_the_estimator_equals_the_definition():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(30, 4, 6))
    y = z[:, :, :3] + 0.5 * rng.normal(size=(30, 4, 3))
    est = RenyiEstimator()
    params = {p.name: p.default for p in est.params}
    value = est.compute_sequence_layers([z], y, params)[0].value

    def gram(a):
        t = torch.as_tensor(a)
        t = t / torch.linalg.vector_norm(t, dim=-1, keepdim=True)
        return sequence_gram(t, "gaussian", 1.0)

    ka, kb = gram(z), gram(y)
    want = matrix_entropy(ka) + matrix_entropy(kb) - matrix_entropy(ka * kb)
    assert value == pytest.approx(want, abs=1e-10) and value > 0


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("steps") / "text.jsonl"
    recs = [{"text": f"{a} {b}"} for a in _SENTENCES for b in _SENTENCES]
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return path


def test_step_rows_equal_a_direct_teacher_forced_computation(tiny_gpt2, text_data, tmp_path):
    steps, samples = 3, 40
    res = probe(tiny_gpt2, tmp_path, data=str(text_data), samples=samples, steps=steps,
                device="cpu", plots=True)
    layers = 4  # embedding output and 3 blocks
    step_rows = res.select(quantity="step")
    assert sorted((r.layer_index, r.t) for r in step_rows) == [
        (i, t) for i in range(layers) for t in range(1, steps + 1)]
    predictive = res.values(res.checkpoints[0], "renyi")
    for r in step_rows:
        if r.t == 1:
            assert r.value == predictive[r.layer]
    assert len(res.select(quantity="sequence")) == layers
    assert (tmp_path / "figures" / "steps.png").is_file()

    # direct: plain forward over prompt + 2 target tokens, hidden states of blocks < L
    loaded = load_checkpoint(tiny_gpt2, need_tokenizer=True)
    examples = load_probe_data(text_data, loaded.tokenizer, samples=samples, seed=0,
                               steps=steps).examples
    emb = loaded.model.get_input_embeddings().weight.detach()
    with torch.no_grad():
        per_ex = []
        for e in examples:
            ids = torch.tensor([[*e.input_ids, *e.target_ids[:steps - 1]]])
            hs = loaded.model(ids, output_hidden_states=True).hidden_states
            per_ex.append([[hs[i][0, len(e.input_ids) - 1 + t].numpy() for t in range(steps)]
                           for i in range(layers - 1)])
    states = np.array(per_ex)  # (n, layers - 1, T, d)
    ys = emb[torch.tensor([e.target_ids[:steps] for e in examples])].numpy()  # (n, T, d)
    got = {(r.layer_index, r.t): r.value for r in step_rows}
    for layer in range(layers - 1):
        for t in range(steps):
            want = mi_probe.estimate(states[:, layer, t], ys[:, t], "renyi").value
            assert got[(layer, t + 1)] == pytest.approx(want, abs=1e-6)
    est = RenyiEstimator()
    params = {p.name: p.default for p in est.params}
    seq = {r.layer_index: r.value for r in res.select(quantity="sequence")}
    for layer in range(layers - 1):
        want = est.compute_sequence_layers([states[:, layer]], ys, params)[0].value
        assert seq[layer] == pytest.approx(want, abs=1e-6)


def test_steps_needs_last_token_pooling(tiny_gpt2, tmp_path):
    with pytest.raises(ParameterError, match="pooling"):
        probe(tiny_gpt2, tmp_path, steps=2, pooling="mean", device="cpu")
