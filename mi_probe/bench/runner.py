"""Run registered estimators over benchmark tasks, sample sizes and seeds.

:func:`run_bench` returns a :class:`BenchRun` holding one :class:`BenchRecord` per
(estimator, task, n, seed); :meth:`BenchRun.cells` aggregates the seeds of each
(estimator, task, n) into a :class:`BenchCell` scored with :mod:`.scoring`. An estimator
that raises on one task is recorded with its error; the run goes on.

Every (task, n, seed) sample is drawn once and shared by all estimators, so estimators are
compared on identical data. Randomized estimators get ``seed`` = the sample's seed unless
the user set one.
"""

from __future__ import annotations

import fnmatch
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mi_probe.errors import ParameterError
from mi_probe.estimator import Estimator
from mi_probe.params import parse_key_values, resolve_params
from mi_probe.registry import get_registry

from .scoring import SOLVED_FACTOR, is_solved, log_ratio
from .tasks import BenchTask


@dataclass
class BenchRecord:
    """One estimate on one sample. ``value`` is in nats; None when skipped or failed."""

    estimator: str
    task: str
    n: int
    seed: int
    true_mi: float
    value: float | None = None
    seconds: float = 0.0
    error: str | None = None
    skipped: str | None = None
    diagnostics: list[str] = field(default_factory=list)


@dataclass
class BenchCell:
    """Seeds of one (estimator, task, n) aggregated and scored (values in nats).

    ``mean``/``std`` are over the successful seeds; ``log_ratio`` and ``solved`` score the
    mean; ``solved_fraction`` is the share of successful seeds that were solved alone.
    """

    estimator: str
    task: str
    n: int
    true_mi: float
    mean: float | None
    std: float | None
    n_ok: int
    n_failed: int
    log_ratio: float | None
    solved: bool
    solved_fraction: float | None
    seconds: float | None
    status: str  # "ok", "failed", "skipped"
    error: str | None = None


@dataclass
class BenchRun:
    """Every record of a run plus its configuration; ``cells()`` scores them."""

    records: list[BenchRecord]
    tasks: list[BenchTask]
    estimators: list[str]
    ns: list[int]
    seeds: list[int]
    params: dict[str, dict[str, Any]]

    def cells(self) -> list[BenchCell]:
        """One scored cell per (estimator, task, n), in task/estimator/n order."""
        groups: dict[tuple[str, str, int], list[BenchRecord]] = {}
        for rec in self.records:
            groups.setdefault((rec.estimator, rec.task, rec.n), []).append(rec)
        out = []
        for task in self.tasks:
            for est in self.estimators:
                for n in self.ns:
                    recs = groups.get((est, task.name, n))
                    if recs:
                        out.append(_score_cell(recs))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary: config, tasks, records and scored cells."""
        return {
            "config": {
                "estimators": self.estimators, "ns": self.ns, "seeds": self.seeds,
                "params": self.params, "solved_factor": SOLVED_FACTOR, "unit": "nats",
            },
            "tasks": [task_info(t) for t in self.tasks],
            "cells": [asdict(c) for c in self.cells()],
            "records": [asdict(r) for r in self.records],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], tasks: Sequence[BenchTask]) -> BenchRun:
        """Rebuild a run from :meth:`to_dict` output (``tasks`` in the run's order)."""
        cfg = data["config"]
        records = [BenchRecord(**rec) for rec in data["records"]]
        return cls(records, list(tasks), list(cfg["estimators"]), list(cfg["ns"]),
                   list(cfg["seeds"]), dict(cfg["params"]))

    def save_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, default=_json_default))
        return path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def task_info(task: BenchTask) -> dict[str, Any]:
    """Name, dims, y kind, family, true MI and its standard error (nats)."""
    return {"name": task.name, "dim_x": task.dim_x, "dim_y": task.dim_y,
            "y_kind": task.y_kind, "family": task.family, "true_mi": task.true_mi,
            "mi_se": task.mi_se, "description": task.description}


def _score_cell(recs: list[BenchRecord]) -> BenchCell:
    first = recs[0]
    ok = [r for r in recs if r.value is not None]
    failed = [r for r in recs if r.error is not None]
    if not ok:
        status = "skipped" if all(r.skipped for r in recs) else "failed"
        reason = failed[0].error if failed else first.skipped
        return BenchCell(first.estimator, first.task, first.n, first.true_mi, None, None, 0,
                         len(failed), None, False, None, None, status, reason)
    values = np.array([r.value for r in ok])
    mean = float(values.mean())
    return BenchCell(
        first.estimator, first.task, first.n, first.true_mi, mean,
        float(values.std(ddof=1)) if len(values) > 1 else 0.0, len(ok), len(failed),
        log_ratio(mean, first.true_mi), is_solved(mean, first.true_mi),
        float(np.mean([is_solved(v, first.true_mi) for v in values])),
        float(np.mean([r.seconds for r in ok])), "ok",
        failed[0].error if failed else None,
    )


# -- selection and parameters ---------------------------------------------------------------
def available_tasks() -> dict[str, BenchTask]:
    """Every registered task (built-in and plugin), by name."""
    return dict(get_registry().bench_tasks)


