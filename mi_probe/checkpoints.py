"""Finding and loading causal-LM checkpoints from local files only.

A path given to mi-probe may be:
- one checkpoint directory (``config.json`` plus safetensors, or pickled weights, which are
  read with ``weights_only=True``);
- a directory of ``checkpoint-<step>`` subdirectories as the HF Trainer writes them, ordered
  by step (the step is read from ``trainer_state.json`` when present);
- a ``.gguf`` file (or a directory holding exactly one), read through transformers' GGUF
  support (needs the ``gguf`` and ``accelerate`` packages).

Nothing is downloaded: loading is local-only, and ``trust_remote_code`` stays False unless
the caller asks for it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError

_STEP_DIR = re.compile(r"^checkpoint[-_](\d+)$")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint found on disk.

    Attributes:
        path: the checkpoint directory or .gguf file.
        name: a short label ("checkpoint-500", the directory or file name).
        step: training step, when known (from trainer_state.json or the directory name).
        kind: "hf" (a directory with config.json) or "gguf".
    """

    path: Path
    name: str
    step: int | None
    kind: str


@dataclass
class LoadedCheckpoint:
    """A loaded model (eval mode, on its device), its tokenizer (or None), and its ref."""

    model: Any
    tokenizer: Any
    ref: CheckpointRef


def _step_of(directory: Path) -> int | None:
    state = directory / "trainer_state.json"
    if state.is_file():
        try:
            step = json.loads(state.read_text()).get("global_step")
            if isinstance(step, int):
                return step
        except (OSError, ValueError):
            pass  # fall back to the directory name; loading will report real damage
    m = _STEP_DIR.match(directory.name)
    return int(m.group(1)) if m else None


def _hf_ref(directory: Path) -> CheckpointRef:
    return CheckpointRef(directory, directory.name, _step_of(directory), "hf")


def discover_checkpoints(path: str | Path) -> list[CheckpointRef]:
    """All checkpoints under ``path``, ordered by step (see module doc for the layouts)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory")
    if p.is_file():
        if p.suffix.lower() == ".gguf":
            return [CheckpointRef(p, p.name, None, "gguf")]
        raise CheckpointError(
            f"{p} is a file but not a .gguf model; give a checkpoint directory (with "
            "config.json), a directory of checkpoint-<step>/ folders, or a .gguf file"
        )
    if (p / "config.json").is_file():
        return [_hf_ref(p)]
    subdirs = sorted(d for d in p.iterdir() if d.is_dir() and _STEP_DIR.match(d.name))
    if not subdirs:
        subdirs = sorted(d for d in p.iterdir() if d.is_dir() and (d / "config.json").is_file())
    if subdirs:
        refs = [_hf_ref(d) for d in subdirs]
        return sorted(refs, key=lambda r: (r.step is None, r.step or 0, r.name))
    ggufs = sorted(p.glob("*.gguf"))
    if len(ggufs) == 1:
        return [CheckpointRef(ggufs[0], ggufs[0].name, None, "gguf")]
    raise CheckpointError(
        f"found no checkpoint in {p}: expected config.json, checkpoint-<step>/ folders, or "
        f"one .gguf file ({len(ggufs)} .gguf files found)"
    )


def describe_checkpoints(refs: list[CheckpointRef]) -> str:
    """One line saying what was found, e.g. '3 checkpoints (steps 10, 20, 30)'."""
    if len(refs) == 1:
        r = refs[0]
        step = f", step {r.step}" if r.step is not None else ""
        return f"1 checkpoint: {r.path} ({r.kind}{step})"
    steps = ", ".join(str(r.step) if r.step is not None else r.name for r in refs)
    return f"{len(refs)} checkpoints in {refs[0].path.parent} (steps {steps})"


def resolve_torch_dtype(dtype: str | None) -> Any:
    """"auto"/None -> None (the checkpoint's own); names -> torch dtypes."""
    import torch

    if dtype in (None, "auto"):
        return None
    if dtype not in DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def load_checkpoint(
    ref: CheckpointRef | str | Path,
    device: str = "cpu",
    dtype: str | None = "auto",
    trust_remote_code: bool = False,
    need_tokenizer: bool = False,
) -> LoadedCheckpoint:
    """Load a causal LM (and its tokenizer, when the checkpoint has one) from local files.

    Raises CheckpointError naming the checkpoint and the reason when it cannot be loaded.
    """
    if not isinstance(ref, CheckpointRef):
        refs = discover_checkpoints(ref)
        if len(refs) != 1:
            raise CheckpointError(f"{ref} holds {len(refs)} checkpoints; give one of them")
        ref = refs[0]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    torch_dtype = resolve_torch_dtype(dtype)
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "trust_remote_code": trust_remote_code,
    }
    if ref.kind == "gguf":
        where, kwargs["gguf_file"] = str(ref.path.parent), ref.path.name
    else:
        where = str(ref.path)
        if not any((ref.path / f).is_file() for f in WEIGHT_FILES):
            raise CheckpointError(
                f"{ref.path}: no weights found (expected one of {', '.join(WEIGHT_FILES)})"
            )
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            where, dtype=torch_dtype, weights_only=True, **kwargs
        )
    except Exception as exc:  # noqa: BLE001 - any loader failure is a checkpoint problem
        raise CheckpointError(
            f"{ref.path} could not be loaded: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    model.eval()
    model.to(device)
    tokenizer = _load_tokenizer(where, kwargs)
    if tokenizer is None and need_tokenizer:
        raise CheckpointError(
            f"{ref.path} has no tokenizer; give token ids instead "
            '(JSONL lines {"input_ids": [...], "target_id": n})'
        )
    return LoadedCheckpoint(model, tokenizer, ref)


def _load_tokenizer(where: str, kwargs: dict[str, Any]) -> Any:
    import transformers

    p = Path(where)
    if "gguf_file" not in kwargs and not any(
        (p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json",
                                    "tokenizer.model")
    ):
        return None
    try:
        tok = transformers.AutoTokenizer.from_pretrained(where, **kwargs)
    except Exception:  # noqa: BLE001 - a checkpoint without a usable tokenizer is allowed
        return None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def quiet_transformers() -> None:
    """No per-file progress bars or advisory warnings from transformers while loading
    (mi-probe shows its own progress)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF loader's bars
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # transformers missing: loading itself will say so
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
