"""`mi-probe rescale` as a library call: fit β on named data sets, evaluate on others.

:func:`run_rescale` loads every fit and evaluation set, scores the model at β = 1 (loss,
next-token accuracy and, optionally, per-layer early-exit accuracy), then for each fit set
and seed fits β (:func:`mi_probe.rescale_train.fit_betas`) and scores every evaluation set
with the fitted β. Under ``out`` it writes:

- ``betas.json``: per fit, β per layer per seed, their mean and sd over seeds, and for each
  evaluation set loss and accuracy before and after fitting (mean and per seed); also the
  β = 1 scores and early-exit accuracies. Rewritten (atomically) after each fit finishes,
  so an interrupted run keeps every finished fit.
- ``betas/<fit>-seed<k>.safetensors`` (+ ``.json``): β of each seed, loadable with
  :meth:`mi_probe.rescale.ResidualScaling.from_file`; ``betas/<fit>-mean.*``: the seed mean.
- ``run.json``: provenance (checkpoint, data hashes, settings, versions, timings).
- ``betas.png`` and ``early_exit.png`` (see :mod:`mi_probe.plots`).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .adapters import ModelAdapter
from .checkpoints import CheckpointRef, LoadedCheckpoint, discover_checkpoints
from .early_exit import early_exit
from .errors import CheckpointError, FileFormatError, ParameterError
from .probe_data import ProbeSet, load_probe_data
from .probe_results import write_json
from .rescale import ResidualScaling, model_identity, save_betas
from .rescale_train import FitConfig, FitResult, evaluate, fit_betas

RESULTS_FORMAT = "mi-probe-rescale"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_named_paths(items: Sequence[str], option: str) -> dict[str, Path]:
    """``["id=a.jsonl", "ood=b.jsonl"]`` -> ``{"id": Path("a.jsonl"), ...}``, checked.

    Names (letters, digits, ``_ . -``) become file names; every file must exist.
    """
    named: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ParameterError(f"{option} {item!r}: expected NAME=FILE, e.g. {option} "
                                 "id=id_train.jsonl")
        if not _NAME.match(name):
            raise ParameterError(f"{option} {item!r}: the name {name!r} may only hold letters, "
                                 "digits, '_', '.' and '-' (it names output files)")
        if name in named:
            raise ParameterError(f"{option}: the name {name!r} is given twice")
        if not Path(path).is_file():
            raise FileFormatError(f"{option} {name}: {path}: no such data file")
        named[name] = Path(path)
    return named


def select_checkpoint(path: str | Path, name: str | None = None) -> CheckpointRef:
    """The checkpoint to use under ``path``: the one called ``name``, else the last by step."""
    refs = discover_checkpoints(path)
    if name is None:
        return refs[-1]
    for ref in refs:
        if name in (ref.name, str(ref.step)):
            return ref
    raise CheckpointError(f"no checkpoint {name!r} in {path}; found "
                          f"{', '.join(r.name for r in refs)}")


def environment() -> dict[str, str]:
    """Versions that matter for reproducing a run."""
    import platform

    import torch
    import transformers

    from . import __version__

    return {"mi_probe": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


FitProgress = Callable[[str, int, int, int, float], None]


def run_rescale(
    loaded: LoadedCheckpoint,
    adapter: ModelAdapter,
    fits: dict[str, Path],
    evals: dict[str, Path],
    *,
    seeds: Sequence[int] = (0,),
    config: FitConfig | None = None,
    device: Any = None,
    samples: int | None = None,
    data_seed: int = 0,
    with_early_exit: bool = True,
    out: str | Path | None = None,
    command: Sequence[str] | None = None,
    progress: FitProgress | None = None,
    on_fit_done: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Fit β on each fit set for each seed; returns the ``betas.json`` document.

    Args:
        loaded: the checkpoint (model on ``device``, tokenizer or None).
        fits, evals: name -> JSONL file (see :func:`parse_named_paths`).
        seeds: one fit per seed (data order and held-out split).
        samples: keep at most this many examples per file (seeded subset; None: all).
        with_early_exit: also compute per-layer logit-lens accuracy at β = 1.
        out: output folder, or None to write nothing.
        command: the command line, stored in run.json.
        progress: ``progress(fit, seed, step, total_steps, running_loss)``.
        on_fit_done: called with (fit name, its entry of the document) as each fit ends.
    """
    config = config or FitConfig()
    config.validate()
    if not fits:
        raise ParameterError("give at least one fit set: --fit NAME=FILE")
    if not seeds:
        raise ParameterError("give at least one seed")
    model, started = loaded.model, time.time()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = Path(out) if out is not None else None
    fit_sets = {n: _load(p, loaded, samples, data_seed) for n, p in fits.items()}
    eval_sets = {n: _load(p, loaded, samples, data_seed) for n, p in evals.items()}
    identity = model_identity(model, adapter, loaded.ref)

    def score(batch_size: int) -> dict[str, dict[str, Any]]:
        return {n: asdict(evaluate(model, s.examples, batch_size, device, config.precision,
                                   config.target_tokens)) for n, s in eval_sets.items()}

    doc: dict[str, Any] = {
        "format": RESULTS_FORMAT, "num_layers": adapter.num_layers, "model": identity,
        "eval_before": score(config.batch_size * 2), "early_exit": {}, "fits": {},
    }
    if with_early_exit:
        doc["early_exit"] = {n: early_exit(model, s.examples, adapter,
                                           config.batch_size * 2).to_dict()
                             for n, s in eval_sets.items()}
    run = {
        "command": list(command or []), "status": "running", "started": started_at,
        "checkpoint": {"path": str(loaded.ref.path), "name": loaded.ref.name,
                       "step": loaded.ref.step, "kind": loaded.ref.kind},
        "model": identity, "device": str(device), "seeds": list(seeds),
        "config": asdict(config), "samples": samples, "data_seed": data_seed,
        "fit_data": {n: s.provenance() for n, s in fit_sets.items()},
        "eval_data": {n: s.provenance() for n, s in eval_sets.items()},
        "environment": environment(),
    }
    _write(out, doc, run)
    for name, data in fit_sets.items():
        results: list[FitResult] = []
        after: list[dict[str, dict[str, Any]]] = []
        for seed in seeds:
            def report(step: int, total: int, loss: float, seed: int = seed,
                       name: str = name) -> None:
                if progress is not None:
                    progress(name, seed, step, total, loss)

            result = fit_betas(model, data.examples, config, seed, adapter, device, report)
            results.append(result)
            with ResidualScaling(model, adapter, result.betas):
                after.append(score(config.batch_size * 2))
        entry = _fit_entry(name, data, results, after, doc["eval_before"])
        if out is not None:
            _save_fit_betas(out, name, results, entry, identity, config)
        doc["fits"][name] = entry
        _write(out, doc, run)
        if on_fit_done is not None:
            on_fit_done(name, entry)
    run.update(status="complete", seconds=time.time() - started)
    _write(out, doc, run)
    if out is not None:
        from .plots import plot_betas, plot_early_exit

        plot_betas(doc, out / "betas.png")
        if doc["early_exit"]:
            plot_early_exit(doc["early_exit"], out / "early_exit.png")
    return doc


