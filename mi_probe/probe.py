"""The probing pipeline behind ``mi-probe estimate`` and :func:`probe`.

For each checkpoint (in step order): load it, read the probe data with its tokenizer,
extract the residual stream with lean hooks (:mod:`mi_probe.extract`), cache the states on
disk, estimate I(Z_l; Y) (``predictive``, layers 0..L and the final norm) and I(ΔZ_l; Y)
(``incremental``, blocks 1..L) with every estimator on every seed's subsample, and write the
checkpoint's results atomically before moving on. A checkpoint that cannot be loaded is
reported and skipped. A second run with the same ``out`` directory reuses every finished
(checkpoint, estimator) result and every cached state, so an interrupted run resumes where
it stopped and a run with another estimator does not run the model again.

Definitions (defaults follow the InfoRidge paper):

- Z_l: residual stream of the last prompt token after block l (l = 0: embedding output),
  or the mean over the prompt's tokens (``pooling="mean"``); ``final_norm``: the state after
  the model's final norm. ΔZ_l = Z_l − Z_{l−1} (raw states, before normalisation).
- Y: the target token's row of the input embedding matrix (``target="embedding"``), of the
  unembedding (``"unembedding"``), or its token id as a discrete label (``"token-id"``).
- Rows of Z, ΔZ and continuous Y are l2-normalised unless ``normalize=False``.
- Multi-token (``steps`` T > 1): the model reads the prompt and the first T − 1 target
  tokens (teacher forcing); Z_l^(t) is the state at the token that predicts target token t,
  Y_t that token's row. ``step`` rows hold I(Z_l^(t); Y_t) for t = 1..T (t = 1 is the
  ``predictive`` value), ``sequence`` rows the sequence-level MI whose kernel between two
  samples is the mean pairwise kernel between their T per-step states (estimators with a
  ``compute_sequence_layers`` method: renyi).
- Seeds: the probe set holds ``samples × seeds`` examples (fewer if the data has fewer),
  shuffled with ``seed``; replicate k uses ``samples`` consecutive examples of that order
  starting at k·(pool − samples)/(seeds − 1), so replicates are disjoint when the data
  suffices. ``value`` is the mean over replicates.
"""

from __future__ import annotations

import gc
import hashlib
import json
import platform
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError, FileFormatError, InputError, ParameterError
from .probe_results import (
    FINAL_NORM,
    RESULTS_FILE,
    RIDGE_FILE,
    RUN_FILE,
    ProbeResults,
    ResultRow,
    atomic_write,
    layer_name,
    read_json,
    write_json,
    write_results,
)
from .result import convert_unit
from .uncertainty import pool_nulls

TARGETS = ("embedding", "unembedding", "token-id")
STATES_FORMAT = 1  # bump when the cached states' layout or meaning changes
_OWN_OUTPUTS = (RESULTS_FILE, RIDGE_FILE, RUN_FILE, "log.jsonl", "parts", "cache", "figures")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                    "tokenizer.model", "special_tokens_map.json")


