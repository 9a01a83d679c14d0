"""The estimator contract that every built-in and plugin estimator implements.

Write an estimator by subclassing :class:`Estimator`, declaring ``name``, ``description``
and ``params``, and implementing :meth:`Estimator.compute`. Register it from a plugin
module with the ``register_estimators`` hook (see docs/plugins.md). The library validates
input and parameters, converts units, times the call and builds the :class:`MIResult`;
``compute`` only sees clean float arrays and a validated parameter dict, and returns an
:class:`Estimate` in nats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .data import Target
from .params import Param


@dataclass
class Estimate:
    """What :meth:`Estimator.compute` returns: a value in nats plus context.

    Attributes:
        value: the MI estimate in nats.
        diagnostics: warnings for the user (plain sentences).
        extras: further numbers. Keys ending in ``_nats`` are converted with the unit
            (and renamed without the suffix) when the user asks for bits.
    """

    value: float
    diagnostics: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


class Estimator:
    """Base class of MI estimators.

    Class attributes:
        name: registry name (lower case, dashes allowed), e.g. ``"renyi"``.
        description: one line for ``mi-probe estimators``.
        params: declared parameters (see :class:`mi_probe.params.Param`).
        y_kinds: which targets it accepts: "continuous", "discrete" or both.
        symmetric: I(x; y) == I(y; x) exactly, for continuous x and y.
        randomized: uses a ``seed`` parameter; the same seed gives the same value.
        independence_tolerance: |value| allowed on independent data at n = 500 in the
            conformance check (nats). Estimators with a positive bias at finite n (kernel
            estimators) declare a larger tolerance there and document it.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    y_kinds: ClassVar[frozenset[str]] = frozenset({"continuous", "discrete"})
    symmetric: ClassVar[bool] = False
    randomized: ClassVar[bool] = False
    independence_tolerance: ClassVar[float] = 0.05

    def min_samples(self, params: dict[str, Any]) -> int:
        """Smallest n for which ``compute`` is meaningful with these parameters."""
        return 2

    def check_params(self, params: dict[str, Any], x: np.ndarray, y: Target) -> None:
        """Raise ParameterError/InputError for combinations that ``Param`` cannot express."""

    def compute(self, x: np.ndarray, y: Target, params: dict[str, Any]) -> Estimate:
        """Estimate I(x; y) in nats. x: (n, d_x) float; y: validated target."""
        raise NotImplementedError

    def compute_layers(
        self, xs: Sequence[np.ndarray], y: Target, params: dict[str, Any]
    ) -> list[Estimate]:
        """Estimate I(x_l; y) for each x_l in ``xs`` (one target, many layers).

        The default loops over :meth:`compute`; override it to do the work that depends
        only on y (a Gram matrix, a neighbour structure, an entropy) once.
        """
        return [self.compute(x, y, params) for x in xs]