def select_tasks(patterns: Iterable[str] = ()) -> list[BenchTask]:
    """Tasks whose names match any of ``patterns`` (exact names or globs, e.g.
    ``"gauss-*"``), in registration order; all tasks when no pattern is given."""
    tasks = available_tasks()
    patterns = list(patterns)
    if not patterns:
        return list(tasks.values())
    chosen = []
    for pattern in patterns:
        hits = [t for name, t in tasks.items() if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise ParameterError(
                f"no benchmark task matches {pattern!r}; run `mi-probe bench --list` to see "
                f"the {len(tasks)} registered tasks (globs such as 'gauss-*' work)"
            )
        chosen += [t for t in hits if t not in chosen]
    order = list(tasks)
    return sorted(chosen, key=lambda t: order.index(t.name))


def split_params(items: Iterable[str], estimators: Sequence[str]) -> dict[str, dict[str, str]]:
    """Parse ``est.key=value`` strings into {estimator: {key: value}}.

    ``estimators`` are the run's estimator specs; a parameter must name one of them.
    """
    out: dict[str, dict[str, str]] = {}
    for item in items:
        owners = [e for e in estimators if item.startswith(e + ".")]
        if not owners:
            raise ParameterError(
                f"bad --param {item!r}: it names no estimator of this run "
                f"({', '.join(estimators)}); bench parameters look like est.key=value, "
                "e.g. --param ksg.k=5"
            )
        est = max(owners, key=len)
        ((name, value),) = parse_key_values([item[len(est) + 1:]]).items()
        out.setdefault(est, {})[name] = value
    return out


def parse_estimator_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``"ksg"`` or ``"renyi[sigma=median,normalize=false]"`` -> (label, name, params).

    The bracket form runs a named variant of an estimator; its label is the whole spec.
    """
    spec = spec.strip()
    name, bracket, rest = spec.partition("[")
    if not bracket:
        return spec, spec, {}
    if not rest.endswith("]"):
        raise ParameterError(
            f"bad estimator spec {spec!r}: expected name[key=value,...], "
            "e.g. renyi[sigma=median]"
        )
    items = [item for item in rest[:-1].split(",") if item.strip()]
    return spec, name.strip(), parse_key_values(items)


def _resolve_estimators(
    specs: Sequence[str], params: dict[str, dict[str, Any]]
) -> list[tuple[str, Estimator, dict[str, Any]]]:
    reg = get_registry()
    out = []
    for spec in specs:
        label, name, given = parse_estimator_spec(spec)
        est = reg.get_estimator(name)
        given.update(params.get(label, {}))
        resolve_params(est.name, est.params, given)  # fail early on a bad name or value
        out.append((label, est, given))
    labels = [label for label, _, _ in out]
    if len(set(labels)) != len(labels):
        raise ParameterError(f"estimator given twice: {', '.join(labels)}")
    return out


# -- running ----------------------------------------------------------------------------------
def run_bench(
    estimators: Sequence[str],
    tasks: Sequence[BenchTask],
    ns: Sequence[int],
    seeds: int | Sequence[int] = 3,
    params: dict[str, dict[str, Any]] | None = None,
    on_record: Callable[[BenchRecord], None] | None = None,
) -> BenchRun:
    """Run every estimator on every task at every n and seed.

    Args:
        estimators: registered estimator names, or variants such as
            ``"renyi[sigma=median]"`` (see :func:`parse_estimator_spec`).
        tasks: tasks to run (see :func:`select_tasks`).
        ns: sample sizes.
        seeds: a count (seeds 0..k-1) or explicit seeds; each seed draws a fresh sample.
        params: per-estimator parameters, {name: {key: value}}.
        on_record: called after each estimate (for progress bars).
    """
    from mi_probe.api import estimate

    if not estimators or not tasks or not ns:
        raise ParameterError("a benchmark needs at least one estimator, task and sample size")
    if any(int(n) < 2 for n in ns):
        raise ParameterError(f"sample sizes must be at least 2, got {list(ns)}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ParameterError("a benchmark needs at least one seed")
    params = params or {}
    resolved = _resolve_estimators(estimators, params)
    records: list[BenchRecord] = []
    for task in tasks:
        truth = task.true_mi
        for n in ns:
            for seed in seed_list:
                x, y = task.sample(int(n), seed)
                for label, est, given in resolved:
                    rec = BenchRecord(label, task.name, int(n), seed, truth)
                    if task.y_kind not in est.y_kinds:
                        rec.skipped = f"{est.name} does not accept {task.y_kind} y"
                    else:
                        kwargs = dict(given)
                        if est.randomized and "seed" not in kwargs:
                            kwargs["seed"] = seed
                        start = time.perf_counter()
                        try:
                            res = estimate(x, y, est, y_kind=task.y_kind, **kwargs)
                        except Exception as exc:  # noqa: BLE001 - recorded, never fatal
                            rec.error = f"{type(exc).__name__}: {exc}"
                        else:
                            rec.value = res.value if math.isfinite(res.value) else None
                            rec.diagnostics = list(res.diagnostics)
                        rec.seconds = time.perf_counter() - start
                    records.append(rec)
                    if on_record is not None:
                        on_record(rec)
    return BenchRun(records, list(tasks), [label for label, _, _ in resolved],
                    [int(n) for n in ns], seed_list, {k: dict(v) for k, v in params.items()})
