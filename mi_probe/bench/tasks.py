"""Benchmark tasks with known mutual information (numpy/scipy only).

Modelled on "Beyond Normal: On the Evaluation of Mutual Information Estimators" (Czyż,
Grabowski, Vogt, Beerenwinkel & Marx, NeurIPS 2023). Every task samples (x, y) from a
distribution whose MI is known in closed form, or (Gaussian mixtures with discrete
labels) by a Monte Carlo integral reported with its standard error. All MI values are in
nats.

Families (the exact parameters are in :func:`builtin_tasks`):

* ``gauss-*``: correlated Gaussians, I = ½(log det Σ_xx + log det Σ_yy − log det Σ).
  ``dense``: every pair of the d_x + d_y coordinates has correlation 0.5; ``2pair``: only
  (x_1, y_1) and (x_2, y_2) are correlated, with ρ = 0.8 (I = −log(1 − ρ²) for any
  dimension); ``strong``: five pairs with ρ = 0.95 (I ≈ 5.8 nats, the high-MI regime).
* ``additive-noise-ε``: X ~ U(0, 1), Y = X + N, N ~ U(−ε, ε):
  I = ε − log(2ε) for ε ≤ ½ and 1/(4ε) for ε > ½.
* ``student-*``: multivariate Student-t with ν degrees of freedom and dispersion Σ;
  I = I_gauss(Σ) + c(ν, d_x, d_y) with the closed-form correction of
  :func:`student_t_correction`. With Σ = I all the MI comes from the correction.
* transforms that leave MI unchanged (a diffeomorphism applied to x and one applied to y):
  ``normal-cdf-*`` (Φ per coordinate, uniform margins), ``half-cube-*`` (t·|t|^½, long
  tails), ``asinh-*`` (shortens Student-t tails), ``spiral-*`` (rotation in one plane by an
  angle proportional to ‖v‖²).
* ``mixture-*``: y uniform on K labels, x | y ~ N(μ_y, I_d); I = E log p(x|y)/p(x) by
  Monte Carlo (2·10⁵ draws, fixed seed, standard error kept in ``mi_se``).

Plugins add tasks with the ``register_bench_tasks`` hook: build a :class:`BenchTask` and
call ``register(task)``. This module registers the built-in tasks that way itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

from mi_probe.hookspecs import hookimpl

#: sampler(n, rng) -> (x (n, d_x) float, y (n, d_y) float or (n,) int labels)
Sampler = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]

_MC_DRAWS = 200_000
_MC_SEED = 20231


@dataclass(frozen=True)
class BenchTask:
    """One benchmark task: a distribution of (x, y) with known I(x; y).

    Attributes:
        name: unique registry name, e.g. ``"gauss-dense-5x5"``.
        dim_x, dim_y: feature dimensions (dim_y = 1 for discrete labels).
        y_kind: ``"continuous"`` or ``"discrete"``.
        sampler: ``sampler(n, rng)`` returning x of shape (n, dim_x) and y of shape
            (n, dim_y), or (n,) integer labels when y_kind is discrete.
        mi: the true MI in nats, or a zero-argument callable returning (mi, standard
            error) for values computed numerically (called once, lazily).
        family: group name used in tables (``"gaussian"``, ``"student"``, ...).
        description: one line for ``mi-probe bench --list``.
    """

    name: str
    dim_x: int
    dim_y: int
    y_kind: str
    sampler: Sampler
    mi: float | Callable[[], tuple[float, float]]
    family: str = "other"
    description: str = ""

    @property
    def true_mi(self) -> float:
        """The true MI in nats."""
        return self._truth()[0]

    @property
    def mi_se(self) -> float:
        """Standard error of :attr:`true_mi` (0 for closed forms), nats."""
        return self._truth()[1]

    def _truth(self) -> tuple[float, float]:
        if callable(self.mi):
            return _cached_truth(self.mi)
        return float(self.mi), 0.0

    def sample(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Draw n samples with a seeded generator: x (n, dim_x), y (n, dim_y) or (n,)."""
        return self.sampler(int(n), np.random.default_rng(seed))


