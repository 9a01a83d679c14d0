"""Conformance kit for estimators: hypothesis strategies and :func:`check_estimator`.

Plugin authors run the same checks as the built-in estimators, like scikit-learn's
``check_estimator``::

    from mi_probe.testing import check_estimator

    def test_my_estimator_conforms():
        check_estimator(MyEstimator, params={"epochs": 2})   # raises AssertionError

Every check calls the public :func:`mi_probe.estimate` (so validation, units and result
building are part of what is checked) on small synthetic data (n = 200 by default, 500
for the independence check) with a few hypothesis examples, derandomised so that a run is
reproducible. The strategies (:func:`pairs`, :func:`dependent_pairs`,
:func:`independent_pairs`) are public for property tests of your own.

Requires the ``hypothesis`` package (``pip install mi-probe[test]``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .api import estimate, estimate_layers, get_estimator
from .data import Y_KINDS
from .errors import MIProbeError
from .estimator import Estimator
from .params import Param, resolve_params
from .result import NATS_PER_BIT, MIResult

#: Sample size of the independence check; ``Estimator.independence_tolerance`` refers to it.
INDEPENDENCE_N = 500
#: Largest dimensions (and label count) the checks draw: tolerances refer to these too.
MAX_D_X, MAX_D_Y, MAX_CLASSES = 3, 2, 4

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


# -- data ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    """Paired samples for a check.

    Attributes:
        x: (n, d_x) float64.
        y: (n, d_y) float64 when ``y_kind`` is "continuous", (n,) int64 labels otherwise.
        y_kind: "continuous" or "discrete".
        dependent: whether y was generated from x.
        seed: the seed the data was drawn with.
        d_y: the ``d_y`` it was drawn with (discrete y: d_y + 1 classes).
    """

    x: np.ndarray
    y: np.ndarray
    y_kind: str
    dependent: bool
    seed: int
    d_y: int

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


def make_pair(
    seed: int,
    n: int,
    d_x: int = 2,
    d_y: int = 2,
    y_kind: str = "continuous",
    dependent: bool = True,
    noise: float = 0.1,
    scale: float = 1.0,
) -> Pair:
    """Draw one :class:`Pair`.

    x ~ N(0, scale²·I) of shape (n, d_x). Dependent continuous y = x·W + noise·ε, with W
    (d_x, d_y) of unit-norm random columns and ε standard normal (for noise = 0.1 about
    2 nats per y dimension), times ``scale``. Dependent labels: the projection of x on a
    random unit direction plus noise·ε, cut at its quantiles into d_y + 1 ≥ 2 balanced
    classes (about log(d_y + 1) nats). Independent y: the same recipe applied to an
    independent copy of x.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d_x))
    source = x if dependent else rng.normal(size=(n, d_x))
    if y_kind == "continuous":
        w = rng.normal(size=(d_x, d_y))
        w /= np.linalg.norm(w, axis=0, keepdims=True)
        y = (source @ w + noise * rng.normal(size=(n, d_y))) * scale
    elif y_kind == "discrete":
        u = rng.normal(size=d_x)
        proj = source @ (u / np.linalg.norm(u)) + noise * rng.normal(size=n)
        edges = np.quantile(proj, np.linspace(0, 1, d_y + 2)[1:-1])
        y = np.searchsorted(edges, proj).astype(np.int64)
    else:
        raise ValueError(f"y_kind must be one of {Y_KINDS}, got {y_kind!r}")
    return Pair(x * scale, y, y_kind, dependent, seed, d_y)


