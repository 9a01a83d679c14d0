"""How much memory a job may use, and a readable refusal when it would not fit.

The budget is, in order: the ``MI_PROBE_MEMORY_LIMIT`` environment variable (bytes, or a
size such as ``"6G"``, ``"512M"``), else ``MemAvailable`` from /proc/meminfo (Linux), else
the physical memory reported by ``os.sysconf``. Estimators predict their peak use before
allocating and either choose a leaner method or raise :class:`ResourceError` saying what
to change.
"""

from __future__ import annotations

import os
import re

from .errors import ParameterError, ResourceError

ENV_LIMIT = "MI_PROBE_MEMORY_LIMIT"
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
GiB = float(2**30)


def parse_size(text: str) -> int:
    """Bytes in a size such as ``"123456"``, ``"512M"``, ``"6G"`` or ``"1.5GiB"``."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ParameterError(
            f"cannot read the memory size {text!r}; write bytes or a number with K, M, G or "
            "T, e.g. 6G"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _physical() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def memory_budget() -> tuple[int | None, str]:
    """(bytes a job may use, where that number comes from); bytes None when unknown."""
    env = os.environ.get(ENV_LIMIT)
    if env:
        return parse_size(env), f"{ENV_LIMIT}={env}"
    avail = _meminfo_available()
    if avail is not None:
        return avail, "available memory (/proc/meminfo)"
    phys = _physical()
    return phys, "physical memory"


def format_bytes(n: float) -> str:
    """``n`` bytes as "1.5 GiB" or "12.3 MiB"."""
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / 2**20:.1f} MiB"


def fits(need_bytes: float) -> bool:
    """Whether ``need_bytes`` fit in the budget (True when the budget is unknown)."""
    have, _ = memory_budget()
    return have is None or need_bytes <= have


def require(need_bytes: float, what: str, advice: str) -> None:
    """Raise ResourceError unless ``need_bytes`` fit in the budget.

    Args:
        need_bytes: the predicted peak.
        what: what needs it, e.g. "renyi at n = 16384 (3 float64 n×n matrices)".
        advice: what the user can change, e.g. "pass approx=on or precision=float32".
    """
    have, source = memory_budget()
    if have is not None and need_bytes > have:
        raise ResourceError(
            f"{what} needs about {format_bytes(need_bytes)} but {format_bytes(have)} are "
            f"available ({source}); {advice}"
        )
