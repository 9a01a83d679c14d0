"""`mi-probe data arithmetic`, `mi-probe train`, `mi-probe attention` and `mi-probe demo`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from mi_probe.checkpoints import quiet_transformers
from mi_probe.errors import ParameterError

from .common import console, friendly_errors

data_app = typer.Typer(help="Generate synthetic probe and training data.", no_args_is_help=True)


def parse_int_set(text: str) -> tuple[int, ...]:
    """"5-25,30" -> (5, 6, ..., 25, 30); sorted, distinct."""
    values: set[int] = set()
    try:
        for part in text.replace(" ", "").split(","):
            if not part:
                continue
            if "-" in part:
                lo, hi = part.split("-", 1)
                values.update(range(int(lo), int(hi) + 1))
            else:
                values.add(int(part))
    except ValueError:
        raise ParameterError(f"could not read {text!r} as integers; write e.g. '5-25' or "
                             "'5,7,11'") from None
    if not values:
        raise ParameterError(f"{text!r} names no integers")
    return tuple(sorted(values))


@friendly_errors
def arithmetic(
    out: Path = typer.Option(..., "--out", "-o", help="folder for the JSONL files"),
    k: int = typer.Option(13, "--k", help="modulus K of the in-distribution (ID) data"),
    ood_k: str = typer.Option(None, "--ood-k",
                              help="moduli of the shifted data, e.g. '5-25' (default: 5-25 "
                                   "without --k)"),
    n_train: int = typer.Option(2000, "--n-train", help="records per training file"),
    n_test: int = typer.Option(500, "--n-test", help="records per test file"),
    length: int = typer.Option(10, "--length", help="shown elements (S, N alternating)"),
    encoding: str = typer.Option("letters", "--encoding",
                                 help="values as 'letters' (a..z, one token in BPE "
                                      "tokenizers) or 'numbers'"),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    max_d: int = typer.Option(None, "--max-d", help="largest step d (default K - 1)"),
) -> None:
    """Write the arithmetic-progression shift task: id/ood x train/test JSONL files."""
    from mi_probe.tasks import ArithmeticTask, write_arithmetic

    ks = parse_int_set(ood_k) if ood_k else tuple(v for v in range(5, 26) if v != k)
    task = ArithmeticTask(k=k, ood_k=ks, length=length, encoding=encoding, max_d=max_d)
    paths = write_arithmetic(out, task, n_train, n_test, seed)
    rec = json.loads(paths["id_train"].read_text().splitlines()[0])
    console.print(f"wrote {', '.join(p.name for p in paths.values())} and task.json to "
                  f"[bold]{out}[/]")
    console.print(f"example: prompt {rec['prompt']!r} -> target {rec['target']!r} "
                  f"(K = {rec['k']}, d = {rec['d']})", highlight=False)


@friendly_errors
def train_cmd(
    model: str = typer.Argument(..., help="checkpoint dir, .gguf file, or tiny-gpt2 / "
                                          "tiny-llama (trained from scratch)"),
    data: Path = typer.Option(..., "--data", help="training JSONL (prompt/target records)"),
    out: Path = typer.Option(..., "--out", "-o", help="run folder (checkpoint-<step>/ inside)"),
    save_every: int = typer.Option(100, "--save-every", help="save a checkpoint every N steps"),
    steps: int = typer.Option(None, "--steps", help="optimizer steps (default: --epochs)"),
    epochs: float = typer.Option(None, "--epochs", help="passes over the data (default 1)"),
    lr: float = typer.Option(None, "--lr", help="peak learning rate (default 3e-3 tiny, "
                                                "5e-5 pretrained)"),
    batch_size: int = typer.Option(16, "--batch-size", help="sequences per step"),
    seed: int = typer.Option(0, "--seed", help="seed of initialisation and batch order"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    eval_data: Path = typer.Option(None, "--eval", help="JSONL evaluated at each checkpoint"),
    warmup: int = typer.Option(None, "--warmup", help="warm-up steps (default 5 %)"),
    layers: int = typer.Option(4, "--layers", help="tiny model: blocks"),
    width: int = typer.Option(64, "--width", help="tiny model: hidden size"),
    heads: int = typer.Option(4, "--heads", help="tiny model: attention heads"),
    save_initial: bool = typer.Option(True, "--save-initial/--no-save-initial",
                                      help="also save the untrained model as checkpoint-0"),
    overwrite: bool = typer.Option(False, "--overwrite", help="start over instead of resuming"),
) -> None:
    """Fine-tune all weights on prompt/target data, saving checkpoints (resumable)."""
    from mi_probe.train import TrainConfig, clear_run

    quiet_transformers()
    config = TrainConfig(steps=steps, epochs=epochs, lr=lr, batch_size=batch_size,
                         save_every=save_every, save_initial=save_initial, seed=seed,
                         device=device, warmup=warmup, layers=layers, width=width, heads=heads)
    config.validate()
    if overwrite:
        clear_run(out)
    result = run_training(model, data, out, config, eval_data)
    console.print(checkpoint_table(result))
    console.print(f"checkpoints in [bold]{out}[/] ({result.seconds:.1f} s on {result.device})")


def run_training(model: str, data: Path, out: Path, config: Any, eval_data: Path | None,
                 transient: bool = False) -> Any:
    """:func:`mi_probe.train.train` with a rich progress bar showing the loss."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from mi_probe.train import train

    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=transient) as progress:
        task_id = progress.add_task("training", total=None, info="")

        def callback(kind: str, info: dict[str, Any]) -> None:
            if kind == "start":
                note = f"resuming at step {info['start_step']}" if info["resumed_from"] else ""
                progress.update(task_id, total=info["total"], completed=info["start_step"],
                                info=note)
                progress.console.print(
                    f"training {model} ({info['parameters']:,} parameters) on "
                    f"{info['examples']} examples, {info['total']} steps, {info['device']}",
                    highlight=False)
            elif kind == "step":
                progress.update(task_id, completed=info["step"],
                                info=f"loss {info['loss']:.4f}")
            elif kind == "checkpoint" and info["eval"] is not None:
                ev = info["eval"]
                progress.console.print(f"  step {info['step']}: eval loss {ev['loss']:.4f}, "
                                       f"accuracy {ev['accuracy']:.1%}", highlight=False)

        return train(model, data, out, config, eval_data, callback)


