"""Shared by the benchmark scripts: where results go and how they are written."""

from __future__ import annotations

import json
from pathlib import Path

#: Default folder of the scripts' JSON results (benchmarks/results/).
RESULTS = Path(__file__).resolve().parent / "results"


def write_record(record: dict, out: Path) -> None:
    """Write ``record`` to ``out`` as indented JSON (making its folder) and say where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
