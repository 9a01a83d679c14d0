"""Results of a probing run: rows, the ridge layer, and their files (written atomically).

Files in a run's output directory:

- ``results.csv``: one row per (checkpoint, layer, quantity, estimator). ``layer`` is
  ``0``..``L`` (0 = embedding output, l = output of block l) or ``final_norm`` (the state
  after the model's final norm); ``layer_index`` is the same as an integer, with
  ``final_norm`` = L + 1, for sorting and plotting. ``quantity`` is ``predictive``
  (I(Z_l; Y)) or ``incremental`` (I(ΔZ_l; Y), layers 1..L). With several seeds, ``value``
  is the mean over seeds and ``std``, ``min``, ``max`` (over seeds) are added. With a
  shuffle baseline (``--null P``), ``null_mean``, ``null_sd`` (over the shuffles of y),
  ``excess`` (value − null_mean) and ``p_value`` are added (see
  :func:`mi_probe.uncertainty.pool_nulls`).
  Multi-token runs (``steps`` T > 1) add ``step`` rows, I(Z_l^(t); Y_t) for generation step
  ``t`` = 1..T (a ``t`` column), and ``sequence`` rows (the sequence kernel, estimators that
  have one); ``predictive`` and ``incremental`` stay the first-token quantities.
- ``ridge.csv``: per checkpoint and estimator, the ridge layer argmax_l I(Z_l; Y) over the
  layers 0..L (the final-norm entry is not a layer and is not a candidate) and its value;
  with a shuffle baseline also the layer and value of the largest excess over the null.
- ``run.json``: provenance (see :mod:`mi_probe.probe`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import FileFormatError

FINAL_NORM = "final_norm"
QUANTITIES = ("predictive", "incremental", "step", "sequence")
RESULTS_FILE, RIDGE_FILE, RUN_FILE = "results.csv", "ridge.csv", "run.json"
SPREAD_COLUMNS = ("std", "min", "max")
NULL_COLUMNS = ("null_mean", "null_sd", "excess", "p_value")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@dataclass
class ResultRow:
    """One value of results.csv (see module doc for the columns)."""

    checkpoint: str
    step: int | None
    layer: str
    layer_index: int
    quantity: str
    estimator: str
    value: float
    unit: str
    n: int
    seeds: int = 1
    std: float | None = None
    min: float | None = None
    max: float | None = None
    seconds: float = 0.0
    t: int | None = None
    null_mean: float | None = None
    null_sd: float | None = None
    excess: float | None = None
    p_value: float | None = None


@dataclass
class RidgeRow:
    """One line of ridge.csv: the layer with the most predictive information."""

    checkpoint: str
    step: int | None
    estimator: str
    ridge_layer: int
    ridge_value: float
    num_layers: int
    unit: str
    excess_ridge_layer: int | None = None
    excess_ridge_value: float | None = None


def layer_name(index: int, num_layers: int) -> str:
    """"0".."L" for blocks, "final_norm" for index L + 1."""
    return FINAL_NORM if index == num_layers + 1 else str(index)


def ridge_rows(rows: list[ResultRow]) -> list[RidgeRow]:
    """The ridge layer per (checkpoint, estimator), from the predictive rows."""
    best: dict[tuple[str, str], ResultRow] = {}
    depth: dict[tuple[str, str], int] = {}
    for r in rows:
        if r.quantity != "predictive" or r.layer == FINAL_NORM:
            continue
        key = (r.checkpoint, r.estimator)
        depth[key] = max(depth.get(key, 0), r.layer_index)
        if key not in best or r.value > best[key].value:
            best[key] = r
    out = [RidgeRow(r.checkpoint, r.step, r.estimator, r.layer_index, r.value, depth[k], r.unit)
           for k, r in best.items()]
    for ridge in out:
        with_null = [r for r in rows if r.quantity == "predictive" and r.layer != FINAL_NORM
                     and (r.checkpoint, r.estimator) == (ridge.checkpoint, ridge.estimator)
                     and r.excess is not None]
        if with_null:
            top = max(with_null, key=lambda r: r.excess)
            ridge.excess_ridge_layer, ridge.excess_ridge_value = top.layer_index, top.excess
    return out


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(binary_file)`` on a temporary file, fsync it, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _csv_text(records: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for rec in records:
        w.writerow({k: ("" if rec.get(k) is None else rec[k]) for k in columns})
    return buf.getvalue()


def result_columns(rows: list[ResultRow]) -> list[str]:
    """results.csv columns: spread columns only with several seeds, t only with steps."""
    cols = [f.name for f in fields(ResultRow)]
    if not any(r.seeds > 1 for r in rows):
        cols = [c for c in cols if c not in SPREAD_COLUMNS]
    if not any(r.t is not None for r in rows):
        cols.remove("t")
    if not any(r.null_mean is not None for r in rows):
        cols = [c for c in cols if c not in NULL_COLUMNS]
    return cols


def write_results(out_dir: str | Path, rows: list[ResultRow]) -> None:
    """Write results.csv and ridge.csv atomically."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / RESULTS_FILE,
                      _csv_text([asdict(r) for r in rows], result_columns(rows)))
    ridge = ridge_rows(rows)
    ridge_cols = [f.name for f in fields(RidgeRow)]
    if all(r.excess_ridge_layer is None for r in ridge):
        ridge_cols = ridge_cols[:-2]
    atomic_write_text(out_dir / RIDGE_FILE, _csv_text([asdict(r) for r in ridge], ridge_cols))


