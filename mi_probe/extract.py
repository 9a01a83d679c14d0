"""Lean extraction of residual-stream states with forward hooks.

:func:`extract_states` runs a causal LM over token sequences and keeps, for every requested
layer, only the rows that are needed: the last real token of each sequence (default), the
mean over its real tokens, or given positions. Layer 0 is the input of block 0 (the
embedding output, after any position embedding or scaling the model applies); layer l
(1..L) is the output of block l; ``final_norm`` is the output of the norm after the last
block, kept as its own entry. Nothing else is stored, and the forward pass is cut short
right after the last state that is needed, so the LM head is never computed (and blocks
after the last requested layer do not run unless the final norm is requested).

Usage::

    from mi_probe.extract import extract_states
    st = extract_states(model, [[1, 2, 3], [4, 5]], batch_size=8)
    st.layers[0].shape        # (2, d_model): embedding output at the last token
    st.final_norm.shape       # (2, d_model)

Padding: sequences are sorted by length and batched; padding goes on ``padding_side`` and
position ids are computed from the attention mask, so every real token sees the same
positions as in an unpadded run, whichever side is padded. Hooks are always removed.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .adapters import ModelAdapter, find_adapter
from .errors import InputError, ParameterError

POOLINGS = ("last", "mean")
PADDING_SIDES = ("right", "left")


class _StopForward(Exception):
    """Raised by the last needed hook to end the forward pass early."""


@dataclass
class ExtractedStates:
    """States kept by :func:`extract_states`, in the order of the input sequences.

    Attributes:
        layers: layer l (0 = embedding output, 1..L = block outputs) -> float32 array of
            shape (n, d_model), or (n, P, d_model) when positions were given.
        final_norm: the post-final-norm state, same shape, or None (not requested or the
            model has no final norm).
        num_layers: L, the model's number of blocks.
        n_tokens: real (non-padding) tokens read.
        n_padded: tokens processed including padding.
        seconds: wall time of the forward passes.
    """

    layers: dict[int, np.ndarray]
    final_norm: np.ndarray | None
    num_layers: int
    n_tokens: int
    n_padded: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        """Real tokens read per second of forward time."""
        return self.n_tokens / self.seconds if self.seconds > 0 else float("inf")


def _block_output(output: Any) -> Any:
    """A block's hidden-state output: a tensor, or the first item of a tuple."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _block_input(args: tuple, kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs["hidden_states"]


class _Batch:
    """Padded inputs of one batch plus the row selector its hooks apply."""

    def __init__(self, seqs: list[Sequence[int]], positions: list[Sequence[int]] | None,
                 pooling: str, padding_side: str, pad_id: int, device: str) -> None:
        import torch

        lengths = torch.tensor([len(s) for s in seqs])
        width = int(lengths.max())
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        offsets = width - lengths if padding_side == "left" else torch.zeros_like(lengths)
        for i, s in enumerate(seqs):
            o = int(offsets[i])
            ids[i, o:o + len(s)] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, o:o + len(s)] = 1
        self.input_ids = ids.to(device)
        self.attention_mask = mask.to(device)
        self.position_ids = (mask.cumsum(1) - 1).clamp_min(0).to(device)
        self.n_tokens = int(lengths.sum())
        self.n_padded = int(ids.numel())
        self.squeeze = positions is None
        self.weights = None
        if pooling == "mean" and positions is None:
            self.weights = (mask / lengths[:, None]).unsqueeze(-1).to(device)
            return
        pos = positions if positions is not None else [[-1]] * len(seqs)
        idx = torch.tensor([[p if p >= 0 else len(s) + p for p in ps]
                            for ps, s in zip(pos, seqs, strict=True)])
        if ((idx < 0) | (idx >= lengths[:, None])).any():
            raise InputError("a requested position lies outside its sequence")
        self.rows = torch.arange(len(seqs))[:, None].to(device)
        self.index = (idx + offsets[:, None]).to(device)

    def select(self, hidden: Any) -> Any:
        """The kept rows of hidden (B, S, d): (B, d), or (B, P, d) for positions."""
        if self.weights is not None:
            return (hidden * self.weights.to(hidden.dtype)).sum(1)
        picked = hidden[self.rows, self.index]
        return picked[:, 0] if self.squeeze else picked


