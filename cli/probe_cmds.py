"""`mi-probe estimate` (probe checkpoints layer by layer) and `mi-probe report`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mi_probe.errors import ParameterError
from mi_probe.params import parse_key_values
from mi_probe.probe_results import FINAL_NORM, ProbeResults

from .common import console, err_console, friendly_errors

_MAX_COLUMNS = 6


def split_params(items: list[str], estimators: list[str]) -> dict[str, dict[str, str]]:
    """``key=value`` (every estimator declaring ``key``) or ``estimator.key=value`` -> a
    dict per estimator."""
    from mi_probe.api import get_estimator

    out: dict[str, dict[str, str]] = {}
    for key, value in parse_key_values(items).items():
        name, dot, pname = key.rpartition(".")
        if dot:
            if name not in estimators:
                raise ParameterError(f"--param {key}: {name!r} is not among the estimators "
                                     f"of this run ({', '.join(estimators)})")
            out.setdefault(name, {})[pname] = value
            continue
        takers = [e for e in estimators if key in {p.name for p in get_estimator(e).params}]
        if not takers:
            raise ParameterError(f"--param {key}: no estimator of this run "
                                 f"({', '.join(estimators)}) has a parameter {key!r}; run "
                                 "`mi-probe estimators` to see their parameters")
        for e in takers:
            out.setdefault(e, {})[key] = value
    return out


class _ProgressView:
    """Rich progress (checkpoints × layers) driven by the pipeline's events."""

    def __init__(self, progress: Progress) -> None:
        self.p = progress
        self.ckpts = progress.add_task("checkpoints", total=None)
        self.stage = progress.add_task("", total=None)

    def __call__(self, ev: Any) -> None:
        p = self.p
        if ev.kind == "found":
            p.console.print(f"found {ev.message}")
            p.update(self.ckpts, total=ev.total)
        elif ev.kind == "checkpoint":
            p.update(self.stage, description=f"{ev.name}: loading", completed=0, total=None)
        elif ev.kind == "loaded":
            p.console.print(f"{ev.name}: {ev.message}")
        elif ev.kind == "extract":
            p.update(self.stage, description=f"{ev.name}: extracting (sequences)",
                     completed=ev.done, total=ev.total)
        elif ev.kind == "estimate":
            p.update(self.stage, description=f"{ev.name}: {ev.message} (layer estimates)",
                     completed=ev.done, total=ev.total)
        elif ev.kind == "reused":
            p.console.print(f"{ev.name}: finished results found in --out; reused")
        elif ev.kind == "failed":
            p.console.print(f"[yellow]skipped[/] {ev.name}: {ev.message}", highlight=False)
        if ev.kind in ("done", "failed", "reused"):
            p.update(self.ckpts, completed=ev.index + 1)


def _fmt(value: float, std: float | None) -> str:
    text = f"{value:.4f}"
    return text + (f" ± {2 * std:.3f}" if std is not None else "")


def render_tables(results: ProbeResults) -> None:
    """One table per estimator: I(Z_l; Y) by layer and checkpoint, the ridge marked ▲."""
    ckpts = results.checkpoints
    if len(ckpts) > _MAX_COLUMNS:
        picks = sorted({round(i * (len(ckpts) - 1) / (_MAX_COLUMNS - 1))
                        for i in range(_MAX_COLUMNS)})
        shown = [ckpts[i] for i in picks]
    else:
        shown = ckpts
    steps = {r.checkpoint: r.step for r in results.rows}
    for est in results.estimators:
        rows = {c: results.select(c, est) for c in shown}
        unit = next(r.unit for r in results.rows if r.estimator == est)
        seeds = max(r.seeds for r in results.rows if r.estimator == est)
        title = f"I(Z_l; Y) by layer — {est}, in {unit}; ▲ = ridge layer"
        if seeds > 1:
            title += f"; mean ± 2σ over {seeds} seeds"
        table = Table(title=title, title_justify="left", show_edge=False)
        table.add_column("layer")
        for c in shown:
            table.add_column(f"step {steps[c]}" if steps[c] is not None else c, justify="right")
        layers = list(dict.fromkeys(r.layer for c in shown for r in rows[c]))
        ridge = {c: results.ridge_layer(c, est) for c in shown if rows[c]}
        for layer in layers:
            cells = []
            for c in shown:
                r = next((r for r in rows[c] if r.layer == layer), None)
                if r is None:
                    cells.append("")
                elif layer != FINAL_NORM and ridge.get(c) == r.layer_index:
                    cells.append(f"[bold green]▲ {_fmt(r.value, r.std)}[/]")
                else:
                    cells.append(_fmt(r.value, r.std))
            table.add_row(layer.replace("_", " "), *cells)
        console.print(table)
        for c in shown:
            inc = results.select(c, est, "incremental")
            if inc:
                best = max(inc, key=lambda r: r.value)
                console.print(f"  {c}: ridge at layer {ridge[c]}; incremental gain "
                              f"I(ΔZ_l; Y) largest at block {best.layer} ({best.value:.4f})")
    if len(shown) < len(ckpts):
        console.print(f"  ({len(shown)} of {len(ckpts)} checkpoints shown; all are in "
                      "results.csv)")


