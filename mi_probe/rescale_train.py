"""Fitting residual scales β (see :mod:`mi_probe.rescale`) with the model frozen.

Loss: next-token cross-entropy on the target tokens of prompt/target data (the formats of
:mod:`mi_probe.probe_data`), averaged over target tokens, teacher-forced: the model reads
``prompt + target[:-1]`` and is scored on each target token. Accuracy is the fraction of
target tokens that are the arg-max prediction.

Only β is trained (AdamW; weight decay 0 by default, because decay would pull β toward 0,
not toward the model's own β = 1). β is projected onto β ≥ 0 after every step. A fraction
of the fit data is held out for early stopping; the β with the lowest held-out loss is kept.
The model stays in eval mode (dropout off) and its weights are never touched.

The same code runs on CPU and CUDA: ``device="auto"`` picks CUDA when present, and
``precision="auto"`` turns on bf16 autocast there (float32 on the CPU).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .adapters import ModelAdapter, find_adapter
from .devices import resolve_device  # noqa: F401 - re-exported for train/demo
from .errors import InputError, ParameterError
from .probe_data import ProbeExample
from .rescale import DivergenceError, ResidualScaling, check_betas

PRECISIONS = ("auto", "bf16", "fp32")


# -- device and precision ----------------------------------------------------------------
def autocast(device: Any, precision: str = "auto") -> Any:
    """bf16 autocast on CUDA (``auto``) or wherever ``bf16`` is asked for; a no-op for fp32."""
    import torch

    if precision not in PRECISIONS:
        raise ParameterError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
    enabled = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


# -- batches ------------------------------------------------------------------------------
@dataclass
class LMBatch:
    """Right-padded token batch.

    Attributes:
        input_ids, attention_mask: (B, T) int64.
        label_mask: (B, T) bool, True at positions whose logits predict a target token.
        labels: (N,) int64, the target tokens in row-major order of ``label_mask``.
        last_prompt: (B,) int64, index of each row's last prompt token.
        first_label: (B,) int64, index into ``labels`` of each row's first target token (Y).
    """

    input_ids: Any
    attention_mask: Any
    label_mask: Any
    labels: Any
    last_prompt: Any
    first_label: Any

    def to(self, device: Any) -> LMBatch:
        return LMBatch(*(t.to(device) for t in (
            self.input_ids, self.attention_mask, self.label_mask, self.labels,
            self.last_prompt, self.first_label)))


def make_batch(examples: Sequence[ProbeExample], target_tokens: int | None = None,
               max_length: int | None = None, pad_id: int = 0) -> LMBatch:
    """Build an :class:`LMBatch` from probe examples.

    Args:
        target_tokens: score at most this many target tokens per example (None: all).
        max_length: longest sequence the model accepts; prompts are cut from the left.
        pad_id: id written into padding (masked out; any valid id works).
    """
    import torch

    rows, label_pos, labels, last, first = [], [], [], [], []
    for ex in examples:
        tgt = list(ex.target_ids[:target_tokens] if target_tokens else ex.target_ids)
        prompt = list(ex.input_ids)
        if max_length is not None:
            keep = max_length - (len(tgt) - 1)
            if keep < 1:
                tgt, keep = tgt[:max_length], 1
            prompt = prompt[-keep:]
        rows.append(prompt + tgt[:-1])
        label_pos.append(range(len(prompt) - 1, len(prompt) - 1 + len(tgt)))
        first.append(len(labels))
        labels.extend(tgt)
        last.append(len(prompt) - 1)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    lmask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row, pos) in enumerate(zip(rows, label_pos, strict=True)):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
        lmask[i, list(pos)] = True
    return LMBatch(ids, mask, lmask, torch.tensor(labels, dtype=torch.long),
                   torch.tensor(last, dtype=torch.long), torch.tensor(first, dtype=torch.long))


def model_max_length(model: Any) -> int | None:
    """The longest input the model's position scheme allows, when its config says."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def target_logits(model: Any, batch: LMBatch) -> Any:
    """Logits at the label positions, shape (N, vocab), without computing the others."""
    try:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       logits_to_keep=batch.label_mask).logits
    except TypeError:  # a model without logits_to_keep: compute all, then select
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    if logits.dim() == 3:
        logits = logits[batch.label_mask]
    return logits


def batch_loss(model: Any, batch: LMBatch) -> tuple[Any, Any]:
    """(mean cross-entropy over the batch's target tokens [nats], their logits (N, vocab))."""
    import torch.nn.functional as F

    logits = target_logits(model, batch).float()
    return F.cross_entropy(logits, batch.labels), logits


# -- evaluation ---------------------------------------------------------------------------
@dataclass
class EvalResult:
    """Scores of the model on one data set.

    Attributes:
        loss: mean cross-entropy per target token (nats), teacher-forced.
        accuracy: next-token accuracy, the share of examples whose first target token (Y)
            is the arg-max prediction at the last prompt token.
        token_accuracy: the same over every target token, teacher-forced.
        tokens, examples: how many target tokens and examples were scored.
    """

    loss: float
    accuracy: float
    token_accuracy: float
    tokens: int
    examples: int


