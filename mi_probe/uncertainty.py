"""Uncertainty for MI estimates: subsampling intervals, seed spreads, permutation nulls.

Every replicate re-runs the estimator's batched ``compute_layers`` on all layers at once,
so work that depends only on y (a Gram matrix, neighbours) stays shared between layers.

Repeated subsampling (``resample="subsample"``, the default)
    B subsamples of size m = ⌊f·n⌋ (f = ½) drawn *without* replacement; the estimator is
    re-run on each, giving θ*_1..θ*_B. Subsampling (Politis, Romano & Wolf 1999) is valid
    for any √n-consistent estimator, and unlike the bootstrap it never duplicates a point
    (duplicates make kNN distances zero and break kNN and kernel estimators). With m a
    fixed fraction of n the finite-population correction matters: for an asymptotically
    linear estimator Var(θ*_b | data) ≈ σ²(1/m − 1/n), so Var(θ̂_n) = σ²/n is estimated by
    (m / (n − m)) · s², s² the variance of the θ*_b (the delete-d jackknife of Shao & Wu
    1989 with d = n − m; at m = n/2 the factor is exactly 1, "half-sampling").
    The interval is centred on the full-sample estimate θ̂_n:

    * ``ci_method="normal"`` (default): θ̂_n ± t_{B−1, (1+level)/2} · √(m/(n−m)) · s, with
      Student's t for the B-replicate estimate of s (reliable from B ≈ 20).
    * ``ci_method="percentile"``: the basic (reverse-percentile) subsampling interval,
      [θ̂_n − c(q_hi − θ̄*), θ̂_n − c(q_lo − θ̄*)], c = √(m/(n−m)), q the replicate
      quantiles; needs B ≳ 100.

    ``extras["subsample_shift"]`` = θ̄* − θ̂_n: how much the estimate moves when n halves.
    The interval describes sampling variability only, not estimator bias: a kNN estimate
    that is biased low at this n is biased low at n/2 too, and the shift shows it.
    Randomized estimators get a fresh seed in each replicate, so the spread includes
    training noise.

Seeds (``resample="seeds"``, randomized estimators only)
    B further runs on all the data with seeds seed+1..seed+B. The interval is a t-interval
    for the seed-averaged value (mean of the B + 1 runs, in ``extras["seed_mean"]``); it
    captures optimisation noise only, never sampling noise.

Permutation test (``permutations=P``)
    y is shuffled P times (the same permutations for every layer) and the estimate is
    re-run; the null mean, spread, excess (value − null mean) and the p-value
    p = (1 + #{null ≥ value}) / (P + 1) go into ``extras`` (Phipson & Smyth 2010: the +1
    keeps p > 0 and the test exact).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data import Target
from .errors import InputError, ParameterError
from .estimator import Estimator
from .result import MIResult, convert_unit

DEFAULT_REPLICATES = 20
DEFAULT_LEVEL = 0.95
SUBSAMPLE_FRACTION = 0.5
RESAMPLE_METHODS = ("subsample", "seeds")
CI_METHODS = ("normal", "percentile")
_SEED_STRIDE = 1_000_003  # keeps replicate seeds apart from permutation seeds


def check_options(
    est: Estimator,
    ci: float | None,
    replicates: int | None,
    permutations: int,
    resample: str,
    ci_method: str = "normal",
) -> tuple[float | None, int]:
    """Validate the uncertainty options; return (level or None, replicates)."""
    if resample not in RESAMPLE_METHODS:
        raise ParameterError(f"resample must be one of {RESAMPLE_METHODS}, got {resample!r}")
    if ci_method not in CI_METHODS:
        raise ParameterError(f"ci_method must be one of {CI_METHODS}, got {ci_method!r}")
    if resample == "seeds" and not est.randomized:
        raise ParameterError(
            f"resample='seeds' needs a randomized (trained) estimator; {est.name!r} is "
            "deterministic, so use resample='subsample'"
        )
    if permutations is None or int(permutations) < 0:
        raise ParameterError(f"permutations must be >= 0, got {permutations!r}")
    if ci is None and replicates is None:
        return None, 0
    level = DEFAULT_LEVEL if ci is None else float(ci)
    if not 0.0 < level < 1.0:
        raise ParameterError(f"ci must be a level between 0 and 1, e.g. 0.95; got {ci!r}")
    count = DEFAULT_REPLICATES if replicates is None else int(replicates)
    if count < 2:
        raise ParameterError(f"replicates must be at least 2, got {replicates!r}")
    return level, count


def _run(est: Estimator, mats: Sequence[np.ndarray], target: Target, params: dict[str, Any],
         seed_offset: int) -> np.ndarray:
    """Raw nats values (L,) of one replicate; randomized estimators get a shifted seed."""
    if est.randomized and "seed" in params and seed_offset:
        params = {**params, "seed": int(params["seed"]) + seed_offset}
    raws = est.compute_layers(list(mats), target, params)
    values = np.array([float(r.value) for r in raws])
    if not np.all(np.isfinite(values)):
        raise InputError(
            f"estimator {est.name!r} produced a non-finite value on a resampled replicate; "
            "the data may have duplicated or constant samples"
        )
    return values


def subsample_replicates(
    est: Estimator, mats: Sequence[np.ndarray], target: Target, params: dict[str, Any],
    replicates: int, rng: np.random.Generator, fraction: float = SUBSAMPLE_FRACTION,
) -> tuple[np.ndarray, int]:
    """Estimates on ``replicates`` subsamples without replacement: ((B, L) nats, m)."""
    n = target.n
    m = int(fraction * n)
    need = est.min_samples(params)
    if m < need or m >= n:
        raise InputError(
            f"subsampling needs subsamples of at least {need} points for {est.name!r}; with "
            f"n = {n} they have {m}. Use more data or fewer uncertainty options"
        )
    out = np.empty((replicates, len(mats)))
    for b in range(replicates):
        idx = np.sort(rng.choice(n, size=m, replace=False))
        out[b] = _run(est, [x[idx] for x in mats], target.take(idx), params, b + 1)
    return out, m


def seed_replicates(
    est: Estimator, mats: Sequence[np.ndarray], target: Target, params: dict[str, Any],
    replicates: int,
) -> np.ndarray:
    """Estimates on all the data with seeds seed+1..seed+B: (B, L) nats."""
    return np.stack([_run(est, mats, target, params, b + 1) for b in range(replicates)])


def permutation_null(
    est: Estimator, mats: Sequence[np.ndarray], target: Target, params: dict[str, Any],
    permutations: int, rng: np.random.Generator,
) -> np.ndarray:
    """Estimates with y shuffled (same shuffle for all layers): (P, L) nats."""
    out = np.empty((permutations, len(mats)))
    for p in range(permutations):
        perm = rng.permutation(target.n)
        out[p] = _run(est, mats, target.take(perm), params, _SEED_STRIDE + p)
    return out


def subsample_interval(
    value: float, reps: np.ndarray, n: int, m: int, level: float, method: str = "normal"
) -> tuple[float, float]:
    """(low, high) for θ̂_n = ``value`` from subsample estimates ``reps`` (B,) of size m."""
    scale = np.sqrt(m / (n - m))
    if method == "normal":
        half = _t_quantile(level, len(reps) - 1) * scale * reps.std(ddof=1)
        return value - half, value + half
    lo, hi = np.quantile(reps - reps.mean(), [0.5 - level / 2, 0.5 + level / 2])
    return value - scale * hi, value - scale * lo


def seed_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """t-interval for the mean of per-seed values (k,)."""
    half = _t_quantile(level, len(values) - 1) * values.std(ddof=1)
    half /= np.sqrt(len(values))
    return values.mean() - half, values.mean() + half


def permutation_p_value(value: float, null: np.ndarray) -> float:
    """(1 + #{null ≥ value}) / (P + 1)."""
    return float((1 + np.sum(null >= value)) / (len(null) + 1))


def add_uncertainty(
    results: list[MIResult],
    est: Estimator,
    mats: Sequence[np.ndarray],
    target: Target,
    params: dict[str, Any],
    *,
    unit: str = "nats",
    ci: float | None = None,
    replicates: int | None = None,
    permutations: int = 0,
    resample: str = "subsample",
    ci_method: str = "normal",
    seed: int = 0,
) -> list[MIResult]:
    """Fill ``ci``, ``replicates`` and the permutation extras of ``results`` in place.

    ``results[l]`` is the estimate for ``mats[l]`` (n, d_l) against ``target``, in
    ``unit``; ``params`` the estimator's resolved parameters. See the module docstring
    for the methods. Returns ``results``.
    """
    level, count = check_options(est, ci, replicates, permutations, resample, ci_method)
    rng = np.random.default_rng(seed)
    to_unit = np.vectorize(lambda v: convert_unit(float(v), unit), otypes=[float])
    values_nats = [_to_nats(r) for r in results]
    if level is not None:
        if resample == "subsample":
            reps, m = subsample_replicates(est, mats, target, params, count, rng)
        else:
            reps, m = seed_replicates(est, mats, target, params, count), target.n
        for layer, res in enumerate(results):
            col = reps[:, layer]
            if resample == "subsample":
                low, high = subsample_interval(values_nats[layer], col, target.n, m, level,
                                               ci_method)
                res.extras.update(subsample_size=m, subsample_shift=float(
                    convert_unit(col.mean() - values_nats[layer], unit)))
                res.extras["ci_method"] = f"subsample-{ci_method}"
            else:
                runs = np.concatenate([[values_nats[layer]], col])
                low, high = seed_interval(runs, level)
                res.extras.update(seed_mean=convert_unit(float(runs.mean()), unit),
                                  seed_sd=convert_unit(float(runs.std(ddof=1)), unit))
                res.extras["ci_method"] = "seeds-t"
            res.ci = (convert_unit(float(low), unit), convert_unit(float(high), unit))
            res.replicates = to_unit(col).tolist()
            res.extras.update(ci_level=level, resample=resample)
    if permutations:
        null = permutation_null(est, mats, target, params, int(permutations), rng)
        for layer, res in enumerate(results):
            col = null[:, layer]
            mean = float(col.mean())
            res.extras.update(
                permutations=int(permutations),
                p_value=permutation_p_value(values_nats[layer], col),
                null_mean=convert_unit(mean, unit),
                null_sd=convert_unit(float(col.std(ddof=1)) if len(col) > 1 else 0.0, unit),
                excess=convert_unit(float(values_nats[layer] - mean), unit),
                null_values=to_unit(col).tolist(),
            )
    return results


def _to_nats(res: MIResult) -> float:
    return float(res.value) / convert_unit(1.0, res.unit)


def describe_uncertainty(res: MIResult) -> list[str]:
    """Plain-text lines for the interval and the permutation test of ``res`` (may be empty)."""
    ex, lines = res.extras, []
    if res.ci is not None:
        count = len(res.replicates or [])
        how = (f"{count} subsamples of {ex.get('subsample_size')}"
               if ex.get("resample") == "subsample" else
               f"{count + 1} seeds, for the seed mean {ex.get('seed_mean'):.4g}")
        lines.append(f"{ex.get('ci_level', DEFAULT_LEVEL):.0%} CI [{res.ci[0]:.4g}, "
                     f"{res.ci[1]:.4g}] {res.unit} ({how}, {ex.get('ci_method')})")
    if "p_value" in ex:
        lines.append(f"permutation test: p = {ex['p_value']:.3g} over {ex['permutations']} "
                     f"shuffles of y; null {ex['null_mean']:.3g} ± {ex['null_sd']:.2g}, "
                     f"excess {ex['excess']:.4g} {res.unit}")
    return lines


# -- the shuffle baseline of a probe ------------------------------------------------------
@dataclass
class NullBaseline:
    """One layer's value against its shuffled-y null (all in ``unit``).

    Attributes:
        value: the estimate on the real pairing.
        null_mean, null_sd: mean and standard deviation over the P shuffles.
        excess: value − null_mean (what survives shuffling is *not* information about y).
        p_value: (1 + #{null ≥ value}) / (P + 1).
        null_values: the P shuffled estimates.
    """

    value: float
    null_mean: float
    null_sd: float
    excess: float
    p_value: float
    null_values: list[float]
    unit: str

    def columns(self) -> dict[str, float]:
        """null_mean, null_sd, excess and p_value (the probe's results.csv columns)."""
        return {"null_mean": self.null_mean, "null_sd": self.null_sd, "excess": self.excess,
                "p_value": self.p_value}

    @property
    def null_fraction(self) -> float:
        """null_mean / value: the share of the raw value that survives shuffling y."""
        return self.null_mean / self.value if self.value else float("nan")


def null_from_result(res: MIResult) -> NullBaseline:
    """The :class:`NullBaseline` stored in a result estimated with ``permutations``."""
    return pool_nulls([res])


def pool_nulls(results: Sequence[MIResult]) -> NullBaseline:
    """One :class:`NullBaseline` from replicates of the same quantity (e.g. disjoint sample
    windows), each estimated with ``permutations``.

    value = mean of the values; the null values are pooled; the p-value counts each
    replicate's null against that replicate's own value:
    p = (1 + Σ_k #{null_k ≥ value_k}) / (1 + Σ_k P_k).
    """
    if not results or any("null_values" not in r.extras for r in results):
        raise ParameterError("these results have no permutation null; estimate with "
                             "permutations=P")
    nulls = [np.asarray(r.extras["null_values"], dtype=float) for r in results]
    pooled = np.concatenate(nulls)
    value = float(np.mean([r.value for r in results]))
    exceed = sum(int(np.sum(null >= r.value)) for null, r in zip(nulls, results, strict=True))
    mean = float(pooled.mean())
    return NullBaseline(value, mean, float(pooled.std(ddof=1)) if len(pooled) > 1 else 0.0,
                        value - mean, (1 + exceed) / (1 + len(pooled)), pooled.tolist(),
                        results[0].unit)


def null_baseline(
    xs: Sequence[Any] | np.ndarray,
    y: Any,
    estimator: str | Estimator | type = "renyi",
    *,
    permutations: int = 20,
    seed: int = 0,
    unit: str = "nats",
    y_kind: str | None = None,
    **params: Any,
) -> tuple[list[MIResult], list[NullBaseline]]:
    """Estimate every layer of ``xs`` against ``y`` and against ``permutations`` shuffles
    of y (the same shuffles for every layer, y-side work shared).

    Returns the per-layer results (with the null in their extras) and one
    :class:`NullBaseline` per layer.
    """
    from .api import estimate_layers

    if int(permutations) < 1:
        raise ParameterError(f"a null baseline needs permutations >= 1, got {permutations}")
    results = estimate_layers(xs, y, estimator, unit=unit, y_kind=y_kind,
                              permutations=int(permutations), resample_seed=seed, **params)
    return results, [null_from_result(r) for r in results]


def _t_quantile(level: float, dof: int) -> float:
    """Two-sided Student-t quantile for a ``level`` interval (scipy imported on use: it
    costs most of a second at start-up)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, dof))
