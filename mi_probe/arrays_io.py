"""Reading sample arrays from .npy, .npz (one array), .csv and .pt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import FileFormatError

SUFFIXES = (".npy", ".npz", ".csv", ".pt", ".pth")


def load_array(path: str | Path) -> np.ndarray:
    """Load one array from a file; raise FileFormatError saying what is wrong.

    .pt/.pth files are read with ``torch.load(weights_only=True)`` and must hold a single
    tensor. .csv files are numeric, comma-separated, with an optional header row.
    """
    p = Path(path)
    if not p.exists():
        raise FileFormatError(f"{p}: no such file")
    if p.is_dir():
        raise FileFormatError(f"{p} is a directory; give an array file ({', '.join(SUFFIXES)})")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.keys())
                if len(keys) != 1:
                    raise FileFormatError(
                        f"{p} holds {len(keys)} arrays ({', '.join(keys) or 'none'}); "
                        "save exactly one array per .npz file"
                    )
                return z[keys[0]]
        if suffix == ".csv":
            return _load_csv(p)
        if suffix in (".pt", ".pth"):
            import torch

            obj = torch.load(p, map_location="cpu", weights_only=True)
            if not isinstance(obj, torch.Tensor):
                raise FileFormatError(f"{p} holds a {type(obj).__name__}, not a single tensor")
            return obj.numpy() if obj.dtype not in (torch.bfloat16, torch.float16) \
                else obj.float().numpy()
    except FileFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a file problem
        raise FileFormatError(f"{p} could not be read as {suffix}: {exc}") from None
    raise FileFormatError(f"{p}: unsupported file type {suffix!r}; use one of {SUFFIXES}")


def _load_csv(p: Path) -> np.ndarray:
    text = p.read_text().splitlines()
    rows = [line for line in text if line.strip()]
    if not rows:
        raise FileFormatError(f"{p} is empty")
    skip = 0
    try:
        [float(v) for v in rows[0].split(",")]
    except ValueError:
        skip = 1  # header row
    try:
        arr = np.loadtxt(p, delimiter=",", skiprows=skip, ndmin=2)
    except ValueError as exc:
        raise FileFormatError(f"{p} is not a numeric CSV: {exc}") from None
    if arr.shape[1] == 1:
        col = arr[:, 0]
        return col.astype(np.int64) if np.all(col == np.round(col)) and \
            _looks_integer(rows[skip:]) else col
    return arr


def _looks_integer(rows: list[str]) -> bool:
    return all("." not in r and "e" not in r.lower() for r in rows)
