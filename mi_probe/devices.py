"""Choosing the torch device: one rule for every command and estimator."""

from __future__ import annotations

from typing import Any

from .errors import ParameterError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: Any = "auto") -> Any:
    """A ``torch.device`` for ``"auto"`` (CUDA when available, else CPU), ``"cpu"``,
    ``"cuda"`` or ``"cuda:N"``; asking for CUDA without one is a ParameterError."""
    import torch

    if isinstance(device, torch.device):
        dev = device
    elif device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        if not isinstance(device, str) or not (device in DEVICES or device.startswith("cuda:")):
            raise ParameterError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
        dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(
            "device 'cuda' was asked for but no CUDA device is available; use cpu or auto"
        )
    return dev
