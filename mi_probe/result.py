"""`MIResult`: what every estimate returns."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

NATS_PER_BIT = math.log(2.0)
UNITS = ("nats", "bits")


def convert_unit(value_nats: float, unit: str) -> float:
    """Convert a value in nats to ``unit`` ("nats" or "bits")."""
    if unit == "nats":
        return value_nats
    if unit == "bits":
        return value_nats / NATS_PER_BIT
    raise ValueError(f"unknown unit {unit!r}; use one of {UNITS}")


@dataclass
class MIResult:
    """One mutual-information estimate.

    Attributes:
        value: the estimate, in ``unit``.
        unit: "nats" (default) or "bits".
        estimator: registered name of the estimator that produced it.
        params: the estimator's full parameter set (defaults filled in).
        n: number of samples used.
        d_x, d_y: feature dimensions of x and y (d_y = 1 for discrete labels).
        y_kind: "continuous" or "discrete".
        seconds: wall time of the estimate.
        diagnostics: human-readable warnings about how far to trust the value.
        ci: optional (low, high) confidence interval, in ``unit``.
        replicates: optional per-replicate values (seeds, subsamples), in ``unit``.
        extras: estimator-specific numbers (entropies, probe accuracy, p-values, ...);
            quantities measured in information units are in ``unit`` too.
    """

    value: float
    unit: str
    estimator: str
    params: dict[str, Any]
    n: int
    d_x: int
    d_y: int
    y_kind: str
    seconds: float
    diagnostics: list[str] = field(default_factory=list)
    ci: tuple[float, float] | None = None
    replicates: list[float] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        out = asdict(self)
        if self.ci is not None:
            out["ci"] = list(self.ci)
        return out

    def __float__(self) -> float:
        return float(self.value)