def render_steps(results: ProbeResults) -> None:
    """Multi-token runs: I(Z_l^(t); Y_t) by layer and step t, and the sequence-kernel MI,
    for the last checkpoint and each estimator with step rows."""
    last = results.checkpoints[-1] if results.checkpoints else None
    for est in results.estimators:
        rows = results.select(last, est, "step")
        if not rows:
            continue
        ts = sorted({r.t for r in rows})
        seq = {r.layer: r.value for r in results.select(last, est, "sequence")}
        table = Table(title=f"I(Z_l^(t); Y_t) by generation step t — {est}, {last}, in "
                            f"{rows[0].unit}", title_justify="left", show_edge=False)
        table.add_column("layer")
        for t in ts:
            table.add_column(f"t={t}", justify="right")
        if seq:
            table.add_column("sequence", justify="right")
        for layer in dict.fromkeys(r.layer for r in rows):
            values = {r.t: r.value for r in rows if r.layer == layer}
            cells = [f"{values[t]:.4f}" if t in values else "" for t in ts]
            table.add_row(layer, *cells, *([f"{seq[layer]:.4f}"] if seq else []))
        console.print(table)


def render_null(results: ProbeResults) -> None:
    """The shuffle-baseline table and its trust notes (a warning when there is none)."""
    from mi_probe.trust import probe_null_notes, render, render_null_table

    config = results.run.get("config", {})
    shuffles = config.get("null", 0) * config.get("seeds", 1) or None
    render_null_table(results.rows, console)
    render(probe_null_notes(results.rows, shuffles), console)


@friendly_errors
def estimate_cmd(
    checkpoints: Path = typer.Argument(
        ..., help="a checkpoint directory, a directory of checkpoint-<step>/ folders, or a "
                  ".gguf file"),
    estimator: list[str] = typer.Option(
        ["renyi"], "--estimator", "-e", help="registered estimator; repeat to cross-check"),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="estimator parameter key=value (or estimator.key=value)"),
    data: Path = typer.Option(None, "--data", help="probe data JSONL (default: built-in "
                              "English text from pydoc_data)"),
    samples: int = typer.Option(1000, "--samples", "-n", help="examples per estimate"),
    seed: int = typer.Option(0, "--seed", help="seed of the data subset and positions"),
    seeds: int = typer.Option(1, "--seeds", help="repeat on K subsamples; mean and spread"),
    context: int = typer.Option(64, "--context", help="text data: prompt tokens before a "
                                "position (at most)"),
    out: Path = typer.Option(None, "--out", "-o", help="output directory (default "
                             "mi-probe-out/<name>); finished work there is reused"),
    overwrite: bool = typer.Option(False, "--overwrite", help="discard earlier results in "
                                   "--out and start over"),
    pooling: str = typer.Option("last", "--pooling", help="last (last prompt token) or mean "
                                "(mean over prompt tokens)"),
    target: str = typer.Option("embedding", "--target", help="Y: embedding, unembedding or "
                               "token-id (discrete)"),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize",
                                   help="l2-normalise rows of Z, ΔZ and Y"),
    incremental: bool = typer.Option(True, "--incremental/--no-incremental",
                                     help="also estimate I(ΔZ_l; Y)"),
    final_norm: bool = typer.Option(True, "--final-norm/--no-final-norm",
                                    help="also estimate for the post-final-norm state"),
    unit: str = typer.Option("nats", "--unit", help="nats or bits"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    dtype: str = typer.Option("auto", "--dtype", help="auto (float32 on CPU, the checkpoint's "
                              "own on CUDA), float32, bfloat16 or float16"),
    batch_size: int = typer.Option(16, "--batch-size", help="sequences per forward pass"),
    padding_side: str = typer.Option("right", "--padding-side", help="right or left"),
    blocks: str = typer.Option(None, "--blocks", help="dotted path of the block list, e.g. "
                               "model.layers (overrides the adapter)"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="allow a checkpoint's own modelling code"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="write PNG figures"),
    steps: int = typer.Option(1, "--steps", help="multi-token: T target tokens per example "
                              "(teacher-forced); adds I(Z_l^(t); Y_t) per step t and the "
                              "sequence-kernel MI"),
    null: int = typer.Option(
        3, "--null", help="shuffle baseline: re-estimate each layer with y shuffled P times "
                          "(null mean, spread, excess, p-value); 0 to skip (costs P+1 times "
                          "the estimation time)"),
) -> None:
    """Probe every checkpoint layer by layer: I(Z_l; Y), I(ΔZ_l; Y) and the ridge layer."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader bars; ours is rich
    from mi_probe.probe import default_out_dir, probe

    estimators = list(dict.fromkeys(estimator))
    params = split_params(param, estimators)
    out_dir = out or default_out_dir(checkpoints)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=True) as progress:
        results = probe(
            checkpoints, out_dir, overwrite=overwrite, progress=_ProgressView(progress),
            command=["mi-probe", *sys.argv[1:]], estimators=tuple(estimators), params=params,
            data=str(data) if data is not None else None, samples=samples, seed=seed,
            seeds=seeds, context=context, pooling=pooling, target=target,
            normalize=normalize, incremental=incremental, final_norm=final_norm, unit=unit,
            device=device, dtype=dtype, batch_size=batch_size, padding_side=padding_side,
            blocks=blocks, trust_remote_code=trust_remote_code, plots=plots, steps=steps,
            null=null)
    render_tables(results)
    render_steps(results)
    render_null(results)
    for name, reason in results.failed.items():
        err_console.print(f"[yellow]skipped[/] {name}: {reason}", highlight=False)
    console.print(f"results in {out_dir}/ (results.csv, ridge.csv, run.json"
                  + (", figures/)" if plots else ")"))


@friendly_errors
def report_cmd(
    out_dir: Path = typer.Argument(..., help="the --out directory of `mi-probe estimate`"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="re-render the PNG figures"),
) -> None:
    """Re-render the table and the figures of a finished (or partial) run."""
    from mi_probe.plots import plot_all

    results = ProbeResults.load(out_dir)
    render_tables(results)
    render_null(results)
    if plots:
        written = plot_all(results, out_dir / "figures")
        console.print(f"figures: {', '.join(str(p) for p in written)}")


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate_cmd)
    app.command("report")(report_cmd)
