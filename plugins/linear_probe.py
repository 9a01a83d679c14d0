"""Linear-probe estimate of predictive V-information (Xu, Zhao, Song, Stewart & Ermon 2020).

A probe from a simple family V is fitted on a training split to predict y from x; the
value is how much it lowers the held-out loss below the best predictor that ignores x:

    I_V(x → y) = H_V(y) − H_V(y | x)

Both terms are held-out losses of predictors fitted on the *same* training split, in nats:

* discrete y (labels): V = multinomial logistic regression on standardised x. H_V(y | x)
  is the probe's held-out cross-entropy; H_V(y) is the held-out cross-entropy of the
  training-split label frequencies (the best constant predictor, i.e. the plug-in entropy
  of the training labels scored on the held-out labels). Using the same split for both
  makes the value exactly 0 when the probe learns nothing beyond the class prior and lets
  split noise cancel. Probabilities are Laplace-smoothed, p ← (n_train·p + 1)/(n_train + K),
  so that labels absent from the training split keep a finite loss.
* continuous y (n, d_y): V = linear-Gaussian models. y is ridge-regressed on x; with E the
  held-out error second-moment matrix of a predictor,

      I = ½ log det E_null − ½ log det E_probe,

  E_null using the training mean of y and E_probe the ridge prediction. For jointly
  Gaussian (x, y) this converges to the Gaussian MI −½ log det(I − Σ_yy⁻¹ Σ_yx Σ_xx⁻¹ Σ_xy),
  which is the true MI; for other data it is the information a linear read-out recovers.

A probe can only underestimate what a better predictor would find: the value is a lower
bound on I(x; y) up to held-out noise. Raw values are floored at 0 (and, for labels,
capped at H_V(y)); the unclipped value is kept in ``extras["raw_value"]``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from mi_probe.data import Target
from mi_probe.errors import InputError
from mi_probe.estimator import Estimate, Estimator
from mi_probe.hookspecs import hookimpl
from mi_probe.params import Param

_MIN_SPLIT = 8


def split_sizes(n: int, test_fraction: float) -> tuple[int, int]:
    """(n_train, n_test) of :func:`holdout_split`: n_test = round(n · test_fraction),
    at least one sample on each side."""
    n_test = min(n - 1, max(1, int(round(n * test_fraction))))
    return n - n_test, n_test


def holdout_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of range(n) into sorted (train, test) index arrays."""
    n_test = split_sizes(n, test_fraction)[1]
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def split_min_samples(test_fraction: float) -> int:
    """Smallest n whose train and test parts both hold at least 8 samples."""
    smaller = min(test_fraction, 1.0 - test_fraction)
    return max(2 * _MIN_SPLIT, math.ceil(_MIN_SPLIT / smaller) + 1)


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Centre and scale columns by the training split's mean and std (std 0 → 1).

    train: (n_train, d); others: arrays (m, d) scaled with the same statistics.
    """
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [(a - mean) / std for a in (train, *others)]


def _logdet(m: np.ndarray, what: str) -> float:
    sign, logdet = np.linalg.slogdet(m)
    if sign <= 0 or not np.isfinite(logdet):
        raise InputError(
            f"the held-out {what} is singular: y has a constant or linearly dependent "
            "column on the test split (or fewer test samples than y dimensions); drop "
            "such columns or raise test_fraction"
        )
    return float(logdet)


def ridge_fit(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression with intercept: minimise mean ½‖y − xW − b‖² + ½·l2·‖W‖².

    x: (n, d), y: (n, d_y). Returns W (d, d_y) and b (d_y,).
    """
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    n = x.shape[0]
    gram = xc.T @ xc / n + l2 * np.eye(x.shape[1])
    rhs = xc.T @ yc / n
    try:
        w = np.linalg.solve(gram, rhs) if l2 > 0 else np.linalg.lstsq(gram, rhs, rcond=None)[0]
    except np.linalg.LinAlgError:
        w = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    return w, my - mx @ w


