"""Residual scaling: one trainable scale β_l per residual block, the model itself frozen.

With x the block's input (the residual stream before block l) and b = block(x) its output,
the wrapped block returns

    x + β_l · (b − x)

so β_l = 1 is the original model, β_l = 0 skips the block, and β_l scales exactly what the
block adds to the stream. For sequential pre-norm blocks (GPT-2, Llama) b − x is the sum of
the attention and MLP updates; for parallel-residual GPT-NeoX blocks (x + attn(ln1 x) +
mlp(ln2 x)) it is attn + mlp. Either way only the block's *output* is rewritten, so one code
path covers both.

Exactness at β = 1: the output is computed as ``b + (β − 1)·(b − x)``, which is the same
expression rearranged. At β = 1 the correction is exactly zero, so the wrapped model's
output is bit-identical to the original (``x + 1·(b − x)`` would not be: b − x rounds). In
bf16 the small number β − 1 also keeps far more relative precision than β itself.

Non-negativity: β is a plain float32 parameter (one per block, shape (L,)), projected back
onto β ≥ 0 by :meth:`ResidualScaling.project_` after every optimiser step (so a block can be
switched off exactly, which a softplus/exp parametrisation could only approach).

Usage::

    with ResidualScaling(model) as scaling:        # attaches forward hooks, β = 1
        scaling.beta.data[3] = 0.5
        logits = model(ids).logits                 # block 3's update halved
    # hooks removed: the model is its original self again

    scaling = ResidualScaling.from_file(model, "fit.safetensors").attach()
    ...
    scaling.remove()
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

from .adapters import ModelAdapter, find_adapter
from .errors import CheckpointError, FileFormatError, MIProbeError
from .probe_results import atomic_write, write_json

BETA_FORMAT = "mi-probe-betas"
BETA_FORMAT_VERSION = 1


class DivergenceError(MIProbeError):
    """Fitting β produced a non-finite or exploding loss, or a non-finite β."""


class ResidualScaling:
    """Forward hooks that scale each block's residual update by β_l (float32, shape (L,)).

    Args:
        model: a causal LM (``nn.Module``); its weights are never modified.
        adapter: where the blocks are; found with :func:`find_adapter` when omitted.
        betas: initial β (sequence or tensor of length L, all ≥ 0); default all ones.
    """

    def __init__(self, model: Any, adapter: ModelAdapter | None = None, betas: Any = None):
        import torch

        self.model = model
        self.adapter = adapter if adapter is not None else find_adapter(model)
        self.num_layers = self.adapter.num_layers
        device = _model_device(model)
        self.beta = torch.nn.Parameter(torch.ones(self.num_layers, dtype=torch.float32,
                                                  device=device))
        if betas is not None:
            self.set_(betas)
        self._handles: list[Any] = []

    # -- construction from a file -------------------------------------------------------
    @classmethod
    def from_file(cls, model: Any, path: str | Path, adapter: ModelAdapter | None = None,
                  ) -> ResidualScaling:
        """A (detached) scaling with β read from a file written by :func:`save_betas`."""
        betas, meta = load_betas(path)
        scaling = cls(model, adapter)
        if len(betas) != scaling.num_layers:
            raise CheckpointError(
                f"{path} holds {len(betas)} β values but the model has {scaling.num_layers} "
                "blocks; apply β to the checkpoint it was fitted on"
            )
        saved_fp = (meta.get("model") or {}).get("fingerprint")
        if saved_fp and saved_fp != model_fingerprint(model):
            warnings.warn(
                f"{path} was fitted on a model with different weights (fingerprint "
                f"{saved_fp[:12]}, this one {model_fingerprint(model)[:12]})",
                stacklevel=2,
            )
        scaling.set_(betas)
        return scaling

    # -- β handling ---------------------------------------------------------------------
    def set_(self, betas: Any) -> None:
        """Copy ``betas`` (length L, finite, ≥ 0) into β."""
        import torch

        values = torch.as_tensor(betas, dtype=torch.float32).detach().flatten().cpu()
        if values.numel() != self.num_layers:
            raise MIProbeError(f"expected {self.num_layers} β values, got {values.numel()}")
        check_betas(values)
        with torch.no_grad():
            self.beta.copy_(values.to(self.beta.device))

    def project_(self) -> None:
        """Clamp β onto β ≥ 0 in place (call after each optimiser step)."""
        import torch

        with torch.no_grad():
            self.beta.clamp_(min=0.0)

    def values(self) -> list[float]:
        """β as a list of L Python floats."""
        return [float(v) for v in self.beta.detach().cpu()]

    # -- attaching ----------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> ResidualScaling:
        """Register the hooks (first in line, so other hooks see the scaled output)."""
        if self.attached:
            raise MIProbeError("this residual scaling is already attached")
        for layer, block in enumerate(self.adapter.blocks()):
            self._handles.append(block.register_forward_hook(
                self._make_hook(layer), with_kwargs=True, prepend=True))
        return self

    def remove(self) -> None:
        """Remove the hooks; the model behaves exactly as before :meth:`attach`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> ResidualScaling:
        return self.attach()

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def _make_hook(self, layer: int):
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
            x = args[0] if args else kwargs["hidden_states"]
            out = output[0] if isinstance(output, tuple) else output
            # b + (β − 1)(b − x) == x + β(b − x); exactly b at β = 1 (see module doc).
            scaled = out + (self.beta[layer] - 1.0).to(out.dtype) * (out - x)
            return (scaled, *output[1:]) if isinstance(output, tuple) else scaled

        return hook