@functools.cache
def _cached_truth(fn: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    value, se = fn()
    return float(value), float(se)


# -- closed forms ------------------------------------------------------------------------
def gaussian_mi(cov: np.ndarray, dim_x: int) -> float:
    """I(X; Y) in nats of a joint Gaussian with covariance ``cov`` ((d_x+d_y)²), X first."""
    logdet = lambda m: np.linalg.slogdet(m)[1]  # noqa: E731
    return 0.5 * float(logdet(cov[:dim_x, :dim_x]) + logdet(cov[dim_x:, dim_x:]) - logdet(cov))


def student_t_entropy_offset(dim: int, df: float) -> float:
    """h(T) − ½ log det Σ for a d-dimensional Student-t with ν = ``df`` (nats)."""
    a, b = df / 2.0, (df + dim) / 2.0
    return (
        0.5 * dim * np.log(df * np.pi)
        + special.gammaln(a)
        - special.gammaln(b)
        + b * (special.digamma(b) - special.digamma(a))
    )


def student_t_correction(dim_x: int, dim_y: int, df: float) -> float:
    """c(ν, d_x, d_y) = I_t − I_gauss(Σ) for a multivariate Student-t (nats, ≥ 0).

    From h(T_d) = ½ log det Σ + offset(d, ν) and I = h(X) + h(Y) − h(X, Y), since the
    margins of a multivariate t are t with the same ν and the matching blocks of Σ.
    """
    return float(
        student_t_entropy_offset(dim_x, df)
        + student_t_entropy_offset(dim_y, df)
        - student_t_entropy_offset(dim_x + dim_y, df)
    )


def additive_noise_mi(eps: float) -> float:
    """I(X; X + N) for X ~ U(0, 1), N ~ U(−ε, ε) (nats)."""
    return eps - np.log(2 * eps) if eps <= 0.5 else 1.0 / (4 * eps)


# -- covariances -------------------------------------------------------------------------
def dense_cov(dim_x: int, dim_y: int, off_diag: float = 0.5) -> np.ndarray:
    """Unit variances, correlation ``off_diag`` between every pair of coordinates."""
    d = dim_x + dim_y
    return np.full((d, d), off_diag) + (1 - off_diag) * np.eye(d)


def pair_cov(dim_x: int, dim_y: int, n_pairs: int = 2, rho: float = 0.8) -> np.ndarray:
    """Identity except corr(x_i, y_i) = ρ for i < n_pairs ("2-pair" sparse interaction)."""
    cov = np.eye(dim_x + dim_y)
    for i in range(min(n_pairs, dim_x, dim_y)):
        cov[i, dim_x + i] = cov[dim_x + i, i] = rho
    return cov


# -- samplers ----------------------------------------------------------------------------
def _split(z: np.ndarray, dim_x: int) -> tuple[np.ndarray, np.ndarray]:
    return np.ascontiguousarray(z[:, :dim_x]), np.ascontiguousarray(z[:, dim_x:])


def gaussian_sampler(cov: np.ndarray, dim_x: int) -> Sampler:
    """Zero-mean Gaussian with covariance ``cov``, split into x (first dim_x) and y."""
    chol = np.linalg.cholesky(cov)

    def sample(n: int, rng: np.random.Generator):
        return _split(rng.standard_normal((n, cov.shape[0])) @ chol.T, dim_x)

    return sample


def student_sampler(cov: np.ndarray, dim_x: int, df: float) -> Sampler:
    """Multivariate Student-t: Gaussian(0, cov) / sqrt(χ²_ν / ν), split into x and y."""
    chol = np.linalg.cholesky(cov)

    def sample(n: int, rng: np.random.Generator):
        z = rng.standard_normal((n, cov.shape[0])) @ chol.T
        scale = np.sqrt(rng.chisquare(df, size=(n, 1)) / df)
        return _split(z / scale, dim_x)

    return sample


def additive_noise_sampler(eps: float) -> Sampler:
    """X ~ U(0, 1), Y = X + U(−ε, ε); both (n, 1)."""

    def sample(n: int, rng: np.random.Generator):
        x = rng.uniform(0.0, 1.0, size=(n, 1))
        return x, x + rng.uniform(-eps, eps, size=(n, 1))

    return sample


def mixture_means(n_classes: int, dim: int, scale: float, seed: int) -> np.ndarray:
    """K class means (K, d): seeded N(0, scale² I) draws."""
    return scale * np.random.default_rng(seed).standard_normal((n_classes, dim))


def mixture_sampler(means: np.ndarray) -> Sampler:
    """y uniform on K labels (n,) int64; x | y ~ N(μ_y, I), (n, d)."""

    def sample(n: int, rng: np.random.Generator):
        y = rng.integers(0, means.shape[0], size=n)
        return means[y] + rng.standard_normal((n, means.shape[1])), y.astype(np.int64)

    return sample


def mixture_mi_mc(means: np.ndarray, draws: int = _MC_DRAWS, seed: int = _MC_SEED):
    """Monte Carlo I(X; Y) for :func:`mixture_sampler` and its standard error (nats).

    I = E[log p(x|y) − log Σ_k p(x|k)/K]; shared identity covariance cancels the
    normalising constants, leaving squared distances.
    """
    x, y = mixture_sampler(means)(draws, np.random.default_rng(seed))
    sq = (x * x).sum(1)[:, None] - 2 * x @ means.T + (means * means).sum(1)[None, :]
    log_lik = -0.5 * sq
    terms = log_lik[np.arange(draws), y] - (special.logsumexp(log_lik, axis=1)
                                            - np.log(means.shape[0]))
    return float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(draws))


