"""`mi-probe rescale` (fit residual scales β, model frozen) and `mi-probe early-exit`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mi_probe.checkpoints import quiet_transformers

from .common import console, friendly_errors

CKPT_HELP = ("a checkpoint directory, a directory of checkpoint-<step>/ folders (the last step "
             "is used unless --checkpoint says otherwise), or a .gguf file")


def _load(ckpt: Path, checkpoint: str | None, device: str, dtype: str, blocks: str | None,
          trust_remote_code: bool) -> tuple[Any, Any, Any]:
    """(loaded checkpoint, adapter, torch device)."""
    from mi_probe.adapters import find_adapter
    from mi_probe.checkpoints import load_checkpoint
    from mi_probe.devices import resolve_device
    from mi_probe.rescale_run import select_checkpoint

    quiet_transformers()
    dev = resolve_device(device)
    ref = select_checkpoint(ckpt, checkpoint)
    console.print(f"checkpoint: {ref.path}" + (f" (step {ref.step})" if ref.step else "")
                  + f" · device {dev}", highlight=False)
    loaded = load_checkpoint(ref, device=str(dev), dtype=dtype,
                             trust_remote_code=trust_remote_code)
    return loaded, find_adapter(loaded.model, blocks), dev


@friendly_errors
def rescale(
    ckpt: Path = typer.Argument(..., help=CKPT_HELP),
    fit: list[str] = typer.Option(..., "--fit", help="NAME=FILE: fit β on this data (repeat)"),
    eval_: list[str] = typer.Option([], "--eval", help="NAME=FILE: evaluate on this data "
                                    "before and after each fit (repeat)"),
    seeds: int = typer.Option(3, "--seeds", help="fits per data set (seeds seed..seed+n-1)"),
    seed: int = typer.Option(0, "--seed", help="first seed"),
    lr: float = typer.Option(0.05, "--lr", help="AdamW learning rate"),
    steps: int = typer.Option(200, "--steps", help="optimiser steps per fit"),
    epochs: float = typer.Option(None, "--epochs", help="passes over the data (overrides "
                                 "--steps)"),
    batch_size: int = typer.Option(16, "--batch-size", help="examples per micro-batch"),
    grad_accum: int = typer.Option(1, "--grad-accum", help="micro-batches per step"),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="AdamW weight decay on β"),
    heldout: float = typer.Option(0.1, "--heldout", help="share of fit data held out for "
                                  "early stopping (0: none)"),
    eval_every: int = typer.Option(20, "--eval-every", help="steps between held-out checks"),
    patience: int = typer.Option(5, "--patience", help="held-out checks without improvement "
                                 "before stopping"),
    target_tokens: int = typer.Option(None, "--target-tokens", help="score at most this many "
                                      "target tokens per example (default: all)"),
    samples: int = typer.Option(None, "--samples", help="at most this many examples per file "
                                "(seeded subset; default: all)"),
    early_exit: bool = typer.Option(True, "--early-exit/--no-early-exit",
                                    help="also measure per-layer early-exit accuracy"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda"),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast on CUDA, "
                                  "fp32 on CPU), bf16 or fp32"),
    dtype: str = typer.Option("float32", "--dtype", help="weights dtype: float32, bfloat16, "
                              "float16 or auto"),
    checkpoint: str = typer.Option(None, "--checkpoint", help="which checkpoint of a training "
                                   "run (name or step; default: the last)"),
    blocks: str = typer.Option(None, "--blocks", help="dotted path of the block list"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    out: Path = typer.Option(None, "--out", help="write betas.json, β files, run.json and "
                             "figures here"),
) -> None:
    """Fit one residual scale β per block (model frozen) on each --fit set; score --eval sets."""
    from mi_probe.rescale_run import parse_named_paths, run_rescale
    from mi_probe.rescale_train import FitConfig

    fits, evals = parse_named_paths(fit, "--fit"), parse_named_paths(eval_, "--eval")
    config = FitConfig(lr=lr, steps=steps, epochs=epochs, batch_size=batch_size,
                       grad_accum=grad_accum, weight_decay=weight_decay, heldout_fraction=heldout,
                       eval_every=eval_every, patience=patience, target_tokens=target_tokens,
                       precision=precision)
    config.validate()
    loaded, adapter, dev = _load(ckpt, checkpoint, device, dtype, blocks, trust_remote_code)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                  console=console) as bar:
        tasks: dict[tuple[str, int], Any] = {}

        def progress(name: str, s: int, step: int, total: int, loss: float) -> None:
            key = (name, s)
            if key not in tasks:
                tasks[key] = bar.add_task(f"fit {name} seed {s}", total=total, loss="-")
            bar.update(tasks[key], completed=step, loss=f"{loss:.4f}")

        def done(name: str, entry: dict[str, Any]) -> None:
            for key in [k for k in tasks if k[0] == name]:
                bar.update(tasks[key], total=bar.tasks[tasks[key]].completed)

        doc = run_rescale(loaded, adapter, fits, evals, seeds=range(seed, seed + seeds),
                          config=config, device=dev, samples=samples,
                          with_early_exit=early_exit and bool(evals), out=out,
                          command=sys.argv, progress=progress, on_fit_done=done)
    _print_betas(doc)
    _print_fit_notes(doc)
    _print_evaluation(doc)
    if doc["early_exit"]:
        _print_early_exit(doc["early_exit"])
    if out is not None:
        console.print(f"wrote {out}/betas.json, {out}/betas/, run.json and figures",
                      highlight=False)


def _print_betas(doc: dict[str, Any]) -> None:
    table = Table(title="β per block (mean ± sd over seeds)", title_justify="left",
                  show_edge=False)
    table.add_column("block", justify="right")
    for name in doc["fits"]:
        table.add_column(name, justify="right")
    for layer in range(doc["num_layers"]):
        table.add_row(str(layer + 1), *(
            f"{f['beta_mean'][layer]:.3f} ± {f['beta_sd'][layer]:.3f}"
            for f in doc["fits"].values()))
    console.print(table)


def _print_fit_notes(doc: dict[str, Any]) -> None:
    """One line per fit: steps run and the step whose β was kept, per seed."""
    for name, fit in doc["fits"].items():
        runs = fit["fits"]
        kept = ", ".join(f"{r['best_step']}/{r['steps_run']}" + (" (stopped early)"
                                                                  if r["stopped_early"] else "")
                         for r in runs)
        console.print(f"{name}: β kept from step {kept} (per seed)", highlight=False)
        if any(r["best_step"] == 0 for r in runs):
            console.print("  [yellow]note:[/] for some seeds the held-out loss never improved "
                          "on β = 1, so β = 1 was kept; try another --lr or more data",
                          highlight=False)


def _print_evaluation(doc: dict[str, Any]) -> None:
    table = Table(title="evaluation at β = 1 → fitted β (mean over seeds)",
                  title_justify="left", show_edge=False)
    for col in ("fit", "eval set", "loss (nats/token)", "next-token accuracy"):
        table.add_column(col)
    for name, fit in doc["fits"].items():
        for ev, r in fit["eval"].items():
            b, a = r["before"], r["after"]
            table.add_row(name, ev, f"{b['loss']:.4f} → {a['loss']:.4f}",
                          f"{b['accuracy']:.3f} → {a['accuracy']:.3f}")
    if table.row_count:
        console.print(table)


def _print_early_exit(results: dict[str, dict[str, Any]]) -> None:
    table = Table(title="early-exit accuracy (logit lens; layer 0 = embeddings)",
                  title_justify="left", show_edge=False)
    table.add_column("layer", justify="right")
    for name in results:
        table.add_column(name, justify="right")
    layers = next(iter(results.values()))["layers"]
    for i, layer in enumerate(layers):
        table.add_row(str(layer), *(f"{r['accuracy'][i]:.3f}" for r in results.values()))
    console.print(table)


@friendly_errors
def early_exit_cmd(
    ckpt: Path = typer.Argument(..., help=CKPT_HELP),
    eval_: list[str] = typer.Option(..., "--eval", help="NAME=FILE: data to score (repeat)"),
    betas: Path = typer.Option(None, "--betas", help="apply fitted β (a .safetensors file "
                               "written by `mi-probe rescale`) first"),
    samples: int = typer.Option(None, "--samples", help="at most this many examples per file"),
    batch_size: int = typer.Option(32, "--batch-size"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda"),
    dtype: str = typer.Option("float32", "--dtype", help="weights dtype"),
    checkpoint: str = typer.Option(None, "--checkpoint", help="which checkpoint of a training "
                                   "run (name or step; default: the last)"),
    blocks: str = typer.Option(None, "--blocks", help="dotted path of the block list"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    out: Path = typer.Option(None, "--out", help="write early_exit.json and early_exit.png"),
) -> None:
    """Per-layer early-exit (logit-lens) accuracy of the target token on each --eval set."""
    from mi_probe.rescale_run import parse_named_paths, run_early_exit

    evals = parse_named_paths(eval_, "--eval")
    loaded, adapter, _ = _load(ckpt, checkpoint, device, dtype, blocks, trust_remote_code)
    results = run_early_exit(loaded, adapter, evals, samples=samples, batch_size=batch_size,
                             betas=betas, out=out, command=sys.argv)
    _print_early_exit(results)
    if out is not None:
        console.print(f"wrote {out}/early_exit.json and early_exit.png", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("rescale")(rescale)
    app.command("early-exit")(early_exit_cmd)
