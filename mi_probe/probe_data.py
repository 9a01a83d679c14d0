"""Probe data: prompts and their target tokens, read from JSONL or the built-in default.

Three JSONL formats (one JSON object per line, one format per file):

- ``{"prompt": str, "target": str}``: the prompt is tokenized together with the target
  (``prompt + target``); Y is the first token that belongs to the target, and the prompt
  tokens are everything before it.
- ``{"text": str}``: positions are sampled (seeded) inside the tokenized text; the prompt is
  up to ``context`` tokens before the position, the target is the token at the position.
- ``{"input_ids": [int, ...], "target_id": int}`` (or ``"target_ids": [...]``): token ids,
  for checkpoints without a tokenizer.

Any other keys on a line are kept in ``ProbeExample.meta``. Without a file, the default is
real English text from the standard library's ``pydoc_data.topics``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FileFormatError, InputError

DEFAULT_SOURCE = "builtin:pydoc_data.topics"
FORMATS = {
    "prompt-target": {"prompt", "target"},
    "text": {"text"},
    "token-ids": {"input_ids"},
}


@dataclass
class ProbeExample:
    """One probe sample.

    Attributes:
        input_ids: prompt token ids (the model reads these).
        target_ids: the reference continuation's token ids; ``target_ids[0]`` is Y.
        meta: other fields of the source record (e.g. the arithmetic task's signal spans).
        prompt_char_end: for prompt/target records, the prompt's length in characters.
        offsets: per prompt token (start, end) character offsets, when the tokenizer has them.
    """

    input_ids: list[int]
    target_ids: list[int]
    meta: dict[str, Any] = field(default_factory=dict)
    offsets: list[tuple[int, int]] | None = None

    @property
    def target_id(self) -> int:
        return self.target_ids[0]


@dataclass
class ProbeSet:
    """Probe examples plus provenance (source path, content hash, format, seed)."""

    examples: list[ProbeExample]
    source: str
    sha256: str
    format: str
    seed: int

    def __len__(self) -> int:
        return len(self.examples)

    def provenance(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "format": self.format,
                "samples": len(self.examples), "seed": self.seed}


def read_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], str]:
    """All records of a JSONL file and the sha256 of its bytes."""
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"{p}: no such data file")
    raw = p.read_bytes()
    records = []
    for no, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FileFormatError(f"{p}, line {no}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise FileFormatError(f"{p}, line {no}: expected a JSON object per line")
        records.append(rec)
    if not records:
        raise FileFormatError(f"{p} holds no records")
    return records, hashlib.sha256(raw).hexdigest()


def detect_format(records: list[dict[str, Any]], where: str) -> str:
    """The single format every record follows (see module doc), or FileFormatError."""
    found = None
    for no, rec in enumerate(records, 1):
        fmt = next((f for f, keys in FORMATS.items() if keys <= rec.keys()), None)
        if fmt is None:
            raise FileFormatError(
                f"{where}, record {no}: expected keys prompt+target, text, or "
                f"input_ids+target_id; got {sorted(rec)}"
            )
        if found is not None and fmt != found:
            raise FileFormatError(f"{where}, record {no}: mixes {fmt} with {found} records")
        found = fmt
    return found  # type: ignore[return-value]


def default_texts() -> list[dict[str, Any]]:
    """Paragraphs of real English text from the standard library's pydoc topics."""
    from pydoc_data import topics

    out = []
    for key in sorted(topics.topics):
        for para in topics.topics[key].split("\n\n"):
            para = " ".join(para.split())
            if len(para) > 200 and not para.startswith(("*", ">>>", "|")):
                out.append({"text": para, "topic": key})
    return out


def load_probe_data(
    path: str | Path | None,
    tokenizer: Any = None,
    samples: int | None = 1000,
    seed: int = 0,
    context: int = 64,
    steps: int = 1,
) -> ProbeSet:
    """Read probe data and turn it into token-level examples.

    Args:
        path: a JSONL file, or None for the built-in English text.
        tokenizer: a HF tokenizer; needed for prompt/target and text records.
        samples: how many examples to keep (a seeded random subset); None keeps all.
        seed: seed of the subset and of text positions.
        context: for text records, the most prompt tokens before a position.
        steps: how many target tokens each example needs (multi-token probing).
    """
    if samples is not None and samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}")
    if path is None:
        records, source = default_texts(), DEFAULT_SOURCE
        sha = hashlib.sha256(json.dumps(records).encode()).hexdigest()
    else:
        records, sha = read_jsonl(path)
        source = str(path)
    fmt = detect_format(records, source)
    rng = np.random.default_rng(seed)
    if fmt == "token-ids":
        examples = [_token_record(r, i, source) for i, r in enumerate(records)]
    else:
        if tokenizer is None:
            raise InputError(
                f"{source} holds {fmt} records, which need a tokenizer, but the checkpoint has "
                'none; give token ids instead ({"input_ids": [...], "target_id": n})'
            )
        if fmt == "prompt-target":
            examples = [_prompt_target(r, tokenizer) for r in records]
        else:
            return ProbeSet(_text_examples(records, tokenizer, samples, rng, context, steps),
                            source, sha, fmt, seed)
    examples = [e for e in examples if len(e.target_ids) >= steps]
    if not examples:
        raise InputError(f"{source}: no record has {steps} target token(s)")
    if samples is not None and samples < len(examples):
        keep = np.sort(rng.choice(len(examples), samples, replace=False))
        examples = [examples[i] for i in keep]
    return ProbeSet(examples, source, sha, fmt, seed)


