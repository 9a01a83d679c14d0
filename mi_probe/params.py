"""Declared estimator parameters: types, defaults, ranges, and parsing from strings.

Each estimator declares its parameters as a tuple of :class:`Param`. Values given in
Python or as ``key=value`` strings on the command line go through :func:`resolve_params`,
which rejects unknown names and bad values with a message listing what is valid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ParameterError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One estimator parameter.

    Attributes:
        name: the keyword name.
        kind: ``int``, ``float``, ``str`` or ``bool``.
        default: the value used when none is given (may be None when ``optional``).
        help: one line for users: meaning and unit.
        choices: allowed values for ``str`` parameters.
        words: extra string values a numeric parameter also accepts (e.g. ``"median"``
            for a kernel width chosen by rule).
        low, high: inclusive bounds for numeric values (``low_open`` makes ``low`` strict).
        optional: None is an allowed value.
    """

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    words: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    optional: bool = False

    def describe_type(self) -> str:
        """Short type description, e.g. ``float > 0 or 'median'``."""
        if self.choices:
            base = " | ".join(repr(c) for c in self.choices)
        else:
            base = self.kind.__name__
            if self.low is not None:
                base += f" {'>' if self.low_open else '>='} {self.low:g}"
            if self.high is not None:
                base += f" <= {self.high:g}"
        if self.words:
            base += " or " + " | ".join(repr(w) for w in self.words)
        if self.optional:
            base += " or None"
        return base

    def coerce(self, value: Any) -> Any:
        """Return ``value`` converted to this parameter's type, or raise ParameterError."""
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            if self.optional:
                return None
            raise self._bad(value)
        if isinstance(value, str) and value in self.words:
            return value
        try:
            if self.kind is bool:
                out = self._to_bool(value)
            elif self.kind is int:
                out = self._to_int(value)
            elif self.kind is float:
                out = float(value)
                if isinstance(value, bool) or not math.isfinite(out):
                    raise ValueError
            elif self.kind is str:
                if not isinstance(value, str):
                    raise ValueError
                out = value
            else:  # pragma: no cover - declared by plugin authors
                out = self.kind(value)
        except (TypeError, ValueError):
            raise self._bad(value) from None
        if self.choices is not None and out not in self.choices:
            raise self._bad(value)
        if self.kind in (int, float):
            if self.low is not None and (out < self.low or (self.low_open and out == self.low)):
                raise self._bad(value)
            if self.high is not None and out > self.high:
                raise self._bad(value)
        return out

    @staticmethod
    def _to_bool(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError

    @staticmethod
    def _to_int(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        if hasattr(value, "__index__"):
            return int(value.__index__())
        raise ValueError

    def _bad(self, value: Any) -> ParameterError:
        return ParameterError(
            f"bad value {value!r} for parameter {self.name!r}: expected {self.describe_type()}"
        )


def resolve_params(
    estimator_name: str, declared: Iterable[Param], given: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge ``given`` over the declared defaults, validating names and values."""
    declared = tuple(declared)
    by_name = {p.name: p for p in declared}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        valid = ", ".join(
            f"{p.name} ({p.describe_type()}, default {p.default!r})" for p in declared
        )
        raise ParameterError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for estimator "
            f"{estimator_name!r}; valid parameters: {valid or 'none'}"
        )
    out = {p.name: p.default for p in declared}
    for key, value in given.items():
        out[key] = by_name[key].coerce(value)
    return out


def parse_key_values(items: Iterable[str]) -> dict[str, str]:
    """Parse CLI ``key=value`` strings into a dict (values stay strings)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParameterError(f"bad --param {item!r}: expected key=value, e.g. --param k=3")
        out[key] = value.strip()
    return out
