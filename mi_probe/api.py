"""The library's front door: ``estimate``, ``estimate_layers`` and ``estimators``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data import Target, as_matrix, as_target, check_pair
from .errors import InputError, ParameterError
from .estimator import Estimate, Estimator
from .params import Param, resolve_params
from .registry import get_registry
from .result import UNITS, MIResult, convert_unit
from .uncertainty import add_uncertainty, check_options


@dataclass(frozen=True)
class EstimatorInfo:
    """Description of one registered estimator (what ``mi-probe estimators`` prints)."""

    name: str
    description: str
    params: tuple[Param, ...]
    y_kinds: tuple[str, ...]
    symmetric: bool
    randomized: bool
    plugin: str


def estimators() -> list[EstimatorInfo]:
    """Every registered estimator with its parameters (types and defaults)."""
    reg = get_registry()
    return [
        EstimatorInfo(
            name=e.name,
            description=e.description,
            params=tuple(e.params),
            y_kinds=tuple(sorted(e.y_kinds)),
            symmetric=e.symmetric,
            randomized=e.randomized,
            plugin=reg.estimator_plugin.get(e.name, "?"),
        )
        for e in sorted(reg.estimators.values(), key=lambda e: e.name)
    ]


def get_estimator(name_or_obj: str | Estimator | type) -> Estimator:
    """The registered estimator object for a name (instances and classes pass through)."""
    return get_registry().get_estimator(name_or_obj)


def prepare(
    estimator: str | Estimator | type,
    y: Any,
    params: dict[str, Any],
    *,
    unit: str = "nats",
    y_kind: str | None = None,
) -> tuple[Estimator, Target, dict[str, Any]]:
    """Resolve the estimator, validate y, the unit and the parameters."""
    est = get_estimator(estimator)
    if unit not in UNITS:
        raise ParameterError(f"unknown unit {unit!r}; use one of {', '.join(UNITS)}")
    target = as_target(y, y_kind)
    if target.kind not in est.y_kinds:
        raise InputError(
            f"estimator {est.name!r} does not accept {target.kind} y "
            f"(it accepts: {', '.join(sorted(est.y_kinds))}); "
            + (
                "pass labels as a 1-D integer array"
                if target.kind == "continuous"
                else "pass y as a float array of shape (n, d_y), or y_kind='continuous'"
            )
        )
    resolved = resolve_params(est.name, est.params, params)
    return est, target, resolved


def to_result(
    est: Estimator,
    raw: Estimate,
    x: np.ndarray,
    y: Target,
    params: dict[str, Any],
    unit: str,
    seconds: float,
) -> MIResult:
    """Wrap an estimator's raw nats output as an MIResult in ``unit``."""
    extras: dict[str, Any] = {}
    for key, value in raw.extras.items():
        if key.endswith("_nats"):
            extras[key[: -len("_nats")]] = _convert_nested(value, unit)
        else:
            extras[key] = value
    value = float(raw.value)
    if not np.isfinite(value):
        raise InputError(
            f"estimator {est.name!r} produced a non-finite value ({value}); "
            "check the input for degenerate (constant or duplicated) samples"
        )
    return MIResult(
        value=convert_unit(value, unit),
        unit=unit,
        estimator=est.name,
        params=dict(params),
        n=int(x.shape[0]),
        d_x=int(x.shape[1]),
        d_y=y.dim,
        y_kind=y.kind,
        seconds=seconds,
        diagnostics=list(raw.diagnostics),
        extras=extras,
    )


def _convert_nested(value: Any, unit: str) -> Any:
    if isinstance(value, (list, tuple)):
        return [_convert_nested(v, unit) for v in value]
    return convert_unit(float(value), unit)


def estimate(
    x: Any,
    y: Any,
    estimator: str | Estimator | type = "renyi",
    *,
    unit: str = "nats",
    y_kind: str | None = None,
    ci: float | None = None,
    replicates: int | None = None,
    permutations: int = 0,
    resample: str = "subsample",
    resample_seed: int = 0,
    **params: Any,
) -> MIResult:
    """Estimate the mutual information I(x; y).

    Args:
        x: samples, shape (n, d_x) (a 1-D array is one feature); numpy or torch.
        y: shape (n, d_y) continuous, or (n,) integer labels (discrete).
        estimator: registered name (see :func:`estimators`) or an Estimator.
        unit: "nats" (default) or "bits".
        y_kind: force "continuous" or "discrete" instead of inferring it from y's dtype.
        ci: confidence level (e.g. 0.95) of an interval put in ``result.ci``.
        replicates: number of resampled estimates behind the interval (default 20 when
            ``ci`` is given); they go in ``result.replicates``.
        permutations: P > 0 runs a permutation test: y shuffled P times; the p-value,
            null mean/sd and excess over the null go in ``result.extras``.
        resample: "subsample" (half-samples without replacement, any estimator) or
            "seeds" (randomized estimators: seeds only); see :mod:`mi_probe.uncertainty`.
        resample_seed: seed of the subsamples and permutations.
        **params: estimator parameters; unknown names are rejected.

    Returns:
        An :class:`MIResult`.
    """
    return estimate_layers([x], y, estimator, unit=unit, y_kind=y_kind, ci=ci,
                           replicates=replicates, permutations=permutations,
                           resample=resample, resample_seed=resample_seed, **params)[0]


def estimate_layers(
    xs: Sequence[Any] | np.ndarray,
    y: Any,
    estimator: str | Estimator | type = "renyi",
    *,
    unit: str = "nats",
    y_kind: str | None = None,
    ci: float | None = None,
    replicates: int | None = None,
    permutations: int = 0,
    resample: str = "subsample",
    resample_seed: int = 0,
    **params: Any,
) -> list[MIResult]:
    """Estimate I(x_l; y) for many x_l against one y (e.g. every layer of a model).

    ``xs`` is a sequence of (n, d_l) arrays or one (L, n, d) array. Estimators that can
    share the work that depends only on y (its Gram matrix, entropy or neighbours) do it
    once. Returns one MIResult per entry of ``xs``; each one's ``seconds`` is its share of
    the total time. ``ci``, ``replicates``, ``permutations``, ``resample`` and
    ``resample_seed`` work as in :func:`estimate`; every layer shares the same subsamples
    and permutations.
    """
    est, target, resolved = prepare(estimator, y, params, unit=unit, y_kind=y_kind)
    if isinstance(xs, np.ndarray) and xs.ndim == 3:
        xs = list(xs)
    if len(xs) == 0:
        raise InputError("estimate_layers needs at least one x")
    uncertain = ci is not None or replicates is not None or bool(permutations)
    if uncertain:
        check_options(est, ci, replicates, permutations, resample)
    mats = [as_matrix(x, "x" if len(xs) == 1 else f"xs[{i}]") for i, x in enumerate(xs)]
    for x in mats:
        check_pair(x, target, est.min_samples(resolved), est.name)
        est.check_params(resolved, x, target)
    start = time.perf_counter()
    raws = est.compute_layers(mats, target, resolved)
    seconds = (time.perf_counter() - start) / len(mats)
    results = [
        to_result(est, raw, x, target, resolved, unit, seconds)
        for raw, x in zip(raws, mats, strict=True)
    ]
    if uncertain:
        add_uncertainty(results, est, mats, target, resolved, unit=unit, ci=ci,
                        replicates=replicates, permutations=permutations, resample=resample,
                        seed=resample_seed)
    return results