def iter_batches(examples: Sequence[ProbeExample], batch_size: int,
                 order: Sequence[int] | None = None) -> Iterator[list[ProbeExample]]:
    """Consecutive batches of examples in ``order`` (default: sorted by length, less padding)."""
    if order is None:
        order = sorted(range(len(examples)),
                       key=lambda i: len(examples[i].input_ids) + len(examples[i].target_ids))
    for start in range(0, len(order), batch_size):
        yield [examples[i] for i in order[start:start + batch_size]]


def evaluate(model: Any, examples: Sequence[ProbeExample], batch_size: int = 32,
             device: Any = None, precision: str = "auto",
             target_tokens: int | None = None) -> EvalResult:
    """Loss and accuracy of the model (as it is, hooks included) on ``examples``."""
    import torch

    device = device if device is not None else _device_of(model)
    max_len = model_max_length(model)
    total_loss, first_right, token_right, tokens = 0.0, 0, 0, 0
    with torch.no_grad(), autocast(device, precision):
        for chunk in iter_batches(examples, batch_size):
            batch = make_batch(chunk, target_tokens, max_len).to(device)
            loss, logits = batch_loss(model, batch)
            hits = logits.argmax(-1) == batch.labels
            total_loss += float(loss) * hits.numel()
            token_right += int(hits.sum())
            first_right += int(hits[batch.first_label].sum())
            tokens += hits.numel()
    return EvalResult(total_loss / tokens, first_right / len(examples), token_right / tokens,
                      tokens, len(examples))


def _device_of(model: Any) -> Any:
    import torch

    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


