"""PNG figures of a probing run (matplotlib, Agg canvas; no display needed).

:func:`plot_all` writes, one panel per estimator:

- ``mi_by_layer.png``: I(Z_l; Y) against layer, one line per checkpoint (colour = training
  order), a band of ±2 standard deviations over seeds when there are several, the ridge
  layer starred and the post-final-norm value as an open marker right of layer L; with a
  shuffle baseline (``--null``) also the null band (null mean ± 2 sd, hatched) and the
  excess over the null (dashed, its ridge as a diamond);
- ``incremental_by_layer.png``: I(ΔZ_l; Y) against block l;
- ``heatmap.png``: I(Z_l; Y) over layer × checkpoint (training step);
- ``ridge.png``: the ridge layer over training;
- ``steps.png`` (multi-token runs): I(Z_l^(t); Y_t) over layer × generation step t for the
  last checkpoint, and the sequence-kernel MI by layer for every checkpoint.

Figures of a rescale run (:mod:`mi_probe.rescale_run`): :func:`plot_betas` (β by block, one
line per fit, ± 1 sd band over seeds) and :func:`plot_early_exit` (early-exit accuracy by
layer, one line per evaluation set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .probe_results import FINAL_NORM, ProbeResults, atomic_write


def _figure(n_panels: int, width: float = 4.6, height: float = 3.4) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_panels, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    # Fixed margins: a layout engine costs more than the drawing at these sizes.
    fig.subplots_adjust(left=0.75 / (width * n_panels), right=1 - 0.2 / (width * n_panels),
                        bottom=0.16, top=0.9, wspace=0.3)
    return fig, list(axes)


def _save(fig: Any, path: Path) -> Path:
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path


def _label(results: ProbeResults, checkpoint: str) -> str:
    step = next((r.step for r in results.rows if r.checkpoint == checkpoint), None)
    return f"step {step}" if step is not None else checkpoint


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(x) for x in (np.linspace(0.0, 0.9, n) if n > 1 else [0.0])]


def _curves(results: ProbeResults, quantity: str, path: Path, ylabel: str) -> Path | None:
    from matplotlib.ticker import MaxNLocator

    estimators = results.estimators
    if not results.select(quantity=quantity):
        return None
    fig, axes = _figure(len(estimators))
    checkpoints = results.checkpoints
    for ax, est in zip(axes, estimators, strict=True):
        for color, ckpt in zip(_colors(len(checkpoints)), checkpoints, strict=True):
            rows = results.select(ckpt, est, quantity)
            blocks = [r for r in rows if r.layer != FINAL_NORM]
            if not blocks:
                continue
            x = np.array([r.layer_index for r in blocks])
            y = np.array([r.value for r in blocks])
            ax.plot(x, y, "-o", ms=3, color=color, label=_label(results, ckpt))
            std = np.array([r.std if r.std is not None else np.nan for r in blocks])
            if np.isfinite(std).any():
                ax.fill_between(x, y - 2 * std, y + 2 * std, color=color, alpha=0.2, lw=0)
            if quantity == "predictive" and blocks[0].null_mean is not None:
                _null_overlay(ax, x, y, blocks, color)
            if quantity == "predictive":
                best = int(np.argmax(y))
                ax.plot(x[best], y[best], "*", ms=12, color=color, mec="black", mew=0.6)
                norm = [r for r in rows if r.layer == FINAL_NORM]
                if norm:
                    ax.plot(x.max() + 1, norm[0].value, "o", mfc="none", color=color)
        unit = next((r.unit for r in results.rows), "nats")
        with_null = quantity == "predictive" and any(
            r.null_mean is not None for r in results.select(estimator=est))
        ax.set_title(est + (" (hatched: shuffled-y null; dashed: excess)" if with_null else ""),
                     fontsize=10 if with_null else None)
        ax.set_xlabel("layer (0 = embedding; open marker = after final norm)"
                      if quantity == "predictive" else "block l")
        ax.set_ylabel(f"{ylabel} [{unit}]")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if len(checkpoints) <= 8:
            ax.legend(fontsize=7)
    return _save(fig, path)


def _null_overlay(ax: Any, x: np.ndarray, y: np.ndarray, rows: list[Any], color: Any) -> None:
    """The shuffled-y null band (mean ± 2 sd) and the excess curve with its ridge."""
    null = np.array([r.null_mean for r in rows])
    spread = 2 * np.array([r.null_sd for r in rows])
    ax.fill_between(x, null - spread, null + spread, facecolor="none", edgecolor=color,
                    hatch="///", alpha=0.5, lw=0)
    excess = y - null
    ax.plot(x, excess, "--", lw=1, color=color)
    top = int(np.argmax(excess))
    ax.plot(x[top], excess[top], "D", ms=6, color=color, mec="black", mew=0.6)


def _heatmap(results: ProbeResults, path: Path) -> Path:
    from matplotlib.ticker import MaxNLocator

    estimators, checkpoints = results.estimators, results.checkpoints
    fig, axes = _figure(len(estimators), width=max(4.0, 1.0 + 0.5 * len(checkpoints)))
    for ax, est in zip(axes, estimators, strict=True):
        columns = [results.values(c, est) for c in checkpoints]
        depth = max((len(c) for c in columns), default=0)
        grid = np.full((depth, len(checkpoints)), np.nan)
        for j, col in enumerate(columns):
            for layer, value in col.items():
                grid[int(layer), j] = value
        im = ax.imshow(grid, aspect="auto", origin="lower", cmap="magma")
        ax.set_xticks(range(len(checkpoints)))
        ax.set_xticklabels([_label(results, c).replace("step ", "") for c in checkpoints],
                           rotation=90 if len(checkpoints) > 6 else 0, fontsize=7)
        ax.set_xlabel("training step" if any(r.step is not None for r in results.rows)
                      else "checkpoint")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("layer")
        ax.set_title(f"I(Z_l; Y), {est}")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)


def _ridge(results: ProbeResults, path: Path) -> Path:
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(1)
    ax = axes[0]
    ridge = results.ridge
    steps = [r.step for r in ridge]
    use_steps = all(s is not None for s in steps)
    for est in results.estimators:
        rows = [r for r in ridge if r.estimator == est]
        x = [r.step if use_steps else i for i, r in enumerate(rows)]
        ax.plot(x, [r.ridge_layer for r in rows], "-o", label=est)
    ax.set_xlabel("training step" if use_steps else "checkpoint (in order)")
    ax.set_ylabel("ridge layer argmax_l I(Z_l; Y)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if ridge:
        ax.set_ylim(-0.5, max(r.num_layers for r in ridge) + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _steps(results: ProbeResults, path: Path) -> Path | None:
    from matplotlib.ticker import MaxNLocator

    estimators = [e for e in results.estimators if results.select(estimator=e, quantity="step")]
    if not estimators:
        return None
    last = results.checkpoints[-1]
    with_seq = bool(results.select(quantity="sequence"))
    fig, axes = _figure(len(estimators) + with_seq)
    for ax, est in zip(axes, estimators, strict=False):
        rows = [r for r in results.select(last, est, "step") if r.layer != FINAL_NORM]
        grid = np.full((max(r.layer_index for r in rows) + 1, max(r.t for r in rows)), np.nan)
        for r in rows:
            grid[r.layer_index, r.t - 1] = r.value
        im = ax.imshow(grid, aspect="auto", origin="lower", cmap="magma",
                       extent=(0.5, grid.shape[1] + 0.5, -0.5, grid.shape[0] - 0.5))
        ax.set_xlabel("generation step t")
        ax.set_ylabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"I(Z_l^(t); Y_t), {est}, {_label(results, last)}", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    if with_seq:
        ax = axes[-1]
        for color, ckpt in zip(_colors(len(results.checkpoints)), results.checkpoints,
                               strict=True):
            for est in results.estimators:
                rows = results.select(ckpt, est, "sequence")
                if rows:
                    ax.plot([r.layer_index for r in rows], [r.value for r in rows], "-o", ms=3,
                            color=color, label=f"{_label(results, ckpt)}, {est}")
        ax.set_xlabel("layer")
        ax.set_ylabel(f"sequence-kernel MI [{results.rows[0].unit}]")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("sequence level (mean pairwise kernel)", fontsize=9)
        ax.grid(alpha=0.3)
        if len(results.checkpoints) <= 8:
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_all(results: ProbeResults, fig_dir: str | Path) -> list[Path]:
    """Write every figure of a run into ``fig_dir``; returns the paths written."""
    fig_dir = Path(fig_dir)
    if not results.rows:
        return []
    written = [
        _curves(results, "predictive", fig_dir / "mi_by_layer.png", "I(Z_l; Y)"),
        _curves(results, "incremental", fig_dir / "incremental_by_layer.png", "I(ΔZ_l; Y)"),
        _heatmap(results, fig_dir / "heatmap.png"),
        _ridge(results, fig_dir / "ridge.png"),
        _steps(results, fig_dir / "steps.png"),
    ]
    return [p for p in written if p is not None]


def plot_betas(doc: dict[str, Any], path: str | Path) -> Path:
    """β_l against block l (1..L) for every fit of a rescale ``betas.json`` document."""
    fig, (ax,) = _figure(1, width=6.0, height=3.6)
    layers = np.arange(1, doc["num_layers"] + 1)
    for name, fit in doc["fits"].items():
        mean, sd = np.array(fit["beta_mean"]), np.array(fit["beta_sd"])
        n = len(fit["seeds"])
        (line,) = ax.plot(layers, mean, marker="o", ms=3,
                          label=f"{name} ({n} seed{'s' if n > 1 else ''})")
        if n > 1:
            ax.fill_between(layers, mean - sd, mean + sd, color=line.get_color(), alpha=0.2)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("block l")
    ax.set_ylabel("β_l (mean ± sd over seeds)")
    ax.set_title("Fitted residual scales")
    _integer_ticks(ax)
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, Path(path))


def plot_early_exit(results: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Early-exit accuracy against layer (0 = embeddings) for every evaluation set."""
    fig, (ax,) = _figure(1, width=6.0, height=3.6)
    for name, res in results.items():
        ax.plot(res["layers"], res["accuracy"], marker="o", ms=3,
                label=f"{name} (n = {res['examples']})")
    ax.set_xlabel("layer l (0 = embedding output)")
    ax.set_ylabel("early-exit accuracy")
    ax.set_title("Logit lens: final norm + LM head on each layer")
    _integer_ticks(ax)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, Path(path))


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