def checkpoint_table(result: Any) -> Table:
    """Checkpoints of a run with their last train loss and eval metrics."""
    table = Table(title="checkpoints", title_justify="left", show_edge=False)
    for col in ("checkpoint", "train loss", "eval loss", "eval accuracy"):
        table.add_column(col, justify="left" if col == "checkpoint" else "right")
    by_step: dict[int, dict[str, Any]] = {}
    for h in result.history:
        by_step.setdefault(h["step"], {}).update(h)
    for path in result.checkpoints:
        step = int(path.name.split("-")[-1])
        h = by_step.get(step, {})
        table.add_row(path.name, _fmt(h.get("loss")), _fmt(h.get("eval_loss")),
                      f"{h['eval_accuracy']:.1%}" if "eval_accuracy" in h else "-")
    return table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@friendly_errors
def attention_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint dir, folder of checkpoint-<step>/, "
                                                "or .gguf file"),
    data: Path = typer.Option(..., "--data", help="prompt/target JSONL"),
    signal_pattern: str = typer.Option(None, "--signal-pattern",
                                       help="regex of signal text (group 1 if any); default: "
                                            "the records' signal_spans"),
    samples: int = typer.Option(256, "--samples", help="prompts to average over"),
    seed: int = typer.Option(0, "--seed", help="seed of the sample subset"),
    out: Path = typer.Option(Path("mi-probe-attention"), "--out", "-o",
                             help="folder for attention.csv and attention.png"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    batch_size: int = typer.Option(32, "--batch-size", help="prompts per forward pass"),
) -> None:
    """Per layer: attention mass of the last prompt position on signal tokens and itself."""
    from mi_probe.attention import plot_profiles, write_csv
    from mi_probe.checkpoints import describe_checkpoints, discover_checkpoints

    quiet_transformers()
    refs = discover_checkpoints(checkpoint)
    console.print(f"found {describe_checkpoints(refs)}", highlight=False)
    profiles = measure_attention(refs, data, signal_pattern, samples, seed, device, batch_size)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(profiles, out / "attention.csv")
    plot_profiles(profiles, out / "attention.png")
    console.print(attention_table(profiles))
    console.print(f"results in [bold]{out}[/] (attention.csv, attention.png)")


def measure_attention(refs: list[Any], data: Path, signal_pattern: str | None, samples: int,
                      seed: int, device: str, batch_size: int) -> list[Any]:
    """Attention profiles of every checkpoint (a failed load is reported and skipped)."""
    from mi_probe.attention import attention_profile, signal_mask
    from mi_probe.checkpoints import load_checkpoint
    from mi_probe.devices import resolve_device
    from mi_probe.errors import CheckpointError
    from mi_probe.probe_data import load_probe_data

    dev = str(resolve_device(device))
    profiles = []
    for ref in refs:
        try:
            loaded = load_checkpoint(ref, device=dev, need_tokenizer=True)
        except CheckpointError as exc:
            console.print(f"[yellow]skipped[/] {ref.name}: {exc}")
            continue
        probe = load_probe_data(data, loaded.tokenizer, samples=samples, seed=seed)
        masks = [signal_mask(e, signal_pattern) for e in probe.examples]
        profile = attention_profile(loaded.model, probe.examples, masks, batch_size, dev)
        profile.checkpoint, profile.step = ref.name, ref.step
        profiles.append(profile)
    if not profiles:
        raise ParameterError("no checkpoint could be loaded; see the messages above")
    return profiles