def check_betas(values: Any, where: str = "β") -> None:
    """Raise if any β is NaN, infinite or negative."""
    import torch

    values = torch.as_tensor(values)
    if not torch.isfinite(values).all():
        raise DivergenceError(f"{where} contains NaN or infinite values: {values.tolist()}")
    if (values < 0).any():
        raise MIProbeError(f"{where} must be ≥ 0, got {values.tolist()}")


def _model_device(model: Any) -> Any:
    import torch

    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


# -- identity of the model β belongs to ---------------------------------------------------
def model_fingerprint(model: Any) -> str:
    """sha256 over parameter names, shapes and a few leading values (rounded to 1e-3).

    Cheap for any model size and stable across devices; values are rounded so that the same
    checkpoint loaded in another float precision usually gives the same fingerprint.
    """
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            head = p.detach().flatten()[:8].float().cpu()
            h.update(f"{name}{tuple(p.shape)}".encode())
            h.update(" ".join(f"{v:.3f}" for v in head.tolist()).encode())
    return h.hexdigest()


def model_identity(model: Any, adapter: ModelAdapter, ref: Any = None) -> dict[str, Any]:
    """What identifies the model β was fitted on (stored next to β)."""
    config = getattr(model, "config", None)
    ident = {
        "model_type": getattr(config, "model_type", None),
        "num_layers": adapter.num_layers,
        "hidden_size": getattr(config, "hidden_size", None),
        "vocab_size": getattr(config, "vocab_size", None),
        "adapter": adapter.name,
        "blocks_path": adapter.blocks_path,
        "parallel_residual": adapter.parallel_residual,
        "fingerprint": model_fingerprint(model),
    }
    if ref is not None:
        ident.update(checkpoint=str(ref.path), checkpoint_name=ref.name, step=ref.step)
    return ident


# -- saving and loading β alone ----------------------------------------------------------
def save_betas(path: str | Path, betas: Any, meta: dict[str, Any] | None = None,
               ) -> tuple[Path, Path]:
    """Save β to ``<stem>.safetensors`` (tensor "beta", float32, shape (L,)) plus ``<stem>.json``.

    The JSON repeats β in readable form and stores ``meta`` (model identity, fit settings).
    Both files are written atomically. Returns the two paths.
    """
    import torch
    from safetensors.torch import save

    values = torch.as_tensor(betas, dtype=torch.float32).detach().flatten().cpu().contiguous()
    check_betas(values)
    stem = _stem(path)
    st_path, json_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    header = {"format": BETA_FORMAT, "num_layers": str(values.numel())}
    data = save({"beta": values}, metadata=header)
    atomic_write(st_path, lambda f: f.write(data))
    doc = {"format": BETA_FORMAT, "version": BETA_FORMAT_VERSION,
           "num_layers": values.numel(), "beta": values.tolist(), **(meta or {})}
    write_json(json_path, doc)
    return st_path, json_path


def load_betas(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Read β (float32 tensor, shape (L,)) and its JSON metadata (``{}`` when absent).

    ``path`` may name the .safetensors file, the .json file, or their common stem.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    stem = _stem(path)
    st_path, json_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not st_path.is_file():
        raise FileFormatError(f"{st_path}: no such β file (write one with `mi-probe rescale`)")
    try:
        tensors = load_file(str(st_path))
    except (SafetensorError, OSError) as exc:
        raise FileFormatError(f"{st_path} is not a readable safetensors file: {exc}") from None
    beta = tensors.get("beta")
    if beta is None or beta.dim() != 1:
        raise FileFormatError(f"{st_path} holds no 1-D tensor named 'beta'")
    check_betas(beta, where=str(st_path))
    meta: dict[str, Any] = {}
    if json_path.is_file():
        try:
            meta = json.loads(json_path.read_text())
        except ValueError as exc:
            raise FileFormatError(f"{json_path} is not valid JSON ({exc})") from None
        if meta.get("num_layers") not in (None, beta.numel()):
            raise FileFormatError(
                f"{json_path} says {meta['num_layers']} layers but {st_path} holds "
                f"{beta.numel()} β values"
            )
    return beta.float(), meta


def _stem(path: str | Path) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
