"""`mi-probe mi`, `mi-probe estimators` and `mi-probe plugins`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

import mi_probe
from mi_probe.arrays_io import load_array
from mi_probe.params import parse_key_values
from mi_probe.registry import get_registry

from .common import console, friendly_errors


@friendly_errors
def mi(
    x: Path = typer.Argument(..., help="samples of X: .npy, .npz (one array), .csv or .pt"),
    y: Path = typer.Argument(..., help="samples of Y (same n); 1-D integers are labels"),
    estimator: str = typer.Option("renyi", "--estimator", "-e", help="registered estimator"),
    param: list[str] = typer.Option([], "--param", "-p", help="estimator parameter key=value"),
    unit: str = typer.Option("nats", "--unit", help="nats or bits"),
    y_kind: str = typer.Option(None, "--y-kind", help="force 'continuous' or 'discrete' y"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    ci: float = typer.Option(None, "--ci", help="confidence level of an interval, e.g. 0.95"),
    replicates: int = typer.Option(
        None, "--replicates", help="resampled estimates behind the interval (default 20)"),
    permutations: int = typer.Option(
        0, "--permutations", help="permutation test with this many shuffles of y"),
    resample: str = typer.Option(
        "subsample", "--resample", help="subsample (half-samples) or seeds (trained estimators)"),
    trust: bool = typer.Option(True, "--trust/--no-trust",
                               help="print the trust report (renyi: re-runs at σ/2 and 2σ)"),
) -> None:
    """Estimate the mutual information between two arrays stored in files."""
    from mi_probe import trust as trust_mod
    from mi_probe.uncertainty import describe_uncertainty

    xa, ya = load_array(x), load_array(y)
    params = parse_key_values(param)
    res = mi_probe.estimate(xa, ya, estimator, unit=unit, y_kind=y_kind, ci=ci,
                            replicates=replicates, permutations=permutations,
                            resample=resample, **params)
    notes = trust_mod.trust_report(res, xs=[xa], y=ya) if trust else []
    if as_json:
        out = res.to_dict()
        if trust:
            out["trust"] = [vars(n) for n in notes]
        print(json.dumps(out, default=_json_default))
        return
    console.print(f"I(X; Y) = [bold]{res.value:.6g}[/] {res.unit}  "
                  f"({res.estimator}, n = {res.n}, {res.seconds:.2f} s)")
    for line in describe_uncertainty(res):
        console.print(f"  {line}", highlight=False)
    if trust:
        trust_mod.render(notes, console)
    else:
        for note in res.diagnostics:
            console.print(f"[yellow]note:[/] {note}")


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def estimators_cmd(
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """List registered estimators with their parameters (types and defaults)."""
    infos = mi_probe.estimators()
    if as_json:
        print(json.dumps([
            {"name": i.name, "description": i.description, "plugin": i.plugin,
             "y_kinds": list(i.y_kinds), "symmetric": i.symmetric,
             "params": [{"name": p.name, "type": p.describe_type(), "default": p.default,
                         "help": p.help} for p in i.params]}
            for i in infos
        ], default=str))
        return
    for info in infos:
        table = Table(title=f"{info.name} — {info.description}", title_justify="left",
                      show_edge=False)
        table.add_column("parameter")
        table.add_column("type")
        table.add_column("default")
        table.add_column("meaning")
        for p in info.params:
            table.add_row(p.name, p.describe_type(), repr(p.default), p.help)
        console.print(table)
        console.print(f"  y: {', '.join(info.y_kinds)} · plugin: {info.plugin}\n")


def plugins_cmd() -> None:
    """List plugins, their versions and what each registers (and any that failed)."""
    reg = get_registry()
    table = Table(show_edge=False)
    for col in ("plugin", "distribution", "version", "registers", "status"):
        table.add_column(col)
    for info in sorted(reg.plugins.values(), key=lambda i: i.name):
        regs = []
        if info.estimators:
            regs.append("estimators: " + ", ".join(info.estimators))
        if info.adapters:
            regs.append("adapters: " + ", ".join(info.adapters))
        if info.bench_tasks:
            regs.append("bench tasks: " + ", ".join(info.bench_tasks))
        status = f"[red]failed: {info.error}[/]" if info.error else "[green]ok[/]"
        table.add_row(info.name, info.distribution, info.version, "; ".join(regs) or "-", status)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("mi")(mi)
    app.command("estimators")(estimators_cmd)
    app.command("plugins")(plugins_cmd)
