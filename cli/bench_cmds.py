"""`mi-probe bench`: run estimators on tasks with known MI and score them."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mi_probe.bench import SOLVED_FACTOR, run_bench, select_tasks, split_params
from mi_probe.bench.runner import BenchRun, task_info
from mi_probe.errors import ParameterError

from .common import console, friendly_errors


def parse_sizes(text: str) -> list[int]:
    """"1000,5000" -> [1000, 5000]; ParameterError on anything else."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 2:
        raise ParameterError(f"bad --n {text!r}: expected sample sizes >= 2, e.g. --n 1000,5000")
    return sizes


@friendly_errors
def bench(
    estimator: list[str] = typer.Option(
        [], "--estimator", "-e",
        help="estimator to run (repeatable; default: all registered); a variant with its "
             "own parameters: 'renyi[sigma=median,normalize=false]'"),
    n: str = typer.Option("1000", "--n", help="sample sizes, comma-separated, e.g. 1000,5000"),
    seeds: int = typer.Option(3, "--seeds", min=1, help="seeds (fresh samples) per cell"),
    task: list[str] = typer.Option(
        [], "--task", "-t", help="task name or glob, e.g. 'gauss-*' (repeatable; default: all)"),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="estimator parameter est.key=value, e.g. ksg.k=5"),
    out: Path = typer.Option(Path("mi-probe-out/bench"), "--out",
                             help="directory for results.json and heatmap.png"),
    list_tasks: bool = typer.Option(False, "--list", help="list the registered tasks and exit"),
) -> None:
    """Score estimators on tasks with known MI ("Beyond Normal" style benchmark)."""
    tasks = select_tasks(task)
    if list_tasks:
        _print_tasks(tasks)
        return
    import mi_probe

    specs = list(estimator) or [info.name for info in mi_probe.estimators()]
    sizes = parse_sizes(n)
    params = split_params(param, specs)
    total = len(tasks) * len(sizes) * seeds * len(specs)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("benchmark", total=total)

        def advance(rec) -> None:
            progress.update(bar, advance=1,
                            description=f"{rec.estimator} · {rec.task} · n={rec.n} · "
                                        f"seed {rec.seed}")

        run = run_bench(specs, tasks, sizes, seeds, params, on_record=advance)
    _print_table(run)
    json_path = run.save_json(out / "results.json")
    from mi_probe.bench.plot import plot_heatmap

    png = plot_heatmap(run, out / "heatmap.png")
    console.print(f"wrote {json_path} and {png}")


def _print_tasks(tasks) -> None:
    table = Table(show_edge=False)
    for col in ("task", "d_x × d_y", "y", "true MI (nats)", "description"):
        table.add_column(col)
    for t in tasks:
        info = task_info(t)
        se = f" ± {info['mi_se']:.3f}" if info["mi_se"] else ""
        table.add_row(t.name, f"{t.dim_x} × {t.dim_y}", t.y_kind,
                      f"{info['true_mi']:.4f}{se}", t.description)
    console.print(table)


def _print_table(run: BenchRun) -> None:
    cells = {(c.estimator, c.task, c.n): c for c in run.cells()}
    table = Table(title=f"mean estimate over {len(run.seeds)} seed(s), nats; green = within "
                        f"×{SOLVED_FACTOR:g} of the truth (spreads: results.json)",
                  title_justify="left",
                  show_edge=False)
    table.add_column("task", no_wrap=True)
    table.add_column("truth", justify="right")
    keys = [(e, n) for e in run.estimators for n in run.ns]
    for est, n in keys:
        table.add_column(f"{est}\nn={n}", justify="right")
    solved = dict.fromkeys(keys, 0)
    scored = dict.fromkeys(keys, 0)
    for task in run.tasks:
        row = [task.name, f"{task.true_mi:.3f}"]
        for key in keys:
            cell = cells.get((key[0], task.name, key[1]))
            row.append(_cell_text(cell))
            if cell is not None and cell.status != "skipped":
                scored[key] += 1
                solved[key] += cell.solved
        table.add_row(*row)
    table.add_section()
    table.add_row("solved", "", *[f"{solved[k]}/{scored[k]}" for k in keys])
    console.print(table)
    failures = [c for c in cells.values() if c.error]
    for cell in failures[:10]:
        console.print(f"[red]error[/] {cell.estimator} on {cell.task} (n={cell.n}): "
                      f"{cell.error}", highlight=False)
    if len(failures) > 10:
        console.print(f"... and {len(failures) - 10} more errors (see results.json)")


def _cell_text(cell) -> str:
    if cell is None or cell.status == "skipped":
        return "[dim]–[/]"
    if cell.status == "failed":
        return "[red]error[/]"
    colour = "green" if cell.solved else "red"
    return f"[{colour}]{cell.mean:.3f}[/]"


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
