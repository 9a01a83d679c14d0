"""The arithmetic-progression shift task of the InfoRidge paper, as prompt/target JSONL.

A prompt interleaves signal and noise elements, ``S v N w S v' N w' ...``; the signal
values follow s_t = (s_0 + t·d) mod K and the model must predict the next signal. In
distribution (ID) K = 13; the shifted (OOD) data draws K per sequence uniformly from
{5, ..., 25} minus {13}.

Choices the paper leaves open, and what is done here:

- ``length`` (default 10) elements are shown, alternating S, N, S, N, ... (so 5 signal
  values with the default); the prompt then ends with the marker ``S`` and the target is
  the next signal value: ``prompt = "S c N k S f N a S i N b S l N d S o N h S"``,
  ``target = " r"`` with K = 13 values a..m.
- d is uniform on {1, ..., K-1} (d = 0 would make a constant sequence; the paper does not
  say which steps it used), or on {1, ..., min(max_d, K-1)} with ``max_d``; s_0 is uniform
  on {0, ..., K-1}. Noise values are uniform on {0, ..., K-1} with the sequence's own K,
  independent of everything else, so they look exactly like signal values and only the
  S/N markers (and position) tell them apart.
- Encoding ``"letters"`` (default) writes value v as the lowercase letter ``chr(97 + v)``
  (K ≤ 26). mi-probe takes Y as the *first* token of the target as the tokenizer splits
  ``prompt + target``; with SmolLM2's (and GPT-2-style) byte-level BPE, ``" a"``..``" z"``
  are single tokens, so Y is the value itself. Numbers are split per digit by SmolLM2
  (``" 12"`` is ``Ġ``, ``1``, ``2`` ... see docs/reproduction.md), which would make Y the
  first digit: encoding ``"numbers"`` keeps the paper's literal ``S12`` look (``"S 12"``)
  for tokenizers with whole-number tokens, such as the word-level one ``mi-probe train``
  builds for models trained from scratch. Lowercase values never collide with the
  uppercase markers S and N.

Each record also carries ``signal_spans`` and ``noise_spans``: ``[start, end)`` character
spans, in the prompt, of every signal (noise) *value*; any tokenizer with an offset mapping
turns them into token positions (see :func:`mi_probe.attention.span_token_mask`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError

TASK_NAME = "arithmetic-shift"
ENCODINGS = ("letters", "numbers")
ID_K = 13
DEFAULT_OOD_K = tuple(k for k in range(5, 26) if k != ID_K)
SPLITS = ("id_train", "id_test", "ood_train", "ood_test")


@dataclass(frozen=True)
class ArithmeticTask:
    """Settings of the shift task (see the module doc for every choice).

    Attributes:
        k: the modulus K of the in-distribution data.
        ood_k: the moduli the shifted data draws from, uniformly per sequence.
        length: number of shown elements (signal and noise alternating, signal first).
        encoding: "letters" (value v -> chr(97 + v)) or "numbers" (v -> str(v)).
        max_d: the largest step d (None: K - 1). With every d in {1..K-1} the next value
            is independent of any single shown value, so a model must combine two of them
            before the loss can fall; small models trained from scratch then sit at chance
            for long. A small ``max_d`` makes the last value alone informative.
    """

    k: int = ID_K
    ood_k: tuple[int, ...] = DEFAULT_OOD_K
    length: int = 10
    encoding: str = "letters"
    max_d: int | None = None

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ParameterError(
                f"unknown encoding {self.encoding!r}; use one of {', '.join(ENCODINGS)}"
            )
        if self.length < 4:
            raise ParameterError(
                f"length must be at least 4 (two signal values define d), got {self.length}"
            )
        if not self.ood_k:
            raise ParameterError("ood_k is empty; give at least one modulus for the OOD data")
        if self.max_d is not None and self.max_d < 1:
            raise ParameterError(f"max_d must be at least 1, got {self.max_d}")
        top = 26 if self.encoding == "letters" else 10**6
        for k in (self.k, *self.ood_k):
            if not 2 <= k <= top:
                raise ParameterError(
                    f"modulus K = {k} is out of range: use 2 <= K <= {top}"
                    + (" with --encoding letters (26 letters)" if top == 26 else "")
                )

    @staticmethod
    def vocabulary(encoding: str = "letters", max_k: int = 26) -> list[str]:
        """All whitespace-separated words the task writes (markers, then values)."""
        if encoding == "letters":
            return ["S", "N", *(chr(97 + v) for v in range(min(max_k, 26)))]
        return ["S", "N", *(str(v) for v in range(max_k))]

    def encode(self, value: int) -> str:
        """The text of one value."""
        return chr(97 + value) if self.encoding == "letters" else str(value)

    def record(self, rng: np.random.Generator, k: int, split: str) -> dict[str, Any]:
        """One sequence with modulus k, as a prompt/target record."""
        d = int(rng.integers(1, k if self.max_d is None else min(self.max_d, k - 1) + 1))
        s0 = int(rng.integers(0, k))
        n_signal = (self.length + 1) // 2
        signals = [(s0 + t * d) % k for t in range(n_signal + 1)]
        noise = [int(v) for v in rng.integers(0, k, self.length // 2)]
        parts: list[str] = []
        signal_spans: list[list[int]] = []
        noise_spans: list[list[int]] = []
        pos = 0
        for i in range(self.length):
            marker, value = ("S", signals[i // 2]) if i % 2 == 0 else ("N", noise[i // 2])
            text = self.encode(value)
            start = pos + len(marker) + 1
            (signal_spans if marker == "S" else noise_spans).append([start, start + len(text)])
            parts.append(f"{marker} {text}")
            pos = start + len(text) + 1
        return {
            "prompt": " ".join(parts) + " S",
            "target": " " + self.encode(signals[n_signal]),
            "task": TASK_NAME,
            "encoding": self.encoding,
            "split": split,
            "k": k,
            "d": d,
            "s0": s0,
            "answer": signals[n_signal],
            "signal_spans": signal_spans,
            "noise_spans": noise_spans,
        }

    def records(self, n: int, seed: int | Sequence[int], ood: bool,
                avoid: set[str] | None = None) -> list[dict[str, Any]]:
        """n records (ID or OOD), seeded; prompts in ``avoid`` are redrawn.

        The redraw keeps test prompts out of the training set; it gives up (keeping
        duplicates) only when the task has fewer distinct prompts than asked for.
        """
        rng = np.random.default_rng(seed)
        split = "ood" if ood else "id"
        out: list[dict[str, Any]] = []
        tries = 0
        while len(out) < n:
            k = int(rng.choice(self.ood_k)) if ood else self.k
            rec = self.record(rng, k, split)
            tries += 1
            if avoid and rec["prompt"] in avoid and tries < 20 * n:
                continue
            out.append(rec)
        return out


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Write records one JSON object per line (atomically: temp file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)


def write_arithmetic(
    out: str | Path,
    task: ArithmeticTask | None = None,
    n_train: int = 2000,
    n_test: int = 500,
    seed: int = 0,
) -> dict[str, Path]:
    """Write id_train, id_test, ood_train, ood_test (.jsonl) and task.json under ``out``.

    Test prompts never occur in the training file of the same distribution (as long as the
    task has enough distinct prompts). Returns the paths by split name.
    """
    if n_train < 1 or n_test < 1:
        raise ParameterError(
            f"--n-train and --n-test must be at least 1, got {n_train} and {n_test}"
        )
    task = task or ArithmeticTask()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for i, ood in enumerate((False, True)):
        name = "ood" if ood else "id"
        train = task.records(n_train, [seed, 2 * i], ood)
        test = task.records(n_test, [seed, 2 * i + 1], ood, {r["prompt"] for r in train})
        for split, recs in ((f"{name}_train", train), (f"{name}_test", test)):
            paths[split] = out / f"{split}.jsonl"
            write_jsonl(paths[split], recs)
    settings = {**asdict(task), "task": TASK_NAME, "n_train": n_train, "n_test": n_test,
                "seed": seed, "vocabulary": task.vocabulary(task.encoding,
                                                            max(task.k, *task.ood_k))}
    (out / "task.json").write_text(json.dumps(settings) + "\n")
    return paths