def extract_states(
    model: Any,
    sequences: Sequence[Sequence[int]],
    *,
    adapter: ModelAdapter | None = None,
    layers: Sequence[int] | None = None,
    final_norm: bool = True,
    pooling: str = "last",
    positions: Sequence[Sequence[int]] | None = None,
    batch_size: int = 16,
    padding_side: str = "right",
    pad_id: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> ExtractedStates:
    """Residual-stream states of ``model`` for each token sequence (see module doc).

    Args:
        model: a loaded causal LM (or its base model), on the device it should run on.
        sequences: token id lists, one per example (no padding).
        adapter: the model's adapter; found with :func:`find_adapter` when None.
        layers: which of 0..L to keep; all by default.
        final_norm: also keep the post-final-norm state.
        pooling: "last" (last real token) or "mean" (mean over all real tokens).
        positions: instead of pooling, keep these token indices of each sequence (the
            same count P per sequence; negative indices count from the end).
        batch_size: sequences per forward pass.
        padding_side: "right" or "left"; results agree to float rounding.
        pad_id: token id placed in padding (masked out, so any valid id works).
        progress: called as ``progress(sequences_done, total)`` after each batch.
    """
    import torch

    if pooling not in POOLINGS:
        raise ParameterError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
    if padding_side not in PADDING_SIDES:
        raise ParameterError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
    if batch_size < 1:
        raise ParameterError(f"batch size must be at least 1, got {batch_size}")
    if not sequences or any(len(s) == 0 for s in sequences):
        raise InputError("extraction needs at least one sequence and no empty sequence")
    if positions is not None and (len(positions) != len(sequences)
                                  or len({len(p) for p in positions}) != 1):
        raise InputError("positions needs one list per sequence, all of the same length")
    adapter = adapter or find_adapter(model)
    n_layers = adapter.num_layers
    wanted = sorted(set(range(n_layers + 1) if layers is None else layers))
    if not wanted or wanted[0] < 0 or wanted[-1] > n_layers:
        raise ParameterError(f"layers must lie in 0..{n_layers}, got {list(layers or [])}")
    vocab = adapter.embedding().weight.shape[0]
    top = max(max(s) for s in sequences)
    if top >= vocab or min(min(s) for s in sequences) < 0:
        raise InputError(f"token id {top} is outside the model's vocabulary (size {vocab}); "
                         "the data was tokenized for another model")
    norm_module = adapter.final_norm() if final_norm else None
    base = getattr(model, "base_model", model)
    takes_positions = "position_ids" in inspect.signature(base.forward).parameters
    device = next(model.parameters()).device

    kept: dict[Any, list[Any]] = {key: [] for key in wanted}
    if norm_module is not None:
        kept["final_norm"] = []
    stop_key = "final_norm" if norm_module is not None else wanted[-1]
    batch: _Batch | None = None

    def keep(key: Any, hidden: Any) -> None:
        kept[key].append(batch.select(hidden).float().cpu())
        if key == stop_key:
            raise _StopForward

    blocks = adapter.blocks()
    handles = []
    if 0 in kept:
        handles.append(blocks[0].register_forward_pre_hook(
            lambda mod, args, kwargs: keep(0, _block_input(args, kwargs)), with_kwargs=True))
    for layer in wanted:
        if layer > 0:
            handles.append(blocks[layer - 1].register_forward_hook(
                lambda mod, args, out, layer=layer: keep(layer, _block_output(out))))
    if norm_module is not None:
        handles.append(norm_module.register_forward_hook(
            lambda mod, args, out: keep("final_norm", _block_output(out))))

    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    n_tokens = n_padded = 0
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for batch_no, lo in enumerate(range(0, len(order), batch_size)):
                ids = order[lo:lo + batch_size]
                batch = _Batch([sequences[i] for i in ids],
                               None if positions is None else [positions[i] for i in ids],
                               pooling, padding_side, pad_id, device)
                inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                          "use_cache": False}
                if takes_positions:
                    inputs["position_ids"] = batch.position_ids
                try:
                    base(**inputs)
                except _StopForward:
                    pass
                missing = [k for k, v in kept.items() if len(v) != batch_no + 1]
                if missing:
                    raise InputError(f"the forward pass never reached {missing}; the model's "
                                     "blocks or final norm are not where its adapter says")
                n_tokens += batch.n_tokens
                n_padded += batch.n_padded
                if progress is not None:
                    progress(lo + len(ids), len(order))
    finally:
        for h in handles:
            h.remove()
    seconds = time.perf_counter() - start
    inverse = np.argsort(order)
    out = {key: torch.cat(parts).numpy()[inverse] for key, parts in kept.items()}
    return ExtractedStates(
        layers={k: out[k] for k in wanted},
        final_norm=out.get("final_norm"),
        num_layers=n_layers,
        n_tokens=n_tokens,
        n_padded=n_padded,
        seconds=seconds,
    )