def _load(path: Path, loaded: LoadedCheckpoint, samples: int | None, seed: int) -> ProbeSet:
    return load_probe_data(path, loaded.tokenizer, samples=samples, seed=seed)


def _fit_entry(name: str, data: ProbeSet, results: list[FitResult],
               after: list[dict[str, dict[str, Any]]], before: dict[str, dict[str, Any]],
               ) -> dict[str, Any]:
    """One fit's entry of betas.json: β per seed, mean/sd, evaluation before/after."""
    per_layer = list(zip(*(r.betas for r in results), strict=True))
    stats = [_mean_sd(v) for v in per_layer]
    evaluation = {}
    for ev, scores in before.items():
        runs = [a[ev] for a in after]
        evaluation[ev] = {
            "before": {"loss": scores["loss"], "accuracy": scores["accuracy"]},
            "after": {key: _mean_sd([r[key] for r in runs])[0] for key in ("loss", "accuracy")},
            "after_sd": {key: _mean_sd([r[key] for r in runs])[1]
                         for key in ("loss", "accuracy")},
            "after_per_seed": [{"loss": r["loss"], "accuracy": r["accuracy"]} for r in runs],
        }
    return {
        "data": data.provenance(),
        "seeds": [r.seed for r in results],
        "beta": [r.betas for r in results],
        "beta_mean": [m for m, _ in stats],
        "beta_sd": [s for _, s in stats],
        "eval": evaluation,
        "fits": [{k: v for k, v in r.to_dict().items() if k != "betas"} for r in results],
    }


def _save_fit_betas(out: Path, name: str, results: list[FitResult], entry: dict[str, Any],
                    identity: dict[str, Any], config: FitConfig) -> None:
    folder = out / "betas"
    for r in results:
        save_betas(folder / f"{name}-seed{r.seed}", r.betas,
                   {"model": identity, "fit": {"name": name, "seed": r.seed,
                                               "data": entry["data"], "config": asdict(config),
                                               "best_step": r.best_step}})
    save_betas(folder / f"{name}-mean", entry["beta_mean"],
               {"model": identity, "fit": {"name": name, "seeds": entry["seeds"],
                                           "data": entry["data"], "aggregate": "mean"}})


def _write(out: Path | None, doc: dict[str, Any], run: dict[str, Any]) -> None:
    if out is None:
        return
    write_json(out / "betas.json", doc)
    write_json(out / "run.json", run)


def run_early_exit(
    loaded: LoadedCheckpoint,
    adapter: ModelAdapter,
    evals: dict[str, Path],
    *,
    samples: int | None = None,
    data_seed: int = 0,
    batch_size: int = 32,
    betas: str | Path | None = None,
    out: str | Path | None = None,
    command: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Early-exit accuracy per layer on each evaluation set (β from ``betas`` applied first).

    Under ``out`` writes ``early_exit.json`` (results plus provenance) and ``early_exit.png``.
    """
    if not evals:
        raise ParameterError("give at least one evaluation set: --eval NAME=FILE")
    sets = {n: _load(p, loaded, samples, data_seed) for n, p in evals.items()}
    scaling = ResidualScaling.from_file(loaded.model, betas, adapter) if betas else None
    if scaling is not None:
        scaling.attach()
    try:
        results = {n: early_exit(loaded.model, s.examples, adapter, batch_size).to_dict()
                   for n, s in sets.items()}
    finally:
        if scaling is not None:
            scaling.remove()
    if out is not None:
        from .plots import plot_early_exit

        out = Path(out)
        write_json(out / "early_exit.json", {
            "results": results, "betas": str(betas) if betas else None,
            "command": list(command or []), "model": model_identity(loaded.model, adapter,
                                                                    loaded.ref),
            "eval_data": {n: s.provenance() for n, s in sets.items()},
            "environment": environment(),
        })
        plot_early_exit(results, out / "early_exit.png")
    return results