class LinearProbeEstimator(Estimator):
    """V-information of a linear probe (logistic for labels, linear-Gaussian otherwise)."""

    name = "linear-probe"
    description = (
        "V-information of a linear probe on a held-out split: H(y) − held-out cross-entropy "
        "(logistic, labels) or ½ log det ratio of held-out errors (ridge, continuous y)"
    )
    params = (
        Param("l2", float, 1e-4, "L2 penalty λ on the probe weights (mean loss + λ/2·‖W‖², "
              "x standardised)", low=0.0),
        Param("test_fraction", float, 0.3, "share of samples held out for the reported value",
              low=0.0, low_open=True, high=0.9),
        Param("max_iter", int, 500, "iteration limit of the logistic fit (labels only)", low=1),
        Param("seed", int, 0, "seed of the train/test split", low=0),
    )
    y_kinds = frozenset({"continuous", "discrete"})
    symmetric = False
    randomized = True

    def min_samples(self, params: dict[str, Any]) -> int:
        return split_min_samples(params["test_fraction"])

    def compute(self, x: np.ndarray, y: Target, params: dict[str, Any]) -> Estimate:
        return self.compute_layers([x], y, params)[0]

    def compute_layers(
        self, xs: Sequence[np.ndarray], y: Target, params: dict[str, Any]
    ) -> list[Estimate]:
        """One split and one null model for y, then one probe per x (n, d_l)."""
        train, test = holdout_split(y.n, params["test_fraction"], params["seed"])
        if y.kind == "discrete":
            null = _NullLabels(y.values[train], y.values[test], y.n_classes)
            return [self._discrete(x[train], x[test], null, params) for x in xs]
        y_tr, y_te = y.values[train].astype(np.float64), y.values[test].astype(np.float64)
        if y_te.shape[0] <= y_te.shape[1]:
            raise InputError(
                f"the test split has {y_te.shape[0]} samples for a {y_te.shape[1]}-dimensional "
                "y; the held-out covariance needs more samples than dimensions: raise n or "
                "test_fraction"
            )
        err_null = y_te - y_tr.mean(axis=0)
        logdet_null = _logdet(err_null.T @ err_null / len(y_te), "covariance of y")
        return [
            self._continuous(x[train], x[test], y_tr, y_te, err_null, logdet_null, params)
            for x in xs
        ]

    # -- continuous y: linear-Gaussian probe ---------------------------------------------
    def _continuous(self, x_tr, x_te, y_tr, y_te, err_null, logdet_null, params) -> Estimate:
        x_tr, x_te = standardize(x_tr.astype(np.float64), x_te.astype(np.float64))
        w, b = ridge_fit(x_tr, y_tr, params["l2"])
        err = y_te - (x_te @ w + b)
        logdet_res = _logdet(err.T @ err / len(y_te), "residual covariance")
        raw = 0.5 * (logdet_null - logdet_res)
        extras = {
            "raw_value_nats": raw,
            "r2": 1.0 - float((err**2).sum() / (err_null**2).sum()),
            "n_train": len(x_tr),
            "n_test": len(x_te),
        }
        return Estimate(max(raw, 0.0), _floor_notes(raw, None), extras)

    # -- discrete y: multinomial logistic probe ------------------------------------------
    def _discrete(self, x_tr, x_te, null: _NullLabels, params) -> Estimate:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        x_tr, x_te = standardize(x_tr.astype(np.float64), x_te.astype(np.float64))
        diagnostics: list[str] = []
        seen = np.flatnonzero(null.counts)
        proba = np.zeros((len(x_te), null.n_classes))
        if len(seen) < 2:
            proba[:, seen] = 1.0  # one class in training: the probe is the prior
        else:
            probe = LogisticRegression(C=1.0 / (max(params["l2"], 1e-12) * len(x_tr)),
                                       max_iter=params["max_iter"])
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                probe.fit(x_tr, null.y_train)
            if any(issubclass(w.category, ConvergenceWarning) for w in caught):
                diagnostics.append(
                    f"the logistic probe did not converge in max_iter={params['max_iter']} "
                    "iterations; raise max_iter or l2"
                )
            proba[:, probe.classes_] = probe.predict_proba(x_te)
        cross_entropy = null.cross_entropy(proba)
        raw = null.entropy - cross_entropy
        value = min(max(raw, 0.0), null.entropy)
        diagnostics += _floor_notes(raw, null.entropy) + null.notes
        extras = {
            "raw_value_nats": raw,
            "entropy_y_nats": null.entropy,
            "plugin_entropy_y_nats": null.plugin_entropy,
            "cross_entropy_nats": cross_entropy,
            "accuracy": float(np.mean(proba.argmax(axis=1) == null.y_test)),
            "null_accuracy": float(np.mean(null.y_test == int(np.argmax(null.counts)))),
            "n_train": len(x_tr),
            "n_test": len(x_te),
        }
        return Estimate(value, diagnostics, extras)


class _NullLabels:
    """The x-free predictor of labels: training-split frequencies, Laplace-smoothed.

    y_train, y_test: int codes in 0..n_classes-1.
    """

    def __init__(self, y_train: np.ndarray, y_test: np.ndarray, n_classes: int) -> None:
        self.y_train, self.y_test, self.n_classes = y_train, y_test, n_classes
        self.counts = np.bincount(y_train, minlength=n_classes)
        self.entropy = self.cross_entropy(self.counts[None, :] / len(y_train))
        freq = np.bincount(np.concatenate([y_train, y_test]), minlength=n_classes)
        p = freq[freq > 0] / freq.sum()
        self.plugin_entropy = float(-(p * np.log(p)).sum())
        self.notes: list[str] = []
        unseen = int(np.sum(self.counts[y_test] == 0))
        if unseen:
            self.notes.append(
                f"{unseen} held-out sample(s) have labels absent from the training split; "
                "their loss relies on smoothing (more samples per class help)"
            )
        if n_classes > len(y_train) / 10:
            self.notes.append(
                f"{n_classes} classes for {len(y_train)} training samples: the probe has "
                "few samples per class and underestimates the information"
            )

    def cross_entropy(self, proba: np.ndarray) -> float:
        """Held-out cross-entropy (nats) of smoothed probabilities proba (n_test or 1, K)."""
        n = len(self.y_train)
        rows = proba[np.arange(len(self.y_test)) % len(proba), self.y_test]
        return float(-np.mean(np.log((n * rows + 1.0) / (n + self.n_classes))))


def _floor_notes(raw: float, ceiling: float | None) -> list[str]:
    if raw < 0:
        return [f"the probe's held-out loss is above the x-free baseline: raw value "
                f"{raw:.4g} nats floored at 0 (no linearly decodable information, or an "
                "overfitted probe: raise l2 or n)"]
    if ceiling is not None and raw > ceiling:
        return [f"raw value {raw:.4g} nats capped at H(y) = {ceiling:.4g} nats"]
    return []


@hookimpl
def register_estimators(register):
    register(LinearProbeEstimator)