# -- MI-preserving transforms ------------------------------------------------------------
Transform = Callable[[np.ndarray], np.ndarray]


def normal_cdf(v: np.ndarray) -> np.ndarray:
    """Φ per coordinate: Gaussian margins become uniform on (0, 1)."""
    return special.ndtr(v)


def half_cube(v: np.ndarray) -> np.ndarray:
    """t ↦ t·|t|^½ per coordinate (long tails)."""
    return v * np.sqrt(np.abs(v))


def spiral(plane: tuple[int, int], speed: float) -> Transform:
    """Rotate each row v in ``plane`` by the angle speed·‖v‖² (norm-preserving, invertible)."""
    i, j = plane

    def apply(v: np.ndarray) -> np.ndarray:
        angle = speed * (v * v).sum(axis=1)
        c, s = np.cos(angle), np.sin(angle)
        out = v.copy()
        out[:, i] = c * v[:, i] - s * v[:, j]
        out[:, j] = s * v[:, i] + c * v[:, j]
        return out

    return apply


def transformed(base: BenchTask, prefix: str, fx: Transform, fy: Transform,
                description: str) -> BenchTask:
    """``base`` with x ↦ fx(x) and y ↦ fy(y); both are diffeomorphisms, so MI is unchanged."""

    def sample(n: int, rng: np.random.Generator):
        x, y = base.sampler(n, rng)
        return fx(x), fy(y)

    return BenchTask(f"{prefix}-{base.name}", base.dim_x, base.dim_y, base.y_kind, sample,
                     base.mi, family="transformed", description=f"{description} of {base.name}")


# -- the built-in suite -------------------------------------------------------------------
def gaussian_task(name: str, cov: np.ndarray, dim_x: int, description: str) -> BenchTask:
    """A correlated-Gaussian task with closed-form MI."""
    return BenchTask(name, dim_x, cov.shape[0] - dim_x, "continuous",
                     gaussian_sampler(cov, dim_x), gaussian_mi(cov, dim_x), "gaussian",
                     description)