def pairs(
    n: int | st.SearchStrategy[int] = 200,
    y_kind: str | None = None,
    dependent: bool | None = None,
    max_d_x: int = MAX_D_X,
    max_d_y: int = MAX_D_Y,
) -> st.SearchStrategy[Pair]:
    """Hypothesis strategy of :class:`Pair` (data drawn from a seed, so examples are cheap).

    Args:
        n: sample count, or a strategy for it.
        y_kind: "continuous", "discrete", or None for either.
        dependent: True, False, or None for either.
        max_d_x, max_d_y: largest dimensions drawn (discrete y has up to max_d_y + 1
            classes, at least 2).
    """
    n_st = n if isinstance(n, st.SearchStrategy) else st.just(n)
    kind_st = st.just(y_kind) if y_kind is not None else st.sampled_from(Y_KINDS)
    dep_st = st.just(dependent) if dependent is not None else st.booleans()
    return st.builds(
        make_pair,
        seed=st.integers(0, 2**31 - 1),
        n=n_st,
        d_x=st.integers(1, max_d_x),
        d_y=st.integers(1, max_d_y),
        y_kind=kind_st,
        dependent=dep_st,
        scale=st.sampled_from([0.1, 1.0, 10.0]),
    )


def dependent_pairs(**kwargs: Any) -> st.SearchStrategy[Pair]:
    """:func:`pairs` with y generated from x (strong dependence, see :func:`make_pair`)."""
    return pairs(dependent=True, **kwargs)


def independent_pairs(**kwargs: Any) -> st.SearchStrategy[Pair]:
    """:func:`pairs` with x and y independent (true MI 0)."""
    return pairs(dependent=False, **kwargs)


