"""Turning user input (numpy arrays, torch tensors, lists) into validated estimator input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

Y_KINDS = ("continuous", "discrete")


def to_numpy(a: Any, name: str) -> np.ndarray:
    """Convert a numpy array, torch tensor or nested list to a numpy array."""
    if type(a).__module__.startswith("torch"):
        a = a.detach().to("cpu")
        if str(a.dtype) in ("torch.bfloat16", "torch.float16"):
            a = a.float()
        a = a.numpy()
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"{name} could not be read as an array: {exc}") from None
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise InputError(
            f"{name} must be numeric, got dtype {arr.dtype}; convert text or mixed data to "
            "numbers first"
        )
    if np.iscomplexobj(arr):
        raise InputError(f"{name} is complex-valued; mutual information needs real data")
    return arr


def as_matrix(a: Any, name: str = "x") -> np.ndarray:
    """Validate a sample matrix and return it as float (n, d).

    A 1-D array is one feature per sample, shape (n, 1). float32 input stays float32;
    everything else becomes float64.
    """
    arr = to_numpy(a, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InputError(
            f"{name} must have shape (n_samples, n_features), got an array of shape "
            f"{arr.shape}; reshape it, e.g. x.reshape(len(x), -1)"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} is empty (shape {arr.shape})")
    arr = arr.astype(np.float32 if arr.dtype == np.float32 else np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise InputError(
            f"{name} contains NaN or inf in {len(rows)} sample(s) (first at row {rows[0]}); "
            "drop or impute those rows"
        )
    return arr


@dataclass
class Target:
    """The y side of an estimate.

    Attributes:
        values: (n, d_y) float array for continuous y; (n,) int64 codes 0..k-1 for
            discrete y.
        kind: "continuous" or "discrete".
        n_classes: number of distinct labels (discrete only).
        labels: the original label values, indexed by code (discrete only).
    """

    values: np.ndarray
    kind: str
    n_classes: int = 0
    labels: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        return 1 if self.kind == "discrete" else int(self.values.shape[1])

    def take(self, idx: np.ndarray) -> Target:
        """The subset of samples ``idx`` (discrete codes are re-numbered)."""
        if self.kind == "continuous":
            return Target(self.values[idx], "continuous")
        return as_target(self.labels[self.values[idx]], "discrete", name="y")


def as_target(y: Any, kind: str | None = None, name: str = "y") -> Target:
    """Validate y. Without ``kind``: integer or bool 1-D arrays are discrete labels,
    anything else continuous."""
    arr = to_numpy(y, name)
    if kind is not None and kind not in Y_KINDS:
        raise InputError(f"y_kind must be one of {Y_KINDS}, got {kind!r}")
    integral = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)
    if kind is None:
        kind = "discrete" if (arr.ndim == 1 and integral) else "continuous"
    if kind == "discrete":
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise InputError(
                f"discrete {name} must be a 1-D array of labels, got shape {arr.shape}"
            )
        if not integral:
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise InputError(
                    f"discrete {name} must hold integer labels; got non-integer values"
                )
        if arr.shape[0] == 0:
            raise InputError(f"{name} is empty")
        labels, codes = np.unique(arr, return_inverse=True)
        return Target(codes.astype(np.int64), "discrete", len(labels), labels)
    return Target(as_matrix(arr, name), "continuous")


def check_pair(x: np.ndarray, y: Target, min_samples: int, estimator: str) -> None:
    """Check that x and y agree in n and that n is large enough for the estimator."""
    if x.shape[0] != y.n:
        raise InputError(
            f"x and y must have the same number of samples: x has {x.shape[0]}, y has {y.n}"
        )
    if x.shape[0] < min_samples:
        raise InputError(
            f"estimator {estimator!r} needs at least {min_samples} samples with these "
            f"parameters, got {x.shape[0]}"
        )
