"""mi-probe-gaussian: an example third-party mi-probe plugin (the Gaussian MI estimator).

For jointly Gaussian x (n, d_x) and y (n, d_y) the mutual information depends only on the
canonical correlations ρ_1..ρ_k between x and y (k = min(d_x, d_y)):

    I(x; y) = −½ Σ_i log(1 − ρ_i²)      (nats)

This estimator plugs in the canonical correlations of the sample covariance. It is exact
for Gaussian data up to sampling error in the covariance (for independent data it is
biased upward by about d_x·d_y / (2n) nats), and for other data it is the MI of the
Gaussian with the same covariance: a measure of linear dependence only.

Regularisation: ``ridge`` adds ridge × (mean variance) to the diagonal of each side's
covariance (needed when n ≤ d or features are collinear), and every ρ is clipped to
``max_rho`` < 1 so that the value stays finite; a diagnostic says when clipping happened.

The plugin contract in three parts: subclass :class:`mi_probe.Estimator`, implement
``compute`` returning an :class:`mi_probe.Estimate` in nats, and register the class from a
``register_estimators`` hook of a module listed in the ``mi_probe`` entry-point group
(see pyproject.toml). Only numpy is imported here; import heavy libraries inside
``compute`` so that ``mi-probe`` starts fast.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mi_probe import Estimate, Estimator, InputError, Param, hookimpl

__version__ = "0.1.0"


def canonical_correlations(x: np.ndarray, y: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    """Canonical correlations (descending, length min(d_x, d_y)) of x (n, d_x), y (n, d_y).

    They are the singular values of L_x⁻¹ Σ_xy L_y⁻ᵀ, with Σ the sample covariance
    (ridge-shrunk) and L its Cholesky factor.
    """
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    n = x.shape[0]
    cov_xy = xc.T @ yc / (n - 1)
    factors = []
    for side, name in ((xc, "x"), (yc, "y")):
        cov = side.T @ side / (n - 1)
        cov = cov + ridge * np.trace(cov) / len(cov) * np.eye(len(cov))
        try:
            factors.append(np.linalg.cholesky(cov))
        except np.linalg.LinAlgError:
            raise InputError(
                f"the sample covariance of {name} is singular (constant or collinear "
                f"features, or n = {n} too small for {len(cov)} dimensions); pass "
                "--param ridge=1e-3 (or drop those features)"
            ) from None
    lx, ly = factors
    whitened = np.linalg.solve(ly, np.linalg.solve(lx, cov_xy).T)
    return np.linalg.svd(whitened, compute_uv=False)


class GaussianEstimator(Estimator):
    """MI of the Gaussian with the sample covariance of (x, y), from canonical correlations."""

    name = "gaussian"
    description = (
        "Gaussian MI −½ Σ log(1 − ρᵢ²) from the canonical correlations of the sample "
        "covariance (exact for Gaussian data; linear dependence only otherwise)"
    )
    params = (
        Param("ridge", float, 0.0, "covariance shrinkage: ridge × mean variance is added to "
              "each diagonal", low=0.0),
        Param("max_rho", float, 0.999999, "canonical correlations are clipped to this",
              low=0.0, low_open=True, high=0.999999999),
    )
    y_kinds = frozenset({"continuous"})
    symmetric = True
    randomized = False

    def min_samples(self, params: dict[str, Any]) -> int:
        return 3

    def compute(self, x: np.ndarray, y: Any, params: dict[str, Any]) -> Estimate:
        rho = canonical_correlations(x.astype(np.float64), y.values.astype(np.float64),
                                     params["ridge"])
        clipped = int(np.sum(rho > params["max_rho"]))
        rho = np.clip(rho, 0.0, params["max_rho"])
        value = float(-0.5 * np.sum(np.log1p(-rho**2)))
        n, d_x, d_y = x.shape[0], x.shape[1], y.values.shape[1]
        notes = []
        if clipped:
            notes.append(
                f"{clipped} canonical correlation(s) were clipped at max_rho="
                f"{params['max_rho']}: (near-)deterministic linear dependence or a singular "
                "covariance; the value is a capped figure (try ridge > 0)"
            )
        if n < 10 * (d_x + d_y):
            notes.append(
                f"n = {n} is small for d_x + d_y = {d_x + d_y}: the sample canonical "
                "correlations are biased upward (raise n or ridge)"
            )
        extras = {
            "canonical_correlations": rho.tolist(),
            "clipped": clipped,
            "independence_bias_nats": d_x * d_y / (2.0 * n),
        }
        return Estimate(value, notes, extras)


@hookimpl
def register_estimators(register):
    register(GaussianEstimator)
