"""Scoring an estimate against the true MI, as in "Beyond Normal" (Czyż et al. 2023).

The score is the log-ratio log(estimate / truth): 0 is exact, −0.69 is half the truth.
A task counts as *solved* when the estimate is within a factor of 1.5 of the truth
(|log-ratio| ≤ log 1.5 ≈ 0.405). Zero or negative estimates have no log-ratio and are
never solved.
"""

from __future__ import annotations

import math

SOLVED_FACTOR = 1.5


def log_ratio(estimate: float, truth: float) -> float | None:
    """log(estimate / truth), or None when either is not positive."""
    if not (estimate > 0 and truth > 0) or not math.isfinite(estimate):
        return None
    return math.log(estimate / truth)


def is_solved(estimate: float, truth: float, factor: float = SOLVED_FACTOR) -> bool:
    """True when ``estimate`` is within a factor ``factor`` of ``truth`` (both nats)."""
    lr = log_ratio(estimate, truth)
    return lr is not None and abs(lr) <= math.log(factor)