# -- the checks ---------------------------------------------------------------------------
class _Context:
    """What every check needs: the estimator, the parameters, sizes and example count."""

    def __init__(self, est: Estimator, params: dict[str, Any], n: int, max_examples: int):
        self.est = est
        self.params = params
        self.n = max(n, est.min_samples(self._resolved()))
        self.max_examples = max_examples

    def _resolved(self) -> dict[str, Any]:
        return resolve_params(self.est.name, self.est.params, self.params)

    @property
    def kinds(self) -> list[str]:
        return sorted(self.est.y_kinds)

    def mi(self, x: Any, y: Any, **overrides: Any) -> MIResult:
        kw = {**self.params, **overrides}
        return estimate(x, y, self.est, **kw)

    def for_examples(self, strategy: st.SearchStrategy, body: Callable[[Any], None]) -> None:
        """Run ``body`` on ``max_examples`` derandomised examples (no shrinking: the data
        comes from a seed, so a smaller seed is not a simpler example)."""

        @settings(max_examples=self.max_examples, deadline=None, derandomize=True,
                  database=None, phases=(Phase.explicit, Phase.generate),
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def run(example: Any) -> None:
            body(example)

        run()

    def fail(self, check: str, message: str) -> AssertionError:
        return AssertionError(f"{check} failed for estimator {self.est.name!r}: {message}")


def _close(a: float, b: float, rel: float, abs_: float) -> bool:
    return abs(a - b) <= abs_ + rel * max(abs(a), abs(b))


def check_metadata(ctx: _Context) -> None:
    """Name, parameters, y kinds and flags are well formed."""
    est, fail = ctx.est, ctx.fail
    if not isinstance(est.name, str) or not _NAME.match(est.name):
        raise fail("check_metadata", f"name {est.name!r} must be lower case [a-z0-9_-]")
    if not est.description:
        raise fail("check_metadata", "description is empty")
    names = [p.name for p in est.params]
    if len(set(names)) != len(names):
        raise fail("check_metadata", f"duplicate parameter names in {names}")
    for p in est.params:
        if not isinstance(p, Param):
            raise fail("check_metadata", f"params must hold Param objects, got {p!r}")
        if p.default is not None or not p.optional:
            try:
                ok = p.coerce(p.default) == p.default
            except MIProbeError as exc:
                raise fail("check_metadata", f"default of {p.name!r}: {exc}") from None
            if not ok:
                raise fail("check_metadata", f"default of {p.name!r} does not round-trip")
    if not est.y_kinds or not set(est.y_kinds) <= set(Y_KINDS):
        raise fail("check_metadata", f"y_kinds {set(est.y_kinds)} must be a subset of {Y_KINDS}")
    if est.randomized and "seed" not in names:
        raise fail("check_metadata", "randomized estimators must declare a 'seed' parameter")
    if not (est.independence_tolerance > 0 and math.isfinite(est.independence_tolerance)):
        raise fail("check_metadata", "independence_tolerance must be a positive number")


def check_returns_result(ctx: _Context) -> None:
    """A finite MIResult with the right fields; inputs untouched; torch input accepted."""
    import torch

    def body(pair: Pair) -> None:
        x0, y0 = pair.x.copy(), pair.y.copy()
        res = ctx.mi(pair.x, pair.y)
        if not isinstance(res, MIResult) or not math.isfinite(res.value):
            raise ctx.fail("check_returns_result", f"got {res!r}")
        expect = dict(estimator=ctx.est.name, n=pair.n, d_x=pair.x.shape[1], unit="nats",
                      y_kind=pair.y_kind,
                      d_y=1 if pair.y_kind == "discrete" else pair.y.shape[1])
        got = {k: getattr(res, k) for k in expect}
        if got != expect:
            raise ctx.fail("check_returns_result", f"result fields {got}, expected {expect}")
        if set(res.params) != {p.name for p in ctx.est.params}:
            raise ctx.fail("check_returns_result", "result.params must list every parameter")
        if not (np.array_equal(pair.x, x0) and np.array_equal(pair.y, y0)):
            raise ctx.fail("check_returns_result", "the estimator modified its input arrays")
        from_torch = ctx.mi(torch.as_tensor(pair.x), torch.as_tensor(pair.y))
        if not _close(from_torch.value, res.value, 1e-9, 1e-12):
            raise ctx.fail("check_returns_result",
                           f"torch input gave {from_torch.value}, numpy {res.value}")

    for kind in ctx.kinds:
        ctx.for_examples(dependent_pairs(n=ctx.n, y_kind=kind), body)


def check_detects_dependence(ctx: _Context) -> None:
    """Strongly dependent data score above independent data by the independence tolerance."""
    tol = ctx.est.independence_tolerance

    def body(pair: Pair) -> None:
        indep = make_pair(pair.seed, pair.n, pair.x.shape[1], pair.d_y, pair.y_kind, False)
        v_dep, v_ind = ctx.mi(pair.x, pair.y).value, ctx.mi(indep.x, indep.y).value
        if not v_dep > v_ind + tol:
            raise ctx.fail("check_detects_dependence",
                           f"dependent data gave {v_dep:.4g} nats, independent {v_ind:.4g}; "
                           f"expected a gap above independence_tolerance = {tol}")

    for kind in ctx.kinds:
        ctx.for_examples(dependent_pairs(n=ctx.n, y_kind=kind), body)


def check_permutation_invariance(ctx: _Context) -> None:
    """The same permutation of the rows of x and y leaves the value unchanged.

    Deterministic estimators: equal to rel 1e-6 (only floating-point summation order
    changes). Randomized estimators draw noise, minibatches or splits per sample
    *position*, so a permutation reassigns those draws: statistically the same as a new
    seed, and nothing tighter can be asked without knowing how the estimator uses its
    seed. Their permuted value must lie within max(6 standard deviations, the declared
    ``independence_tolerance``) of the mean of the values at five seeds: permuting may not
    move the value more than reseeding does. (With five seeds the standard deviation is
    itself uncertain; 6 of them keeps the chance of a false alarm near 1 % even when it is
    underestimated by half. The floor covers values clipped at 0, where five seeds can all
    give exactly 0 although the distribution has some spread.)
    """

    def body(pair: Pair) -> None:
        perm = np.random.default_rng(pair.seed + 1).permutation(pair.n)
        permuted = ctx.mi(pair.x[perm], pair.y[perm]).value
        base = ctx.mi(pair.x, pair.y).value
        if ctx.est.randomized:
            seed = ctx.params.get("seed", 0)
            vals = [base] + [ctx.mi(pair.x, pair.y, seed=seed + i).value for i in range(1, 5)]
            spread = max(6 * float(np.std(vals, ddof=1)), ctx.est.independence_tolerance)
            mean, tol = float(np.mean(vals)), spread + 1e-6
            if abs(permuted - mean) > tol:
                raise ctx.fail("check_permutation_invariance",
                               f"permuted rows gave {permuted:.6g}; five seeds gave "
                               f"{np.round(vals, 6).tolist()} (allowed distance {tol:.3g} "
                               "from their mean)")
        elif not _close(permuted, base, 1e-6, 1e-9):
            raise ctx.fail("check_permutation_invariance",
                           f"permuted rows gave {permuted!r}, original order {base!r}")

    for kind in ctx.kinds:
        ctx.for_examples(pairs(n=ctx.n, y_kind=kind), body)


def check_independence(ctx: _Context) -> None:
    """|value| <= independence_tolerance on independent data at n = INDEPENDENCE_N."""
    tol = ctx.est.independence_tolerance
    n = max(INDEPENDENCE_N, ctx.n)

    def body(pair: Pair) -> None:
        v = ctx.mi(pair.x, pair.y).value
        if not abs(v) <= tol:
            raise ctx.fail("check_independence",
                           f"independent data (n={n}, d_x={pair.x.shape[1]}, y {pair.y_kind}) "
                           f"gave {v:.4g} nats; the declared independence_tolerance is {tol}")

    for kind in ctx.kinds:
        ctx.for_examples(independent_pairs(n=n, y_kind=kind), body)


def check_determinism(ctx: _Context) -> None:
    """Two calls with the same parameters (and seed) give the same value (rel 1e-9)."""

    def body(pair: Pair) -> None:
        a, b = ctx.mi(pair.x, pair.y).value, ctx.mi(pair.x, pair.y).value
        if not _close(a, b, 1e-9, 1e-12):
            raise ctx.fail("check_determinism", f"two identical calls gave {a!r} and {b!r}")

    for kind in ctx.kinds:
        ctx.for_examples(dependent_pairs(n=ctx.n, y_kind=kind), body)


def check_symmetry(ctx: _Context) -> None:
    """I(x; y) == I(y; x) (rel 1e-6) for continuous y, if the estimator claims symmetry."""
    if not ctx.est.symmetric or "continuous" not in ctx.est.y_kinds:
        return

    def body(pair: Pair) -> None:
        a, b = ctx.mi(pair.x, pair.y).value, ctx.mi(pair.y, pair.x).value
        if not _close(a, b, 1e-6, 1e-9):
            raise ctx.fail("check_symmetry", f"I(x; y) = {a!r} but I(y; x) = {b!r}")

    ctx.for_examples(pairs(n=ctx.n, y_kind="continuous"), body)


def check_layers(ctx: _Context) -> None:
    """estimate_layers([x1, x2], y) equals two estimate calls (rel 1e-6)."""

    def body(pair: Pair) -> None:
        x2 = np.tanh(pair.x[:, ::-1] * 0.5) + 0.01 * pair.x
        batched = estimate_layers([pair.x, x2], pair.y, ctx.est, **ctx.params)
        single = [ctx.mi(pair.x, pair.y).value, ctx.mi(x2, pair.y).value]
        got = [r.value for r in batched]
        if len(got) != 2 or not all(_close(a, b, 1e-6, 1e-9) for a, b in zip(got, single,
                                                                              strict=True)):
            raise ctx.fail("check_layers", f"estimate_layers gave {got}, estimate {single}")

    for kind in ctx.kinds:
        ctx.for_examples(dependent_pairs(n=ctx.n, y_kind=kind), body)


def check_units(ctx: _Context) -> None:
    """unit="bits" gives the nats value divided by ln 2."""
    pair = make_pair(0, ctx.n, 2, 1, ctx.kinds[0], True)
    nats = ctx.mi(pair.x, pair.y).value
    bits = estimate(pair.x, pair.y, ctx.est, unit="bits", **ctx.params)
    if bits.unit != "bits" or not _close(bits.value, nats / NATS_PER_BIT, 1e-9, 1e-12):
        raise ctx.fail("check_units", f"{nats!r} nats but {bits.value!r} {bits.unit}")


def check_rejects_bad_input(ctx: _Context) -> None:
    """Bad input raises an MIProbeError subclass (never another exception type).

    Cases: NaN in x, inf in y, mismatched n, 3-D x, non-numeric x, an unknown parameter,
    too few samples (n = min_samples - 1), and a y kind the estimator does not accept. At
    n = min_samples the estimator must return a finite value or raise MIProbeError.
    """
    kind = ctx.kinds[0]
    pair = make_pair(0, ctx.n, 2, 2, kind, True)
    x, y = pair.x, pair.y
    x_nan = x.copy()
    x_nan[3, 0] = np.nan
    y_bad = y.astype(float)
    y_bad[5] = np.inf
    cases: dict[str, tuple[Any, Any, dict[str, Any]]] = {
        "NaN in x": (x_nan, y, {}),
        "inf in y": (x, y_bad, {"y_kind": kind} if kind == "continuous" else {}),
        "mismatched n": (x[:-1], y, {}),
        "3-D x": (x.reshape(ctx.n, 2, 1), y, {}),
        "non-numeric x": (np.array([["a", "b"]] * ctx.n), y, {}),
        "unknown parameter": (x, y, {"no_such_parameter_xyz": 1}),
    }
    m = ctx.est.min_samples(ctx._resolved())
    if m > 1:
        cases["too few samples"] = (x[: m - 1], y[: m - 1], {})
    for other in set(Y_KINDS) - set(ctx.est.y_kinds):
        other_pair = make_pair(0, ctx.n, 2, 2, other, True)
        cases[f"{other} y (not accepted)"] = (x, other_pair.y, {})
    for label, (xb, yb, extra) in cases.items():
        try:
            estimate(xb, yb, ctx.est, **{**ctx.params, **extra})
        except MIProbeError:
            continue
        except Exception as exc:  # noqa: BLE001 - the point is to catch the wrong kind
            raise ctx.fail("check_rejects_bad_input",
                           f"{label}: raised {type(exc).__name__}: {exc} instead of an "
                           "mi_probe.errors.MIProbeError subclass") from exc
        raise ctx.fail("check_rejects_bad_input", f"{label}: no error was raised")
    small = make_pair(1, max(m, 1), 2, 2, kind, True)
    try:
        res = ctx.mi(small.x, small.y)
    except MIProbeError:
        return
    except Exception as exc:  # noqa: BLE001
        raise ctx.fail("check_rejects_bad_input",
                       f"n = min_samples = {m}: raised {type(exc).__name__}: {exc}") from exc
    if not math.isfinite(res.value):
        raise ctx.fail("check_rejects_bad_input", f"n = min_samples = {m} gave {res.value}")


CHECKS: dict[str, Callable[[_Context], None]] = {
    f.__name__: f
    for f in (check_metadata, check_returns_result, check_rejects_bad_input, check_units,
              check_determinism, check_permutation_invariance, check_symmetry, check_layers,
              check_detects_dependence, check_independence)
}


def check_estimator(
    estimator: str | Estimator | type,
    params: dict[str, Any] | None = None,
    *,
    n: int = 200,
    max_examples: int = 3,
    skip: Iterable[str] = (),
) -> list[str]:
    """Assert that an estimator honours the mi-probe contract; raise AssertionError if not.

    Args:
        estimator: a registered name, an Estimator instance or an Estimator subclass.
        params: parameter overrides used in every call (e.g. few epochs for speed).
        n: sample size of most checks (the independence check uses max(n, 500)).
        max_examples: hypothesis examples per check and y kind.
        skip: names of checks to leave out (see ``CHECKS``), for a documented reason.

    Returns:
        The names of the checks that ran, in order.
    """
    est = get_estimator(estimator)
    skip = set(skip)
    unknown = skip - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; known: {sorted(CHECKS)}")
    ctx = _Context(est, dict(params or {}), n, max_examples)
    ran = []
    for name, check in CHECKS.items():
        if name in skip:
            continue
        try:
            check(ctx)
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - report any crash as a failed check
            raise AssertionError(
                f"{name} failed for estimator {est.name!r}: valid input raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        ran.append(name)
    return ran
