"""Heatmap of a benchmark run: tasks × estimators, one panel per sample size.

Colour is the log-ratio log(estimate / truth) on a diverging scale clipped at ±log 4
(white = exact); each cell shows the mean estimate in nats, bold when solved (within a
factor of 1.5). Grey cells were skipped ("–": y kind not accepted), failed ("err") or
not run at that n ("·").
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
    tasks, ns = run.tasks, run.ns
    # per panel, the estimators that ran at that n
    panels = [[e for e in run.estimators if any(k[0] == e and k[2] == n for k in cells)]
              for n in ns]
    width = 1.2 + 0.75 * sum(len(p) for p in panels) + 2.4
    height = 1.4 + 0.26 * len(tasks)
    fig, axes = plt.subplots(1, len(ns), figsize=(width, height), squeeze=False,
                             sharey=True, constrained_layout=True,
                             gridspec_kw={"width_ratios": [max(len(p), 1) for p in panels]})
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#d9d9d9")
    image = None
    for ax, n, ests in zip(axes[0], ns, panels, strict=True):
        grid = np.full((len(tasks), len(ests)), np.nan)
        for i, task in enumerate(tasks):
            for j, est in enumerate(ests):
                cell = cells.get((est, task.name, n))
                if cell is None:  # not run at this n
                    ax.text(j, i, "·", ha="center", va="center", fontsize=6.5)
                    continue
                if cell.log_ratio is not None:
                    grid[i, j] = np.clip(cell.log_ratio, -_CLIP, _CLIP)
                dark = abs(grid[i, j]) > 0.55 * _CLIP  # NaN compares False
                ax.text(j, i, _cell_label(cell), ha="center", va="center", fontsize=6.5,
                        color="white" if dark else "black",
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