@dataclass
class ProbeConfig:
    """Everything that decides what a probing run measures and how.

    Attributes:
        estimators: registered estimator names; all run on the same extracted states.
        params: estimator parameters, ``{estimator: {name: value}}``.
        data: a JSONL probe-data file (see :mod:`mi_probe.probe_data`), or None for the
            built-in English text (``pydoc_data.topics``).
        samples: examples per estimate (per seed).
        seed: seed of the data subset, text positions and replicate order.
        seeds: number of replicates K (disjoint subsamples when the data suffices).
        context: for text data, the most prompt tokens before a sampled position.
        pooling: "last" (last prompt token) or "mean" (mean over prompt tokens).
        target: Y: "embedding" (input-embedding row), "unembedding" (LM-head row) or
            "token-id" (discrete label).
        normalize: l2-normalise rows of Z, ΔZ and continuous Y (estimators that declare a
            ``normalize`` parameter get this value unless it is given in ``params``).
        incremental: also estimate I(ΔZ_l; Y) for blocks 1..L.
        final_norm: also estimate for the post-final-norm state.
        unit: "nats" or "bits".
        device: "auto", "cpu" or "cuda" for the model (and for estimators that declare a
            ``device`` parameter, unless given in ``params``).
        dtype: model dtype: "auto" (float32 on CPU, where half-precision matmuls are slow
            and GGUF weights are dequantised anyway; the checkpoint's own on CUDA),
            "float32", "bfloat16", "float16".
        batch_size: sequences per forward pass.
        padding_side: "right" or "left" (results agree to float rounding).
        blocks: dotted path of the block list, overriding the adapter (e.g. "model.layers").
        trust_remote_code: allow a checkpoint's own modelling code.
        plots: write PNG figures at the end.
        steps: T, the target tokens per example for multi-token probing (1: the next
            token only; see the module doc).
        null: P > 0 re-estimates every layer with y shuffled P times (the same shuffles
            for all layers) and adds the null mean and spread, the excess over the null
            and a p-value to each row (see :func:`mi_probe.uncertainty.pool_nulls`).
    """

    estimators: tuple[str, ...] = ("renyi",)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: str | None = None
    samples: int = 1000
    seed: int = 0
    seeds: int = 1
    context: int = 64
    pooling: str = "last"
    target: str = "embedding"
    normalize: bool = True
    incremental: bool = True
    final_norm: bool = True
    unit: str = "nats"
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 16
    padding_side: str = "right"
    blocks: str | None = None
    trust_remote_code: bool = False
    plots: bool = True
    steps: int = 1
    null: int = 0


@dataclass
class ProbeEvent:
    """A progress report. ``kind``: found, checkpoint, loaded, extract, estimate, done,
    reused, failed, note. ``done``/``total`` count sequences (extract) or layer estimates
    (estimate); ``index`` is the checkpoint's position (0-based) among ``checkpoints``."""

    kind: str
    index: int = 0
    checkpoints: int = 0
    name: str = ""
    done: int = 0
    total: int = 0
    message: str = ""


Progress = Callable[[ProbeEvent], None]


def default_out_dir(path: str | Path) -> Path:
    """``mi-probe-out/<name of the checkpoint path>`` in the working directory."""
    return Path("mi-probe-out") / _safe(Path(path).expanduser().resolve().name or "run")


def replicate_indices(pool: int, samples: int, seeds: int, seed: int) -> list[np.ndarray]:
    """Example indices of each replicate (see module doc): ``seeds`` windows of
    ``min(samples, pool)`` consecutive entries of a seeded permutation of ``range(pool)``."""
    perm = np.random.default_rng(seed).permutation(pool) if seeds > 1 else np.arange(pool)
    n = min(samples, pool)
    step = (pool - n) / (seeds - 1) if seeds > 1 else 0.0
    return [perm[round(k * step):round(k * step) + n] for k in range(seeds)]


def probe(
    checkpoints: str | Path,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    config: ProbeConfig | None = None,
    command: Sequence[str] | None = None,
    **options: Any,
) -> ProbeResults:
    """Probe every checkpoint under ``checkpoints`` layer by layer.

    Args:
        checkpoints: a checkpoint directory, a directory of ``checkpoint-<step>/`` folders,
            or a .gguf file (see :mod:`mi_probe.checkpoints`).
        out: output directory (default :func:`default_out_dir`); finished work found there
            is reused.
        overwrite: delete mi-probe's previous outputs in ``out`` first.
        progress: called with a :class:`ProbeEvent` as the run advances.
        config: a :class:`ProbeConfig`; ``options`` override its fields
            (e.g. ``estimators=("renyi", "ksg")``, ``samples=500``).
        command: the command line, recorded in run.json.

    Returns:
        :class:`ProbeResults` (rows, ridge layers, provenance); the same is on disk in
        ``out`` (results.csv, ridge.csv, run.json, figures/).

    Raises:
        CheckpointError when nothing is found or no checkpoint could be probed;
        FileFormatError / InputError for bad probe data; ParameterError for bad options.
    """
    from .checkpoints import describe_checkpoints, discover_checkpoints

    cfg = _configure(config, options)
    out_dir = Path(out) if out is not None else default_out_dir(checkpoints)
    refs = discover_checkpoints(checkpoints)
    runner = _Runner(cfg, out_dir, progress or (lambda event: None), command)
    runner.emit("found", message=describe_checkpoints(refs), total=len(refs))
    if overwrite:
        _clear_outputs(out_dir)
    return runner.run(refs)