# -- fitting ------------------------------------------------------------------------------
@dataclass
class FitConfig:
    """Settings of one β fit.

    Attributes:
        lr: AdamW learning rate (β is O(1), so 0.01-0.1 is the useful range).
        steps: optimiser steps (ignored when ``epochs`` is set).
        epochs: passes over the training split; sets steps = ceil(epochs · n / (batch · accum)).
        batch_size: examples per micro-batch.
        grad_accum: micro-batches per optimiser step.
        weight_decay: AdamW decoupled weight decay on β (pulls β toward 0).
        heldout_fraction: share of the fit data held out for early stopping (0: none).
        eval_every: optimiser steps between held-out evaluations.
        patience: held-out evaluations without improvement before stopping.
        min_delta: improvement in held-out loss (nats) that counts.
        diverge_factor: stop when the running loss exceeds this × the starting loss.
        target_tokens: score at most this many target tokens per example (None: all).
        precision: "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" or "fp32".
    """

    lr: float = 0.05
    steps: int = 200
    epochs: float | None = None
    batch_size: int = 16
    grad_accum: int = 1
    weight_decay: float = 0.0
    heldout_fraction: float = 0.1
    eval_every: int = 20
    patience: int = 5
    min_delta: float = 0.0
    diverge_factor: float = 4.0
    target_tokens: int | None = None
    precision: str = "auto"

    def validate(self) -> None:
        checks = [
            (self.lr > 0 and math.isfinite(self.lr), "lr must be a positive number"),
            (self.steps >= 1, "steps must be at least 1"),
            (self.epochs is None or self.epochs > 0, "epochs must be positive"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (self.grad_accum >= 1, "gradient accumulation must be at least 1"),
            (self.weight_decay >= 0, "weight decay must be ≥ 0"),
            (0 <= self.heldout_fraction < 1, "held-out fraction must be in [0, 1)"),
            (self.eval_every >= 1, "eval-every must be at least 1"),
            (self.patience >= 1, "patience must be at least 1"),
            (self.diverge_factor > 1, "diverge factor must be > 1"),
            (self.target_tokens is None or self.target_tokens >= 1,
             "target tokens must be at least 1"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ParameterError(message)

    def total_steps(self, n_train: int) -> int:
        if self.epochs is None:
            return self.steps
        per_step = self.batch_size * self.grad_accum
        return max(1, math.ceil(self.epochs * n_train / per_step))


@dataclass
class FitResult:
    """Outcome of one β fit.

    Attributes:
        betas: the kept β (lowest held-out loss), L floats.
        seed: the seed of data order and held-out split.
        steps_run: optimiser steps taken; best_step: the step whose β was kept (0: initial).
        heldout_before, heldout_after: held-out loss at β = 1 and at the kept β (nats;
            None without a held-out split).
        stopped_early: True when patience ran out.
        history: (step, running train loss, held-out loss or None) at each evaluation.
        seconds: wall time.
    """

    betas: list[float]
    seed: int
    steps_run: int
    best_step: int
    heldout_before: float | None
    heldout_after: float | None
    stopped_early: bool
    n_train: int
    n_heldout: int
    history: list[tuple[int, float, float | None]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressFn = Callable[[int, int, float], None]


def split_heldout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train indices, held-out indices) of n examples; ≥ 1 in each when fraction > 0."""
    order = np.random.default_rng(seed).permutation(n)
    if fraction == 0:
        return order, order[:0]
    if n < 2:
        raise InputError(f"need at least 2 fit examples to hold some out, got {n}")
    k = min(n - 1, max(1, round(fraction * n)))
    return order[k:], order[:k]


@contextlib.contextmanager
def frozen(model: Any) -> Iterator[None]:
    """Turn off gradients of every model weight (restored on exit); eval mode throughout."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    for p, _ in flags:
        p.requires_grad_(False)
    model.eval()
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def fit_betas(model: Any, examples: Sequence[ProbeExample], config: FitConfig | None = None,
              seed: int = 0, adapter: ModelAdapter | None = None, device: Any = None,
              progress: ProgressFn | None = None) -> FitResult:
    """Fit one β per block on ``examples`` (model frozen); returns the kept β.

    ``progress(step, total_steps, running_loss)`` is called after every optimiser step.
    Raises :class:`DivergenceError` on a NaN/inf loss, gradient or β, or a loss that grows
    past ``diverge_factor`` × its starting value.
    """
    import torch

    config = config or FitConfig()
    config.validate()
    adapter = adapter or find_adapter(model)
    device = device if device is not None else _device_of(model)
    train_idx, held_idx = split_heldout(len(examples), config.heldout_fraction, seed)
    train = [examples[i] for i in train_idx]
    heldout = [examples[i] for i in held_idx]
    total = config.total_steps(len(train))
    max_len = model_max_length(model)
    rng = np.random.default_rng(seed + 1)
    torch.manual_seed(seed)

    def batches() -> Iterator[list[ProbeExample]]:
        while True:
            yield from iter_batches(train, config.batch_size, rng.permutation(len(train)))

    def heldout_loss() -> float | None:
        if not heldout:
            return None
        return evaluate(model, heldout, config.batch_size * 2, device, config.precision,
                        config.target_tokens).loss

    start = time.perf_counter()
    scaling = ResidualScaling(model, adapter)
    with frozen(model), scaling:
        optimiser = torch.optim.AdamW([scaling.beta], lr=config.lr,
                                      weight_decay=config.weight_decay)
        before = heldout_loss()
        best = (before if before is not None else math.inf, scaling.values(), 0)
        baseline, running, bad_evals, stopped, step = before, None, 0, False, 0
        history: list[tuple[int, float, float | None]] = []
        stream = batches()
        for step in range(1, total + 1):
            step_loss = 0.0
            for _ in range(config.grad_accum):
                batch = make_batch(next(stream), config.target_tokens, max_len).to(device)
                with autocast(device, config.precision):
                    loss, _ = batch_loss(model, batch)
                _check_finite(loss, "loss", step)
                (loss / config.grad_accum).backward()
                step_loss += float(loss.detach()) / config.grad_accum
            _check_finite(scaling.beta.grad, "gradient of β", step)
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            scaling.project_()
            _check_finite(scaling.beta, "β", step)
            running = step_loss if running is None else 0.9 * running + 0.1 * step_loss
            baseline = baseline if baseline is not None else step_loss
            if running > config.diverge_factor * max(baseline, 1e-3):
                raise DivergenceError(
                    f"β fit diverged at step {step}: running loss {running:.4g} is more than "
                    f"{config.diverge_factor:g}× the starting loss {baseline:.4g}; "
                    "lower the learning rate (--lr)"
                )
            if progress is not None:
                progress(step, total, running)
            if step % config.eval_every == 0 or step == total:
                held = heldout_loss()
                history.append((step, running, held))
                if held is None:
                    best = (running, scaling.values(), step)
                    continue
                _check_finite(torch.tensor(held), "held-out loss", step)
                if held < best[0] - config.min_delta:
                    best, bad_evals = (held, scaling.values(), step), 0
                else:
                    bad_evals += 1
                    if bad_evals >= config.patience:
                        stopped = True
                        break
        scaling.set_(best[1])
    check_betas(best[1])
    return FitResult(
        betas=best[1], seed=seed, steps_run=step, best_step=best[2],
        heldout_before=before, heldout_after=best[0] if heldout else None,
        stopped_early=stopped, n_train=len(train), n_heldout=len(heldout),
        history=history, seconds=time.perf_counter() - start,
    )


def _check_finite(value: Any, what: str, step: int) -> None:
    import torch

    if value is None:
        return
    if not bool(torch.isfinite(value.detach()).all()):
        raise DivergenceError(
            f"β fit stopped at step {step}: the {what} is NaN or infinite; check the model "
            "and data (a model that already yields NaN logits cannot be fitted) or lower --lr"
        )
