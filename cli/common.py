"""Shared pieces of the CLI: consoles, error handling, rendering helpers."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from mi_probe.errors import MIProbeError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> None:
    """Print one readable error line to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def friendly_errors(func: F) -> F:
    """Turn MIProbeError (and Ctrl-C) into one message and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MIProbeError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            err_console.print("interrupted; finished results are kept")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
