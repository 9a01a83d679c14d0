"""Figures of a rescale run (matplotlib, Agg backend, PNG).

- :func:`plot_betas`: β by layer, one line per fit (mean over seeds) with a ± 1 sd band.
- :func:`plot_early_exit`: early-exit (logit-lens) accuracy by layer, one line per
  evaluation set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_betas(doc: dict[str, Any], path: str | Path) -> Path:
    """β_l against block l (1..L) for every fit of a betas.json document."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    layers = np.arange(1, doc["num_layers"] + 1)
    for name, fit in doc["fits"].items():
        mean, sd = np.array(fit["beta_mean"]), np.array(fit["beta_sd"])
        n = len(fit["seeds"])
        (line,) = ax.plot(layers, mean, marker="o", ms=3, label=f"{name} ({n} seed"
                          f"{'s' if n > 1 else ''})")
        if n > 1:
            ax.fill_between(layers, mean - sd, mean + sd, color=line.get_color(), alpha=0.2)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("block l")
    ax.set_ylabel("β_l (mean ± sd over seeds)")
    ax.set_title("Fitted residual scales")
    ax.set_xticks(layers if len(layers) <= 16 else layers[:: max(1, len(layers) // 12)])
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False)
    return _save(fig, path)


def plot_early_exit(results: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Early-exit accuracy against layer (0 = embeddings) for every evaluation set."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for name, res in results.items():
        ax.plot(res["layers"], res["accuracy"], marker="o", ms=3,
                label=f"{name} (n = {res['examples']})")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer l (0 = embedding output)")
    ax.set_ylabel("early-exit accuracy")
    ax.set_title("Logit lens: final norm + LM head on each layer")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(frameon=False)
    return _save(fig, path)