def attention_table(profiles: list[Any]) -> Table:
    """Per layer of the last checkpoint: signal, self, first mass; the peak marked."""
    last = profiles[-1]
    title = (f"attention of the last prompt position — {last.checkpoint} (n = {last.n}, "
             f"mean over {last.heads} heads; uniform signal share {last.uniform_signal:.3f})")
    table = Table(title=title, title_justify="left", show_edge=False)
    for col in ("layer", "signal", "± sd", "self", "first"):
        table.add_column(col, justify="right")
    peak = last.peak_layer()
    for row in last.rows():
        mark = " ◀ peak" if row["layer"] == peak else ""
        table.add_row(f"{row['layer']}{mark}", f"{row['signal']:.3f}",
                      f"{row['signal_sd']:.3f}", f"{row['self']:.3f}", f"{row['first']:.3f}")
    return table


@friendly_errors
def demo_cmd(
    quick: bool = typer.Option(False, "--quick", help="a ~15-second smoke run of the same "
                                                      "pipeline (the model trains only briefly)"),
    out: Path = typer.Option(None, "--out", "-o", help="demo folder (default: mi-probe-demo "
                                                       "or mi-probe-demo-quick)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
) -> None:
    """Run the paper's protocol on a tiny model trained from scratch: no data needed."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from mi_probe.demo import FULL, QUICK, DemoCallbacks, run_demo

    from .probe_cmds import render_tables

    quiet_transformers()
    settings = QUICK if quick else FULL
    out = out or Path("mi-probe-demo-quick" if quick else "mi-probe-demo")
    console.print(f"mi-probe demo{' --quick' if quick else ''}: arithmetic shift task → "
                  f"{settings.model} ({settings.layers} blocks, width {settings.width}) trained "
                  f"from scratch → MI per layer and checkpoint → β on ID/OOD → attention",
                  highlight=False)
    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("", total=None, info="")

        def stage(name: str, index: int, total: int) -> None:
            progress.update(bar, description=f"[{index}/{total}] {name}", completed=0,
                            total=None, info="")

        def on_train(kind: str, info: dict[str, Any]) -> None:
            if kind == "step":
                progress.update(bar, completed=info["step"], total=info["total"],
                                info=f"loss {info['loss']:.3f}")

        def on_probe(ev: Any) -> None:
            if ev.kind in ("extract", "estimate"):
                progress.update(bar, completed=ev.done, total=ev.total,
                                info=f"{ev.name} {ev.kind}")

        def on_fit(fit: str, seed: int, step: int, total: int, loss: float) -> None:
            progress.update(bar, completed=step, total=total, info=f"β on {fit}, loss "
                                                                  f"{loss:.3f}")

        result = run_demo(out, settings, device, DemoCallbacks(stage, on_train, on_probe,
                                                                on_fit))
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    last_eval = result.train.last_eval() or {}
    console.print(f"trained {result.train.steps} steps; ID test accuracy "
                  f"{last_eval.get('eval_accuracy', float('nan')):.1%} ({timings})",
                  highlight=False)
    render_tables(result.probe)
    console.print(demo_layer_table(result))
    console.print(f"results in [bold]{out}[/] (demo.json, probe/, rescale/, attention/); "
                  f"figures: [bold]{out / 'demo.png'}[/] and {len(result.figures) - 1} more",
                  highlight=False)


def demo_layer_table(result: Any) -> Table:
    """Last checkpoint, per layer: MI, early-exit accuracy ID/OOD, β ID/OOD, attention."""
    ridge = max(result.layers, key=lambda r: r["mi"] if r["mi"] is not None else -1)["layer"]
    table = Table(title=f"last checkpoint by layer (▲ ridge = layer {ridge})",
                  title_justify="left", show_edge=False)
    for col in ("layer", "I(Z;Y)", "exit ID", "exit OOD", "β ID", "β OOD", "attn signal"):
        table.add_column(col, justify="right")

    def cell(value: float | None, pct: bool = False) -> str:
        if value is None:
            return "-"
        return f"{value:.0%}" if pct else f"{value:.3f}"

    for r in result.layers:
        table.add_row(f"{'▲ ' if r['layer'] == ridge else ''}{r['layer']}", cell(r["mi"]),
                      cell(r["early_exit_id"], True), cell(r["early_exit_ood"], True),
                      cell(r["beta_id"]), cell(r["beta_ood"]), cell(r["attention_signal"]))
    return table


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
    data_app.command("arithmetic")(arithmetic)
    app.command("train")(train_cmd)
    app.command("attention")(attention_cmd)
    app.command("demo")(demo_cmd)
