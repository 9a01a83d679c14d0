"""Heatmap of a benchmark run: tasks × estimators, one panel per sample size.

Colour is the log-ratio log(estimate / truth) on a diverging scale clipped at ±log 4
(white = exact); each cell shows the mean estimate in nats, bold when solved (within a
factor of 1.5). Grey cells were skipped (y kind not accepted) or failed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .runner import BenchRun

_CLIP = math.log(4.0)


def plot_heatmap(run: BenchRun, path: str | Path, dpi: int = 90) -> Path:
    """Save the heatmap PNG of ``run`` to ``path`` and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = {(c.estimator, c.task, c.n): c for c in run.cells()}
    tasks, ests, ns = run.tasks, run.estimators, run.ns
    width = 1.2 + 0.75 * len(ests) * len(ns) + 2.4
    height = 1.4 + 0.26 * len(tasks)
    fig, axes = plt.subplots(1, len(ns), figsize=(width, height), squeeze=False,
                             sharey=True, constrained_layout=True)
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#d9d9d9")
    image = None
    for ax, n in zip(axes[0], ns, strict=True):
        grid = np.full((len(tasks), len(ests)), np.nan)
        for i, task in enumerate(tasks):
            for j, est in enumerate(ests):
                cell = cells.get((est, task.name, n))
                if cell is None:
                    continue
                if cell.log_ratio is not None:
                    grid[i, j] = np.clip(cell.log_ratio, -_CLIP, _CLIP)
                label = _cell_label(cell)
                ax.text(j, i, label, ha="center", va="center", fontsize=6.5,
                        fontweight="bold" if cell.solved else "normal")
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-_CLIP, vmax=_CLIP,
                          aspect="auto")
        ax.set_xticks(range(len(ests)), ests, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"n = {n}", fontsize=9)
    axes[0][0].set_yticks(range(len(tasks)),
                          [f"{t.name} ({t.true_mi:.2f})" for t in tasks], fontsize=7)
    cbar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.6)
    cbar.set_label("log(estimate / true MI)", fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    fig.suptitle("mean estimate (nats); bold = within ×1.5 of the truth (in brackets)",
                 fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _cell_label(cell) -> str:
    if cell.status == "skipped":
        return "–"
    if cell.status == "failed":
        return "err"
    return f"{cell.mean:.2f}"