def _token_record(rec: dict[str, Any], no: int, where: str) -> ProbeExample:
    ids = rec["input_ids"]
    targets = rec.get("target_ids", [rec["target_id"]] if "target_id" in rec else None)
    if targets is None:
        raise FileFormatError(f"{where}, record {no + 1}: input_ids needs target_id or target_ids")
    if not ids or not all(isinstance(t, int) and t >= 0 for t in [*ids, *targets]):
        raise FileFormatError(
            f"{where}, record {no + 1}: input_ids and target ids must be non-negative integers"
        )
    meta = {k: v for k, v in rec.items() if k not in ("input_ids", "target_id", "target_ids")}
    return ProbeExample(list(ids), list(targets), meta)


def _prompt_target(rec: dict[str, Any], tokenizer: Any) -> ProbeExample:
    prompt, target = str(rec["prompt"]), str(rec["target"])
    enc = tokenizer(prompt + target, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    boundary = len(prompt)
    # The first token ending past the prompt belongs to the target (even if it straddles).
    split = next(
        (i for i, (s, e) in enumerate(offsets) if e > boundary and e > s), len(ids)
    )
    meta = {k: v for k, v in rec.items() if k not in ("prompt", "target")}
    meta["prompt"] = prompt
    ex = ProbeExample(list(ids[:split]), list(ids[split:]), meta,
                      [tuple(o) for o in offsets[:split]])
    if not ex.input_ids or not ex.target_ids:
        raise InputError(f"prompt {prompt[:40]!r} or its target tokenizes to nothing")
    return ex


def _text_examples(
    records: list[dict[str, Any]],
    tokenizer: Any,
    samples: int | None,
    rng: np.random.Generator,
    context: int,
    steps: int,
) -> list[ProbeExample]:
    token_lists = [tokenizer(str(r["text"]), add_special_tokens=False)["input_ids"]
                   for r in records]
    # Candidate positions p: at least 4 tokens of context, `steps` tokens left after p.
    counts = np.array([max(0, len(t) - 4 - steps + 1) for t in token_lists])
    total = int(counts.sum())
    if total == 0:
        raise InputError("the text records are too short to sample any position")
    n = total if samples is None else min(samples, total)
    picks = np.sort(rng.choice(total, n, replace=False))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    examples = []
    for flat in picks:
        doc = int(np.searchsorted(starts, flat, side="right") - 1)
        pos = 4 + int(flat - starts[doc])
        toks = token_lists[doc]
        meta = {k: v for k, v in records[doc].items() if k != "text"}
        meta.update(record=doc, position=pos)
        examples.append(ProbeExample(toks[max(0, pos - context):pos],
                                     toks[pos:pos + steps], meta))
    return examples