_INT_COLUMNS = ("step", "layer_index", "n", "seeds", "t")
_FLOAT_COLUMNS = ("value", "std", "min", "max", "seconds") + NULL_COLUMNS


def _parse(column: str, value: str) -> Any:
    if value == "":
        return None
    if column in _INT_COLUMNS:
        return int(value)
    if column in _FLOAT_COLUMNS:
        return float(value)
    return value


def read_results(out_dir: str | Path) -> list[ResultRow]:
    """Rows of ``out_dir/results.csv``."""
    path = Path(out_dir) / RESULTS_FILE
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file; run `mi-probe estimate ... --out "
                              f"{Path(out_dir)}` first")
    names = {f.name for f in fields(ResultRow)}
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = {"checkpoint", "layer", "quantity", "estimator", "value"} - set(
                reader.fieldnames or [])
            if missing:
                raise FileFormatError(f"{path} lacks the column(s) {sorted(missing)}")
            return [ResultRow(**{k: _parse(k, v) for k, v in rec.items() if k in names})
                    for rec in reader]
    except (ValueError, TypeError) as exc:
        raise FileFormatError(f"{path} could not be read: {exc}") from None


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """The JSON object in ``path``, or FileFormatError."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"{path} could not be read as JSON: {exc}") from None


@dataclass
class ProbeResults:
    """What :func:`mi_probe.probe` returns (and ``mi-probe report`` reads back).

    Attributes:
        rows: every value, as in results.csv.
        run: the provenance of run.json (config, data, checkpoints, timings).
        out_dir: the directory holding the files, or None.
    """

    rows: list[ResultRow]
    run: dict[str, Any]
    out_dir: Path | None = None

    @classmethod
    def load(cls, out_dir: str | Path) -> ProbeResults:
        """Read results.csv and run.json of a finished (or partial) run."""
        out_dir = Path(out_dir)
        run_path = out_dir / RUN_FILE
        run = read_json(run_path) if run_path.is_file() else {}
        return cls(read_results(out_dir), run, out_dir)

    @property
    def ridge(self) -> list[RidgeRow]:
        """The ridge layer per (checkpoint, estimator)."""
        return ridge_rows(self.rows)

    @property
    def checkpoints(self) -> list[str]:
        """Checkpoint names in run order."""
        return list(dict.fromkeys(r.checkpoint for r in self.rows))

    @property
    def estimators(self) -> list[str]:
        return list(dict.fromkeys(r.estimator for r in self.rows))

    @property
    def failed(self) -> dict[str, str]:
        """Checkpoints that could not be loaded -> the reason."""
        return {c["name"]: c["error"] for c in self.run.get("checkpoints", [])
                if c.get("status") == "failed"}

    def select(self, checkpoint: str | None = None, estimator: str | None = None,
               quantity: str | None = "predictive") -> list[ResultRow]:
        """Rows matching the given fields (None matches anything), by layer index."""
        out = [r for r in self.rows
               if (checkpoint is None or r.checkpoint == checkpoint)
               and (estimator is None or r.estimator == estimator)
               and (quantity is None or r.quantity == quantity)]
        return sorted(out, key=lambda r: r.layer_index)

    def values(self, checkpoint: str, estimator: str, quantity: str = "predictive",
               final_norm: bool = False) -> dict[str, float]:
        """layer name -> value for one curve (the final-norm entry only if asked)."""
        return {r.layer: r.value for r in self.select(checkpoint, estimator, quantity)
                if final_norm or r.layer != FINAL_NORM}

    def ridge_layer(self, checkpoint: str, estimator: str) -> int:
        """argmax over layers 0..L of I(Z_l; Y) for one checkpoint and estimator."""
        for r in self.ridge:
            if r.checkpoint == checkpoint and r.estimator == estimator:
                return r.ridge_layer
        raise KeyError(f"no predictive results for {checkpoint!r} with {estimator!r}")