def _configure(config: ProbeConfig | None, options: dict[str, Any]) -> ProbeConfig:
    from .extract import PADDING_SIDES, POOLINGS
    from .result import UNITS

    names = {f.name for f in fields(ProbeConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ParameterError(f"unknown probe option(s) {unknown}; valid: {sorted(names)}")
    cfg = ProbeConfig(**{**asdict(config or ProbeConfig()), **options})
    if isinstance(cfg.estimators, str):
        cfg.estimators = (cfg.estimators,)
    cfg.estimators = tuple(dict.fromkeys(cfg.estimators))
    checks = [
        (cfg.samples >= 2, f"samples must be at least 2, got {cfg.samples}"),
        (cfg.seeds >= 1, f"seeds must be at least 1, got {cfg.seeds}"),
        (cfg.context >= 1, f"context must be at least 1, got {cfg.context}"),
        (cfg.batch_size >= 1, f"batch size must be at least 1, got {cfg.batch_size}"),
        (cfg.pooling in POOLINGS, f"pooling must be one of {POOLINGS}, got {cfg.pooling!r}"),
        (cfg.target in TARGETS, f"target must be one of {TARGETS}, got {cfg.target!r}"),
        (cfg.unit in UNITS, f"unit must be one of {UNITS}, got {cfg.unit!r}"),
        (cfg.padding_side in PADDING_SIDES,
         f"padding side must be one of {PADDING_SIDES}, got {cfg.padding_side!r}"),
        (bool(cfg.estimators), "give at least one estimator"),
        (cfg.steps >= 1, f"steps must be at least 1, got {cfg.steps}"),
        (cfg.null >= 0, f"null (shuffles of y) must be at least 0, got {cfg.null}"),
        (cfg.steps == 1 or cfg.pooling == "last",
         "multi-token probing (steps > 1) needs pooling 'last'"),
    ]
    for ok, message in checks:
        if not ok:
            raise ParameterError(message)
    return cfg


def _clear_outputs(out_dir: Path) -> None:
    """Delete only the files and folders mi-probe writes (never anything else in out)."""
    for name in _OWN_OUTPUTS:
        p = out_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "x"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _file_identity(paths: Sequence[Path]) -> list[list[Any]]:
    """[name, size, mtime_ns] of each existing file: changes when a file is rewritten."""
    out = []
    for p in paths:
        if p.is_file():
            st = p.stat()
            out.append([p.name, st.st_size, st.st_mtime_ns])
    return out


def _checkpoint_identity(ref: Any) -> dict[str, Any]:
    from .checkpoints import WEIGHT_FILES

    if ref.kind == "gguf":
        return {"path": str(ref.path.resolve()), "files": _file_identity([ref.path])}
    files = [ref.path / f for f in ("config.json", *WEIGHT_FILES, *_TOKENIZER_FILES)]
    files += sorted(ref.path.glob("model-*.safetensors"))
    files += sorted(ref.path.glob("pytorch_model-*.bin"))
    return {"path": str(ref.path.resolve()), "files": _file_identity(files)}


def _data_identity(path: str | None) -> dict[str, Any]:
    """Source, sha256 and format of the probe data, read and checked before any model."""
    from .probe_data import DEFAULT_SOURCE, default_texts, detect_format, read_jsonl

    if path is None:
        records, source = default_texts(), DEFAULT_SOURCE
        sha = hashlib.sha256(json.dumps(records).encode()).hexdigest()
    else:
        records, sha = read_jsonl(path)
        source = str(Path(path).resolve())
    return {"source": source, "sha256": sha, "format": detect_format(records, source),
            "records": len(records)}


def _tokenizer_fingerprint(ref: Any) -> str:
    """sha256 over the contents of a checkpoint's tokenizer files (a GGUF: its identity)."""
    if ref.kind == "gguf":
        return _digest(_checkpoint_identity(ref))
    h = hashlib.sha256()
    for name in _TOKENIZER_FILES:
        p = ref.path / name
        if p.is_file():
            h.update(name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _read_part(path: Path) -> dict[str, Any] | None:
    """A finished (checkpoint, estimator) result file, or None if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        part = read_json(path)
        return part if isinstance(part.get("rows"), list) else None
    except (FileFormatError, AttributeError):
        return None


def _environment() -> dict[str, Any]:
    import torch
    import transformers

    from . import __version__

    return {"mi_probe": __version__, "python": sys.version.split()[0],
            "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "platform": platform.platform()}


def _l2(a: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=-1, keepdims=True)
    return a / np.where(norms > 0, norms, 1.0)


def estimate_rows(
    xs: list[np.ndarray], y: np.ndarray, estimator: str, params: dict[str, Any], unit: str,
    null: int = 0, null_seed: int = 0,
) -> list[Any]:
    """I(x_l; y) for every x_l: the one place the pipeline calls an estimator.

    xs: (n, d) arrays (one per layer/quantity); y: (n, d_y) floats or (n,) token ids.
    Returns one MIResult per x; with ``null`` = P > 0 each also carries a permutation null
    of P shuffles of y (seeded by ``null_seed``, shared by all x) in its extras.
    """
    from .api import estimate_layers

    return estimate_layers(xs, y, estimator, unit=unit, permutations=null,
                           resample_seed=null_seed, **params)


def _teacher_forced(examples: Sequence[Any], steps: int
                    ) -> tuple[list[list[int]], list[list[int]] | None, np.ndarray]:
    """Model inputs, kept positions and target ids: the prompts, None and (n,) ids for one
    step; for T > 1 steps the prompt plus T − 1 target tokens, the T positions that predict
    target tokens 1..T, and (n, T) ids."""
    if steps == 1:
        return ([list(e.input_ids) for e in examples], None,
                np.array([e.target_id for e in examples], dtype=np.int64))
    seqs = [[*e.input_ids, *e.target_ids[:steps - 1]] for e in examples]
    positions = [list(range(len(e.input_ids) - 1, len(e.input_ids) - 1 + steps))
                 for e in examples]
    return seqs, positions, np.array([e.target_ids[:steps] for e in examples], dtype=np.int64)


class _Runner:
    """One probing run: the loop over checkpoints and its bookkeeping."""

    def __init__(self, cfg: ProbeConfig, out_dir: Path, progress: Progress,
                 command: Sequence[str] | None) -> None:
        from . import __version__
        from .api import get_estimator
        from .devices import resolve_device
        from .params import resolve_params

        self.cfg, self.out_dir, self.progress = cfg, out_dir, progress
        self.device = str(resolve_device(cfg.device))
        self.dtype = "float32" if cfg.dtype == "auto" and self.device == "cpu" else cfg.dtype
        self.estimators = {}
        for name in cfg.estimators:
            est = get_estimator(name)
            y_kind = "discrete" if cfg.target == "token-id" else "continuous"
            if y_kind not in est.y_kinds:
                raise ParameterError(
                    f"estimator {name!r} does not accept {y_kind} y; choose --target "
                    + ("embedding" if y_kind == "discrete" else "token-id")
                    + " or another estimator")
            self.estimators[name] = (est, resolve_params(name, est.params,
                                                         self._params_for(est)))
        unused = sorted(set(cfg.params) - set(cfg.estimators))
        if unused:
            raise ParameterError(f"parameters given for {unused}, which are not among the "
                                 f"estimators of this run ({', '.join(cfg.estimators)})")
        self.data = _data_identity(cfg.data)
        self.tokenized: dict[str, Any] = {}
        self.rows: dict[str, list[ResultRow]] = {}
        self.index = 0
        self.n_checkpoints = 0
        self.started = time.time()
        self.run_info: dict[str, Any] = {
            "mi_probe_version": __version__,
            "command": list(command) if command is not None else None,
            "status": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": asdict(cfg),
            "estimators": {n: p for n, (_, p) in self.estimators.items()},
            "data": {**self.data, "pool": cfg.samples * cfg.seeds, "seed": cfg.seed,
                     "context": cfg.context},
            "seeds": {"count": cfg.seeds, "samples_per_seed": cfg.samples,
                      "base_seed": cfg.seed},
            "device": self.device,
            "dtype": self.dtype,
            "checkpoints": [],
            "environment": _environment(),
        }

    def _params_for(self, est: Any) -> dict[str, Any]:
        """User params plus the pipeline's normalize/device where the estimator has them."""
        given = dict(self.cfg.params.get(est.name, {}))
        declared = {p.name: p for p in est.params}
        for name, value in (("normalize", self.cfg.normalize), ("device", self.device)):
            if name in declared and name not in given:
                try:
                    given[name] = declared[name].coerce(value)
                except ParameterError:
                    pass  # the estimator's own notion of this parameter differs; keep it
        return given

    # -- reporting -----------------------------------------------------------------------
    def emit(self, kind: str, **info: Any) -> None:
        info.setdefault("index", self.index)
        info.setdefault("checkpoints", self.n_checkpoints)
        self.progress(ProbeEvent(kind, **info))

    def log(self, event: str, **info: Any) -> None:
        """Append one line to log.jsonl (what ran and what was reused)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        rec = {"time": round(time.time(), 3), "event": event, **info}
        with (self.out_dir / "log.jsonl").open("a") as f:
            f.write(json.dumps(rec, default=str) + "\n")

    def all_rows(self) -> list[ResultRow]:
        return [r for rows in self.rows.values() for r in rows]

    def save(self, status: str | None = None) -> None:
        if status is not None:
            self.run_info["status"] = status
        self.run_info["timings"] = {"total_s": round(time.time() - self.started, 3)}
        if status in ("complete", "partial", "failed", "interrupted"):
            self.run_info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json(self.out_dir / RUN_FILE, self.run_info)

    # -- the loop ------------------------------------------------------------------------
    def run(self, refs: list[Any]) -> ProbeResults:
        self.n_checkpoints = len(refs)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.save()
        try:
            for self.index, ref in enumerate(refs):
                info = {"name": ref.name, "path": str(ref.path), "step": ref.step,
                        "kind": ref.kind, "status": "pending"}
                self.run_info["checkpoints"].append(info)
                self.emit("checkpoint", name=ref.name)
                try:
                    self._checkpoint(ref, info)
                except CheckpointError as exc:
                    info.update(status="failed", error=str(exc))
                    self.log("failed", checkpoint=ref.name, error=str(exc))
                    self.emit("failed", name=ref.name, message=str(exc))
                self.save()
        except BaseException:
            self.save("interrupted")
            raise
        failed = [c for c in self.run_info["checkpoints"] if c["status"] == "failed"]
        if len(failed) == len(refs):
            self.save("failed")
            reasons = "; ".join(c["error"] for c in failed[:3])
            raise CheckpointError(f"no checkpoint could be probed: {reasons}")
        results = ProbeResults(self.all_rows(), self.run_info, self.out_dir)
        if self.cfg.plots:
            from .plots import plot_all

            self.run_info["figures"] = [str(p.name) for p in plot_all(results,
                                                                       self.out_dir / "figures")]
        self.save("partial" if failed else "complete")
        return results

    def _checkpoint(self, ref: Any, info: dict[str, Any]) -> None:
        cfg = self.cfg
        ident = _checkpoint_identity(ref)
        states_key = _digest({
            "format": STATES_FORMAT, "checkpoint": ident, "data": self.data["sha256"],
            "pool": cfg.samples * cfg.seeds, "seed": cfg.seed, "context": cfg.context,
            "pooling": cfg.pooling, "target": cfg.target, "dtype": self.dtype,
            "blocks": cfg.blocks, **({"steps": cfg.steps} if cfg.steps > 1 else {})})
        info["states_key"] = states_key
        parts = {name: self._part_path(ref, name, states_key) for name in self.estimators}
        done = {n: part for n, p in parts.items() if (part := _read_part(p)) is not None}
        rows: list[ResultRow] = []
        for name, part in done.items():
            rows += [ResultRow(**r) for r in part["rows"]]
            info.setdefault("estimate_s", {})[name] = part["seconds"]
            self.log("results_reused", checkpoint=ref.name, estimator=name)
        todo = [n for n in self.estimators if n not in done]
        if todo:
            states = self._states(ref, info, states_key)
            for name in todo:
                new, seconds = self._estimate(ref, states, name)
                rows += new
                info.setdefault("estimate_s", {})[name] = round(seconds, 3)
                atomic_write(parts[name], lambda f, new=new, s=seconds: f.write(json.dumps(
                    {"key": states_key, "seconds": round(s, 3),
                     "rows": [asdict(r) for r in new]}).encode()))
                self.log("estimated", checkpoint=ref.name, estimator=name)
                self.rows[ref.name] = rows
                write_results(self.out_dir, self.all_rows())
        else:
            info["status"] = "reused"
            self.emit("reused", name=ref.name)
        order = list(self.estimators)
        self.rows[ref.name] = sorted(rows, key=lambda r: (order.index(r.estimator),
                                                          r.quantity != "predictive",
                                                          r.layer_index))
        write_results(self.out_dir, self.all_rows())
        if todo:
            info["status"] = "complete"
        self.emit("done", name=ref.name)

    def _part_path(self, ref: Any, estimator: str, states_key: str) -> Path:
        cfg = self.cfg
        key = _digest({"states": states_key, "estimator": estimator,
                       "params": self.estimators[estimator][1], "samples": cfg.samples,
                       "seeds": cfg.seeds, "normalize": cfg.normalize,
                       "incremental": cfg.incremental, "final_norm": cfg.final_norm,
                       "unit": cfg.unit, **({"null": cfg.null} if cfg.null else {})})
        return self.out_dir / "parts" / f"{_safe(ref.name)}__{_safe(estimator)}__{key[:16]}.json"

    # -- states --------------------------------------------------------------------------
    def _states(self, ref: Any, info: dict[str, Any], key: str) -> dict[str, np.ndarray]:
        """Cached states of a checkpoint, extracting them (and caching) when missing."""
        from safetensors.numpy import load_file

        path = self.out_dir / "cache" / f"{_safe(ref.name)}__{key[:16]}.safetensors"
        if path.is_file():
            try:
                states = load_file(str(path))
                self.log("states_reused", checkpoint=ref.name)
                info["states_reused"] = True
                return states
            except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
                path.unlink()
        states, meta = self._extract(ref, info)
        atomic_write(path, lambda f: f.write(_safetensors_bytes(states, meta)))
        self.log("extracted", checkpoint=ref.name, tokens=meta["n_tokens"])
        info["states_reused"] = False
        return states

    def _probe_set(self, ref: Any, tokenizer: Any) -> Any:
        """The probe data tokenized for this checkpoint (shared by identical tokenizers)."""
        from .probe_data import load_probe_data

        key = _tokenizer_fingerprint(ref)
        if key not in self.tokenized:
            cfg = self.cfg
            self.tokenized[key] = load_probe_data(cfg.data, tokenizer,
                                                  samples=cfg.samples * cfg.seeds,
                                                  seed=cfg.seed, context=cfg.context,
                                                  steps=cfg.steps)
        return self.tokenized[key]

    def _extract(self, ref: Any, info: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict]:
        import torch

        from .adapters import find_adapter
        from .checkpoints import load_checkpoint, quiet_transformers
        from .extract import extract_states

        cfg = self.cfg
        t0 = time.perf_counter()
        quiet_transformers()
        loaded = load_checkpoint(ref, device=self.device, dtype=self.dtype,
                                 trust_remote_code=cfg.trust_remote_code)
        try:
            model = loaded.model
            adapter = find_adapter(model, cfg.blocks)
            info.update(load_s=round(time.perf_counter() - t0, 3), adapter=adapter.name,
                        dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
                        found_by=adapter.found_by, num_layers=adapter.num_layers)
            self.emit("loaded", name=ref.name,
                      message=f"{adapter.name} adapter ({adapter.found_by}), "
                              f"{adapter.num_layers} blocks")
            probe_set = self._probe_set(ref, loaded.tokenizer)
            examples = probe_set.examples
            info["data"] = probe_set.provenance()
            pad_id = getattr(loaded.tokenizer, "pad_token_id", None) or 0
            seqs, positions, target_ids = _teacher_forced(examples, cfg.steps)
            st = extract_states(
                model, seqs, adapter=adapter, positions=positions,
                final_norm=cfg.final_norm, pooling=cfg.pooling, batch_size=cfg.batch_size,
                padding_side=cfg.padding_side, pad_id=pad_id,
                progress=lambda d, t: self.emit("extract", name=ref.name, done=d, total=t))
            states = {f"layer.{k}": v for k, v in st.layers.items()}
            if st.final_norm is not None:
                states[FINAL_NORM] = st.final_norm
            states["target_ids"] = target_ids
            matrix = (adapter.unembedding() if cfg.target == "unembedding"
                      else adapter.embedding())
            if cfg.target != "token-id":
                if matrix is None or target_ids.max() >= matrix.weight.shape[0]:
                    raise InputError(f"{ref.name}: a target token id is outside the "
                                     f"{cfg.target} matrix; check the data's token ids")
                with torch.inference_mode():
                    states["y"] = matrix.weight[torch.as_tensor(target_ids)].float().cpu() \
                        .numpy()
        finally:
            big = sum(p.numel() for p in loaded.model.parameters()) > 50_000_000
            del loaded, model
            if big:  # free a large model's reference cycles now (a full collection is slow)
                gc.collect()
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
        meta = {"n_tokens": st.n_tokens, "n_padded": st.n_padded,
                "extract_s": round(st.seconds, 3), "num_layers": st.num_layers,
                "tokens_per_s": round(st.tokens_per_second, 1)}
        info.update(meta)
        return states, meta

    # -- estimation ----------------------------------------------------------------------
    def _estimate(self, ref: Any, states: dict[str, np.ndarray],
                  name: str) -> tuple[list[ResultRow], float]:
        cfg = self.cfg
        est, params = self.estimators[name]
        n_layers = sum(1 for k in states if k.startswith("layer."))
        num_blocks = n_layers - 1
        layers = [states[f"layer.{i}"] for i in range(n_layers)]
        steps = layers[0].shape[1] if layers[0].ndim == 3 else 1

        def at(a: np.ndarray, t: int) -> np.ndarray:  # step t of multi-token states
            return a[:, t] if steps > 1 else a

        # (y, entries) groups; an entry is (quantity, layer index, x, generation step t)
        entries: list[tuple[str, int, np.ndarray, int | None]] = [
            ("predictive", i, at(z, 0), None) for i, z in enumerate(layers)]
        if cfg.final_norm and FINAL_NORM in states:
            entries.append(("predictive", num_blocks + 1, at(states[FINAL_NORM], 0), None))
        if cfg.incremental:
            entries += [("incremental", i, at(layers[i], 0) - at(layers[i - 1], 0), None)
                        for i in range(1, n_layers)]
        if cfg.target == "token-id":
            y_all = states["target_ids"]
        else:
            y_all = _l2(states["y"]) if cfg.normalize else states["y"]
        groups = [(at(y_all, 0), entries)]
        groups += [(y_all[:, t], [("step", i, z[:, t], t + 1) for i, z in enumerate(layers)])
                   for t in range(1, steps)]
        sequence = (steps > 1 and cfg.target != "token-id"
                    and hasattr(est, "compute_sequence_layers"))
        flat = [e for _, group in groups for e in group]
        if sequence:
            flat += [("sequence", i, z, None) for i, z in enumerate(layers)]
        windows = replicate_indices(len(y_all), cfg.samples, cfg.seeds, cfg.seed)
        values = np.zeros((len(windows), len(flat)))
        nulls: list[list[Any]] = [[] for _ in flat]  # per entry, one MIResult per window
        seconds = 0.0
        total = len(windows) * len(flat)
        declared = {p.name for p in est.params}
        given = cfg.params.get(name, {})
        for k, idx in enumerate(windows):
            run_params = dict(params)
            if "seed" in declared:
                run_params["seed"] = int(given.get("seed", cfg.seed)) + k
            row_values: list[float] = []
            for y, group in groups:
                xs = [_l2(x[idx]) if cfg.normalize else x[idx] for _, _, x, _ in group]
                results = estimate_rows(xs, y[idx], name, run_params, cfg.unit,
                                        null=cfg.null, null_seed=cfg.seed + k)
                for j, res in enumerate(results, start=len(row_values)):
                    nulls[j].append(res)
                row_values += [r.value for r in results]
                seconds += sum(r.seconds for r in results)
                self.emit("estimate", name=ref.name, done=k * len(flat) + len(row_values),
                          total=total, message=name)
            if sequence:
                t0 = time.perf_counter()
                xs = [_l2(z[idx]) if cfg.normalize else z[idx] for z in layers]
                raw = est.compute_sequence_layers(xs, y_all[idx], run_params)
                row_values += [convert_unit(float(r.value), cfg.unit) for r in raw]
                seconds += time.perf_counter() - t0
            values[k] = row_values
        rows = []
        if steps > 1:  # step 1 is the predictive quantity: shown in the layer x step grid
            flat += [("step", i, None, 1) for i in range(n_layers)]
            values = np.concatenate([values, values[:, :n_layers]], axis=1)
            nulls += nulls[:n_layers]
        for j, (quantity, index, _, t) in enumerate(flat):
            v = values[:, j]
            spread = {}
            if len(windows) > 1:
                spread = {"std": float(v.std(ddof=1)), "min": float(v.min()),
                          "max": float(v.max())}
            rows.append(ResultRow(
                checkpoint=ref.name, step=ref.step, layer=layer_name(index, num_blocks),
                layer_index=index, quantity=quantity, estimator=name, value=float(v.mean()),
                unit=cfg.unit, n=len(windows[0]), seeds=len(windows),
                seconds=round(seconds / len(flat), 6), t=t, **spread,
                **(pool_nulls(nulls[j]).columns() if cfg.null and nulls[j] else {})))
        rows.sort(key=lambda r: r.t or 0)  # stable: layer-major, step-minor after sorting
        return rows, seconds


def _safetensors_bytes(states: dict[str, np.ndarray], meta: dict[str, Any]) -> bytes:
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in states.items()},
                metadata={k: str(v) for k, v in meta.items()})

