"""Residual scaling: exactness at β = 1, fitting, saving/applying β, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import build_model

from mi_probe.checkpoints import load_checkpoint
from mi_probe.devices import resolve_device
from mi_probe.errors import CheckpointError, FileFormatError, MIProbeError, ParameterError
from mi_probe.probe_data import ProbeExample
from mi_probe.rescale import (
    DivergenceError,
    ResidualScaling,
    load_betas,
    save_betas,
)
from mi_probe.rescale_run import parse_named_paths
from mi_probe.rescale_train import FitConfig, evaluate, fit_betas

MODULUS = 32  # the arithmetic task's tokens are 0..31 (inside the tiny vocabulary)
NOISY_BLOCK = 2


def progressions(n: int, seed: int, steps=(1, 2, 3), length: int = 8) -> list[ProbeExample]:
    """Sequences s, s+d, s+2d, ... (mod 32); the prompt is ``length`` tokens, Y the next."""
    rng = np.random.default_rng(seed)
    start, step = rng.integers(0, MODULUS, n), rng.choice(steps, n)
    seq = (start[:, None] + step[:, None] * np.arange(length + 1)[None]) % MODULUS
    return [ProbeExample(row[:-1].tolist(), row[-1:].tolist()) for row in seq]


def train_briefly(model, steps: int = 150, seed: int = 0):
    """Full training of a tiny model on the progression task (all weights), then eval mode."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for i in range(steps):
        seq = progressions(64, seed=1000 + i)
        ids = torch.tensor([e.input_ids + e.target_ids for e in seq])
        logits = model(ids[:, :-1]).logits[:, 2:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 ids[:, 3:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def add_noise_block(model, block: int = NOISY_BLOCK, scale: float = 0.5, seed: int = 1):
    """Replace the output projections of one block by large random weights (pure noise)."""
    g = torch.Generator().manual_seed(seed)
    blk = model.transformer.h[block]
    with torch.no_grad():
        for lin in (blk.attn.c_proj, blk.mlp.c_proj):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * scale)
    return model


@pytest.fixture(scope="module")
def trained_ckpts(tmp_path_factory):
    """A 4-block GPT-2 trained on the progression task ("clean"), and the same model with
    block 2 turned into noise ("noisy"), saved as checkpoint directories."""
    model = train_briefly(build_model("gpt2", layers=4, seed=0))
    root = tmp_path_factory.mktemp("trained")
    model.save_pretrained(root / "clean")
    add_noise_block(model).save_pretrained(root / "noisy")
    return root


@pytest.fixture
def noisy_ckpt(trained_ckpts):
    return trained_ckpts / "noisy"


@pytest.fixture
def noisy_model(noisy_ckpt):
    return load_checkpoint(noisy_ckpt).model


def logits_of(model, ids):
    with torch.no_grad():
        return model(ids).logits


# -- exactness ------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox", "opt"])
def test_beta_one_reproduces_the_model(arch):
    model = build_model(arch, layers=3)
    if arch == "gpt_neox":
        assert model.config.use_parallel_residual
    ids = torch.randint(0, 300, (2, 11), generator=torch.Generator().manual_seed(0))
    plain = logits_of(model, ids)
    with ResidualScaling(model) as scaling:
        assert scaling.beta.dtype == torch.float32 and scaling.values() == [1.0] * 3
        wrapped = logits_of(model, ids)
        scaling.beta.data[1] = 0.5
        changed = logits_of(model, ids)
    assert (wrapped - plain).abs().max() <= 1e-6
    assert torch.equal(wrapped, plain)  # b + (β − 1)(b − x) is exactly b at β = 1
    assert (changed - plain).abs().max() > 1e-4  # the hook really acts
    assert torch.equal(logits_of(model, ids), plain)  # removed: the original module again


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_block_output_is_x_plus_beta_times_update(arch):
    model = build_model(arch, layers=3)
    ids = torch.randint(0, 300, (2, 7), generator=torch.Generator().manual_seed(1))
    block = ResidualScaling(model).adapter.blocks()[1]
    seen = {}

    def capture(module, args, kwargs, output):
        seen["x"] = args[0] if args else kwargs["hidden_states"]
        seen["out"] = output[0] if isinstance(output, tuple) else output

    with ResidualScaling(model) as scaling:
        handle = block.register_forward_hook(capture, with_kwargs=True)  # runs after β
        logits_of(model, ids)
        x, b = seen["x"], seen["out"]
        scaling.beta.data[1] = 0.3
        logits_of(model, ids)
        handle.remove()
    assert torch.equal(seen["x"], x)  # block 0 unchanged, so the same input
    assert torch.allclose(seen["out"], x + 0.3 * (b - x), atol=1e-5)


def test_context_manager_removes_hooks_on_error():
    model = build_model("gpt2", layers=2)
    blocks = ResidualScaling(model).adapter.blocks()
    with pytest.raises(RuntimeError), ResidualScaling(model):
        assert all(len(b._forward_hooks) == 1 for b in blocks)
        raise RuntimeError("boom")
    assert all(len(b._forward_hooks) == 0 for b in blocks)


# -- fitting -------------------------------------------------------------------------------
def test_fit_lowers_heldout_loss_and_keeps_weights(noisy_model, noisy_ckpt, tmp_path):
    model = noisy_model
    before_weights = {k: v.clone() for k, v in model.state_dict().items()}
    train, test = progressions(160, seed=1), progressions(100, seed=2)
    result = fit_betas(model, train, FitConfig(steps=40, lr=0.1, eval_every=10), seed=0)

    assert all(b >= 0 for b in result.betas) and len(result.betas) == 4
    assert result.heldout_after < result.heldout_before
    for k, v in model.state_dict().items():
        assert torch.equal(v, before_weights[k]), k
    assert all(p.requires_grad for p in model.parameters())  # flags restored

    at_one = evaluate(model, test)
    with ResidualScaling(model, betas=result.betas):
        fitted = evaluate(model, test)
        ids = torch.tensor([e.input_ids for e in test[:8]])
        fitted_logits = logits_of(model, ids)
    assert fitted.loss < at_one.loss

    st, js = save_betas(tmp_path / "fit", result.betas, {"note": "test"})
    assert json.loads(js.read_text())["num_layers"] == 4
    fresh = load_checkpoint(noisy_ckpt).model
    with ResidualScaling.from_file(fresh, st):
        assert torch.equal(logits_of(fresh, ids), fitted_logits)


def test_noise_block_gets_the_smallest_beta(noisy_model):
    result = fit_betas(noisy_model, progressions(200, seed=3),
                       FitConfig(steps=60, lr=0.1, eval_every=10), seed=0)
    others = [b for i, b in enumerate(result.betas) if i != NOISY_BLOCK]
    assert result.betas[NOISY_BLOCK] < 0.3
    assert result.betas[NOISY_BLOCK] < 0.5 * min(others)


def test_epochs_and_grad_accum_set_the_step_count(noisy_model):
    config = FitConfig(epochs=1, batch_size=8, grad_accum=2, heldout_fraction=0.2)
    result = fit_betas(noisy_model, progressions(40, seed=4), config, seed=1)
    assert result.n_train == 32 and result.steps_run == 2  # 32 examples / (8 · 2)


# -- bad input ----------------------------------------------------------------------------
def test_nan_model_stops_with_a_message():
    model = build_model("gpt2", layers=2)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_proj.weight[0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="NaN"):
        fit_betas(model, progressions(20, seed=0), FitConfig(steps=3), seed=0)


def test_diverging_fit_stops_with_a_message(trained_ckpts):
    model = load_checkpoint(trained_ckpts / "clean").model
    config = FitConfig(steps=60, lr=100.0, diverge_factor=3, heldout_fraction=0)
    with pytest.raises(DivergenceError, match="lower the learning rate"):
        fit_betas(model, progressions(64, seed=5), config, seed=0)


def test_bad_betas_are_refused(tmp_path):
    model = build_model("gpt2", layers=3)
    scaling = ResidualScaling(model)
    with pytest.raises(MIProbeError, match="≥ 0"):
        scaling.set_([1.0, -0.1, 1.0])
    with pytest.raises(DivergenceError, match="NaN"):
        scaling.set_([1.0, float("nan"), 1.0])
    save_betas(tmp_path / "two", [1.0, 0.5])
    with pytest.raises(CheckpointError, match="2 β values but the model has 3"):
        ResidualScaling.from_file(model, tmp_path / "two.safetensors")
    with pytest.raises(FileFormatError, match="no such β file"):
        load_betas(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(FileFormatError, match="not a readable safetensors"):
        load_betas(tmp_path / "junk")
    with pytest.raises(ParameterError, match="lr"):
        FitConfig(lr=-1).validate()


def test_named_paths_are_checked(tmp_path):
    data = tmp_path / "a.jsonl"
    data.write_text('{"input_ids": [1, 2], "target_id": 3}\n')
    assert parse_named_paths([f"id={data}"], "--fit") == {"id": data}
    with pytest.raises(ParameterError, match="NAME=FILE"):
        parse_named_paths([str(data)], "--fit")
    with pytest.raises(ParameterError, match="may only hold"):
        parse_named_paths([f"a/b={data}"], "--fit")
    with pytest.raises(ParameterError, match="twice"):
        parse_named_paths([f"id={data}", f"id={data}"], "--fit")
    with pytest.raises(FileFormatError, match="no such data file"):
        parse_named_paths([f"id={tmp_path / 'nope.jsonl'}"], "--eval")


def test_bf16_autocast_path_runs_on_cpu(noisy_model):
    """The CUDA path's bf16 autocast, exercised on the CPU: same code, β stays float32."""
    config = FitConfig(steps=4, eval_every=2, precision="bf16")
    result = fit_betas(noisy_model, progressions(40, seed=6), config, seed=0)
    assert all(np.isfinite(result.betas)) and result.heldout_after <= result.heldout_before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused():
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ParameterError, match="no CUDA device"):
        resolve_device("cuda")
