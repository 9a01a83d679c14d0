"""Where the last prompt position looks: attention mass on signal tokens, per layer.

For every layer l and sample i, let a_{l,h}(j) be the attention weight that the last prompt
position puts on prompt position j in head h (softmax output, rows sum to 1). Reported per
layer, averaged over heads and samples:

- ``signal``: Σ_{j ∈ signal tokens} a(j), the mass on the signal tokens;
- ``self``: a(last), the mass the last position puts on itself;
- ``first``: a(0), the mass on the first token (the usual "attention sink");
- ``uniform_signal``: the share of prompt tokens that are signal tokens, i.e. the signal
  mass uniform attention would give (a baseline to read ``signal`` against).

Signal tokens come from character spans: the ``signal_spans`` of the arithmetic task's
records (:mod:`mi_probe.tasks.arithmetic`), or the matches of a regular expression given by
the user (its first group when it has one), mapped to tokens through the tokenizer's offset
mapping; a token is a signal token when its characters overlap a span.

Attention weights need the eager attention implementation: it is switched on for the
measurement (``model.set_attn_implementation("eager")``) and switched back afterwards.
Prompts are batched by length, so no padding enters the softmax.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ParameterError
from .probe_data import ProbeExample

QUANTITIES = ("signal", "self", "first")
CSV_COLUMNS = ("checkpoint", "step", "layer", "signal", "self", "first", "signal_sd",
               "uniform_signal", "n")


def span_token_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[Sequence[int]]
                    ) -> np.ndarray:
    """Boolean mask (n_tokens,): token i overlaps one of the [start, end) character spans."""
    mask = np.zeros(len(offsets), dtype=bool)
    for i, (s, e) in enumerate(offsets):
        mask[i] = any(s < b and a < e for a, b in spans)
    return mask


def pattern_spans(text: str, pattern: str) -> list[list[int]]:
    """Character spans of the matches of ``pattern`` in ``text`` (group 1 when present)."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ParameterError(f"--signal-pattern {pattern!r} is not a valid regular "
                             f"expression: {exc}") from None
    group = 1 if rx.groups else 0
    return [list(m.span(group)) for m in rx.finditer(text) if m.end(group) > m.start(group)]


def signal_mask(example: ProbeExample, pattern: str | None = None) -> np.ndarray:
    """Which prompt tokens of ``example`` are signal tokens (bool, shape (len(input_ids),))."""
    if example.offsets is None:
        raise InputError(
            "signal tokens are found through character offsets, which need prompt/target "
            "records and a tokenizer with an offset mapping (token-id data has none)"
        )
    if pattern is not None:
        spans = pattern_spans(str(example.meta.get("prompt", "")), pattern)
    elif "signal_spans" in example.meta:
        spans = example.meta["signal_spans"]
    else:
        raise InputError(
            "the records carry no signal_spans; give --signal-pattern REGEX (e.g. "
            "'S (\\w+)' for the arithmetic task) or use `mi-probe data arithmetic` data"
        )
    return span_token_mask(example.offsets, spans)


@dataclass
class AttentionProfile:
    """Attention of the last prompt position, per layer (arrays of shape (L,), l = 1..L).

    Attributes:
        signal, self_, first: mean mass on signal tokens, on itself, on the first token.
        signal_sd: standard deviation of the per-sample signal mass.
        uniform_signal: mean share of prompt tokens that are signal tokens.
        n: number of samples; heads: attention heads per layer.
        checkpoint, step: which model (labels only).
    """

    signal: np.ndarray
    self_: np.ndarray
    first: np.ndarray
    signal_sd: np.ndarray
    uniform_signal: float
    n: int
    heads: int
    checkpoint: str = ""
    step: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.signal)

    def peak_layer(self) -> int:
        """The layer (1-based) with the most attention mass on signal tokens."""
        return int(np.argmax(self.signal)) + 1

    def rows(self) -> list[dict[str, Any]]:
        """One dict per layer with the CSV columns."""
        return [{"checkpoint": self.checkpoint, "step": self.step, "layer": layer + 1,
                 "signal": float(self.signal[layer]), "self": float(self.self_[layer]),
                 "first": float(self.first[layer]), "signal_sd": float(self.signal_sd[layer]),
                 "uniform_signal": self.uniform_signal, "n": self.n}
                for layer in range(self.num_layers)]