def student_task(dim: int, df: float) -> BenchTask:
    """Student-t with identity dispersion: all of the MI is the closed-form correction."""
    cov = np.eye(2 * dim)
    return BenchTask(f"student-{dim}x{dim}-df{df:g}", dim, dim, "continuous",
                     student_sampler(cov, dim, df), student_t_correction(dim, dim, df),
                     "student", f"Student-t, ν = {df:g}, dispersion I (MI from tails only)")


def mixture_task(n_classes: int, dim: int, scale: float) -> BenchTask:
    """Discrete labels y ∈ {0..K−1}, x | y ~ N(μ_y, I); MI by Monte Carlo."""
    means = mixture_means(n_classes, dim, scale, seed=1000 * n_classes + dim)
    return BenchTask(f"mixture-{n_classes}class-{dim}d", dim, 1, "discrete",
                     mixture_sampler(means), functools.partial(mixture_mi_mc, means),
                     "mixture", f"{n_classes} Gaussian classes in {dim}-d, mean scale "
                     f"{scale:g}; MI by Monte Carlo")


def builtin_tasks() -> list[BenchTask]:
    """The built-in suite (about 40 tasks), in display order."""
    tasks = [gaussian_task("gauss-1x1", dense_cov(1, 1, 0.75), 1, "bivariate normal, ρ = 0.75")]
    for d in (2, 3, 5, 25, 50):
        tasks.append(gaussian_task(f"gauss-dense-{d}x{d}", dense_cov(d, d), d,
                                   "all correlations 0.5"))
    tasks.append(gaussian_task("gauss-strong-5x5", pair_cov(5, 5, 5, 0.95), 5,
                               "five correlated pairs, ρ = 0.95 (high MI)"))
    pairs = {d: gaussian_task(f"gauss-2pair-{d}x{d}", pair_cov(d, d), d,
                              "two correlated pairs, ρ = 0.8, rest independent")
             for d in (2, 3, 5, 25, 50)}
    tasks += pairs.values()
    for eps in (0.1, 0.75):
        tasks.append(BenchTask(f"additive-noise-{eps:g}", 1, 1, "continuous",
                               additive_noise_sampler(eps), additive_noise_mi(eps), "noise",
                               f"X ~ U(0,1), Y = X + U(-{eps:g}, {eps:g})"))
    students = {(d, df): student_task(d, df)
                for d, df in ((1, 1), (2, 1), (2, 2), (3, 2), (3, 3), (5, 2), (5, 3))}
    tasks += students.values()
    base_1x1 = tasks[0]
    tasks.append(transformed(base_1x1, "normal-cdf", normal_cdf, normal_cdf,
                             "uniform margins (normal CDF)"))
    tasks.append(transformed(base_1x1, "half-cube", half_cube, half_cube, "half-cube map"))
    for d in (3, 5, 25):
        tasks.append(transformed(pairs[d], "normal-cdf", normal_cdf, normal_cdf,
                                 "uniform margins (normal CDF)"))
        tasks.append(transformed(pairs[d], "half-cube", half_cube, half_cube,
                                 "half-cube map"))
        tasks.append(transformed(pairs[d], "spiral", spiral((0, 1), 1.0 / d),
                                 spiral((1, 2), 1.0 / d), "spiral (speed 1/d)"))
    for key in ((1, 1), (2, 1), (3, 2), (5, 2)):
        tasks.append(transformed(students[key], "asinh", np.arcsinh, np.arcsinh, "asinh"))
    for k, d, scale in ((2, 1, 1.0), (4, 5, 1.0), (10, 20, 0.6), (16, 50, 0.5)):
        tasks.append(mixture_task(k, d, scale))
    return tasks


@hookimpl
def register_bench_tasks(register):
    """Register the built-in suite through the same hook plugins use."""
    for task in builtin_tasks():
        register(task)