def attention_profile(
    model: Any,
    examples: Sequence[ProbeExample],
    masks: Sequence[np.ndarray],
    batch_size: int = 32,
    device: str = "cpu",
) -> AttentionProfile:
    """Measure the attention of the last prompt position (see the module doc).

    Args:
        model: a causal LM (any transformers model that returns ``attentions``).
        examples: prompts (only ``input_ids`` are used).
        masks: per example, the bool signal-token mask over its prompt tokens.
        batch_size: prompts per forward pass.
        device: where the model is.
    """
    import torch

    if len(examples) != len(masks):
        raise InputError(f"got {len(examples)} examples but {len(masks)} masks")
    if not examples:
        raise InputError("no examples to measure attention on")
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_length[len(ex.input_ids)].append(i)
    per_sample: dict[str, list[np.ndarray]] = {q: [None] * len(examples) for q in QUANTITIES}
    heads = 0
    previous = getattr(model.config, "_attn_implementation", None)
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            for _, idx in sorted(by_length.items()):
                for start in range(0, len(idx), batch_size):
                    chunk = idx[start: start + batch_size]
                    ids = torch.tensor([examples[i].input_ids for i in chunk], device=device)
                    out = model(input_ids=ids, output_attentions=True, use_cache=False)
                    # per layer (B, H, T): the last query row
                    rows = torch.stack([a[:, :, -1, :].float() for a in out.attentions], 1)
                    heads = rows.shape[2]
                    mask = torch.tensor(np.stack([masks[i] for i in chunk]), device=rows.device)
                    signal = (rows * mask[:, None, None, :]).sum(-1).mean(-1)  # (B, L)
                    values = {"signal": signal, "self": rows[..., -1].mean(-1),
                              "first": rows[..., 0].mean(-1)}
                    for q, v in values.items():
                        for j, i in enumerate(chunk):
                            per_sample[q][i] = v[j].cpu().numpy()
    finally:
        if previous is not None:
            model.set_attn_implementation(previous)
    stacked = {q: np.stack(v) for q, v in per_sample.items()}  # (n, L)
    uniform = float(np.mean([m.mean() for m in masks]))
    return AttentionProfile(stacked["signal"].mean(0), stacked["self"].mean(0),
                            stacked["first"].mean(0), stacked["signal"].std(0), uniform,
                            len(examples), heads)


def write_csv(profiles: Sequence[AttentionProfile], path: str | Path) -> Path:
    """Write one row per (checkpoint, layer) with :data:`CSV_COLUMNS`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for profile in profiles:
            writer.writerows(profile.rows())
    tmp.replace(path)
    return path


def plot_profiles(profiles: Sequence[AttentionProfile], path: str | Path,
                  title: str = "Attention of the last prompt position") -> Path:
    """Figure: signal mass by layer (one line per checkpoint, ±1 sd band for the last),
    the uniform baseline, and self mass of the last checkpoint, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    cmap = plt.get_cmap("viridis")
    for i, p in enumerate(profiles):
        layers = np.arange(1, p.num_layers + 1)
        color = cmap(i / max(1, len(profiles) - 1)) if len(profiles) > 1 else "C0"
        label = p.checkpoint if p.step is None else f"step {p.step}"
        ax.plot(layers, p.signal, marker="o", ms=3, color=color, label=f"signal ({label})")
    last = profiles[-1]
    layers = np.arange(1, last.num_layers + 1)
    ax.fill_between(layers, last.signal - last.signal_sd, last.signal + last.signal_sd,
                    color="C0" if len(profiles) == 1 else cmap(1.0), alpha=0.15)
    ax.plot(layers, last.self_, ls="--", color="C3", label="self (last checkpoint)")
    ax.axhline(last.uniform_signal, ls=":", color="grey", label="uniform baseline")
    ax.set_xlabel("layer")
    ax.set_ylabel("attention mass")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
