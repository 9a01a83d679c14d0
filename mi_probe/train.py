"""Full fine-tuning of a causal LM on prompt/target data, with checkpoints mi-probe can probe.

``train(model, data, out)`` updates every weight with AdamW, the loss being next-token
cross-entropy on the target tokens only (prompt and padding positions are masked), and
saves ``out/checkpoint-<step>/`` directories in the layout ``mi-probe estimate`` reads:
``config.json``, ``model.safetensors``, the tokenizer files and ``trainer_state.json``
(``global_step``, ``max_steps``, ``log_history`` with train and eval loss/accuracy).

The model is one of:

- a checkpoint directory or ``.gguf`` file (loaded with :func:`load_checkpoint`; GGUF
  weights are dequantised to float32 and saved as safetensors);
- a named tiny configuration trained from scratch, ``tiny-gpt2`` or ``tiny-llama``
  (``layers``, ``width``, ``heads`` in :class:`TrainConfig`), with a word-level tokenizer
  built offline from the words of the data (plus the words of a known task, so that the
  shifted test data of :mod:`mi_probe.tasks.arithmetic` has no unknown tokens).

Resuming: the newest checkpoint also holds ``training_state.pt`` (optimizer state, RNG
states, step). Running again with the same ``out`` continues from it and reaches exactly
the weights of an uninterrupted run: batches are a pure function of (seed, step) and the
learning rate of the step. Older checkpoints drop that file to keep the disk use at one
optimizer state.

The same code runs on CPU and CUDA (``device="auto"`` picks CUDA when present, and uses
bf16 autocast there; the weights and optimizer stay float32).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoints import discover_checkpoints, load_checkpoint
from .devices import resolve_device
from .errors import CheckpointError, FileFormatError, ParameterError
from .probe_data import ProbeExample, detect_format, load_probe_data, read_jsonl
from .rescale_train import autocast, batch_loss, evaluate, make_batch, model_max_length

TINY_MODELS = ("tiny-gpt2", "tiny-llama")
SPECIAL_TOKENS = ("<pad>", "<unk>", "<eos>")
STATE_FILE = "training_state.pt"
CONFIG_FILE = "train_config.json"
# Settings that must match for a run to be resumed (others, e.g. steps, may change).
RESUME_KEYS = ("model", "data_sha256", "seed", "batch_size", "lr", "layers", "width", "heads")


@dataclass
class TrainConfig:
    """How to train.

    Attributes:
        steps: optimizer steps in total (default: ``epochs`` worth, else 1 epoch).
        epochs: passes over the data, when ``steps`` is not given (fractions allowed).
        lr: peak learning rate (default 3e-3 for a tiny model from scratch, 5e-5 else).
        batch_size: sequences per step.
        save_every: save a checkpoint every this many steps (and at the last step).
        save_initial: also save the untrained model as checkpoint-0.
        seed: seeds the initialisation of tiny models, the batch order and torch's RNG.
        device: "auto", "cpu" or "cuda".
        warmup: linear warm-up steps (default 5 % of the steps); then cosine decay to 10 %.
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping threshold (global L2 norm).
        layers, width, heads: size of a tiny model trained from scratch.
        eval_batch_size: sequences per forward pass when evaluating.
    """

    steps: int | None = None
    epochs: float | None = None
    lr: float | None = None
    batch_size: int = 16
    save_every: int = 100
    save_initial: bool = True
    seed: int = 0
    device: str = "auto"
    warmup: int | None = None
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    layers: int = 4
    width: int = 64
    heads: int = 4
    eval_batch_size: int = 64

    def validate(self) -> None:
        for name in ("batch_size", "save_every", "layers", "width", "heads", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ParameterError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ParameterError(f"steps must be at least 1, got {self.steps}")
        if self.epochs is not None and not self.epochs > 0:
            raise ParameterError(f"epochs must be positive, got {self.epochs}")
        if self.lr is not None and not self.lr > 0:
            raise ParameterError(f"lr must be positive, got {self.lr}")
        if self.width % self.heads:
            raise ParameterError(f"width ({self.width}) must be a multiple of heads "
                                 f"({self.heads})")


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        out: the run directory.
        checkpoints: the checkpoint directories written so far, by step.
        steps: the number of optimizer steps done in total.
        resumed_from: the step the run continued from (None for a fresh run).
        history: the log (dicts with step and loss, lr, or eval_loss, eval_accuracy).
        seconds: wall time of this call.
        device: where it trained.
    """

    out: Path
    checkpoints: list[Path]
    steps: int
    resumed_from: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"

    def last_eval(self) -> dict[str, Any] | None:
        evals = [h for h in self.history if "eval_loss" in h]
        return evals[-1] if evals else None


# -- tokenizer and tiny models ------------------------------------------------------------
def _pre_tokenizer() -> Any:
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Whitespace()


def data_words(records: list[dict[str, Any]]) -> list[str]:
    """Sorted distinct words of prompt/target records (as the word-level tokenizer splits),
    plus the full vocabulary of any task the records come from."""
    from .tasks import task_vocabulary

    split = _pre_tokenizer().pre_tokenize_str
    words: set[str] = set()
    seen_tasks: set[str] = set()
    for rec in records:
        for key in ("prompt", "target"):
            words.update(w for w, _ in split(str(rec.get(key, ""))))
        task = rec.get("task")
        if task and (task, rec.get("encoding")) not in seen_tasks:
            seen_tasks.add((task, rec.get("encoding")))
            words.update(task_vocabulary(rec))
    return sorted(words)


def build_word_tokenizer(words: list[str]) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` (split on whitespace and punctuation) with
    ``<pad>``, ``<unk>`` and ``<eos>`` and an offset mapping; no special tokens are added
    when encoding."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS,
                                             *(w for w in words if w not in SPECIAL_TOKENS)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = _pre_tokenizer()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                   unk_token="<unk>", eos_token="<eos>")


def tiny_model(name: str, vocab_size: int, layers: int = 4, width: int = 64, heads: int = 4,
               seed: int = 0, max_positions: int = 256) -> Any:
    """A randomly initialised tiny causal LM (no dropout), seeded."""
    import torch
    import transformers

    if name == "tiny-gpt2":
        config = transformers.GPT2Config(
            vocab_size=vocab_size, n_positions=max_positions, n_embd=width, n_layer=layers,
            n_head=heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=2, eos_token_id=2, pad_token_id=0)
    elif name == "tiny-llama":
        config = transformers.LlamaConfig(
            vocab_size=vocab_size, hidden_size=width, intermediate_size=4 * width,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=max_positions, tie_word_embeddings=True,
            bos_token_id=2, eos_token_id=2, pad_token_id=0)
    else:
        raise ParameterError(f"unknown tiny model {name!r}; use one of {', '.join(TINY_MODELS)}")
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    return model.float()


# -- schedule and batch order -------------------------------------------------------------
def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up to ``peak`` over
    ``warmup`` steps, then cosine decay to 10 % of the peak at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(frac, 1.0))))


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """Example indices of step ``step``: a seeded permutation per epoch, cut in batches
    (the last, short batch of an epoch is dropped unless the data is smaller than a batch)."""
    per_epoch = max(1, n // batch_size)
    epoch, i = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[i * batch_size: (i + 1) * batch_size]


# -- the run ------------------------------------------------------------------------------
def _read_prompt_target(path: str | Path, what: str) -> list[dict[str, Any]]:
    records, _ = read_jsonl(path)
    fmt = detect_format(records, str(path))
    if fmt == "text":
        raise FileFormatError(
            f"{path}: training needs prompt/target records ({{\"prompt\", \"target\"}}) or "
            f"token ids, not text records; {what}"
        )
    return records


def _examples(path: str | Path, tokenizer: Any) -> list[ProbeExample]:
    return load_probe_data(path, tokenizer, samples=None).examples


def _latest_resumable(out: Path) -> Path | None:
    if not out.is_dir():
        return None
    try:
        refs = discover_checkpoints(out)
    except CheckpointError:
        return None
    for ref in reversed(refs):
        if (ref.path / STATE_FILE).is_file():
            return ref.path
    return None


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    tmp.replace(path)


def _run_settings(model_spec: str, data_sha: str, config: TrainConfig, lr: float
                  ) -> dict[str, Any]:
    settings = asdict(config)
    settings.update(model=model_spec, data_sha256=data_sha, lr=lr)
    return settings


def clear_run(out: str | Path) -> None:
    """Delete what a training run wrote under ``out`` (checkpoint-* folders, its config)."""
    out = Path(out)
    if not out.is_dir():
        return
    for d in out.glob("checkpoint-*"):
        if d.is_dir():
            shutil.rmtree(d)
    (out / CONFIG_FILE).unlink(missing_ok=True)


def train(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    config: TrainConfig | None = None,
    eval_data: str | Path | None = None,
    callback: Callable[[str, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Fine-tune all weights of ``model`` on prompt/target ``data``, saving checkpoints.

    Args:
        model: a checkpoint directory, a .gguf file, or a tiny model name (TINY_MODELS).
        data: JSONL of {"prompt", "target"} records (or token ids).
        out: the run directory; a run there is resumed (see module doc).
        config: the settings (defaults: :class:`TrainConfig`).
        eval_data: JSONL evaluated at every checkpoint (loss and first-token accuracy).
        callback: ``callback(kind, info)`` with kind "start", "step" (step, total, loss,
            lr), "checkpoint" (step, path, eval metrics) and "done".
    """
    import torch

    config = config or TrainConfig()
    config.validate()
    started = time.perf_counter()
    emit = callback or (lambda kind, info: None)
    out = Path(out)
    records = _read_prompt_target(data, "use `mi-probe data arithmetic` to make some")
    _, data_sha = read_jsonl(data)
    eval_records = _read_prompt_target(eval_data, "give prompt/target data to --eval") \
        if eval_data else []
    model_spec = str(model)
    device = resolve_device(config.device)
    tiny = model_spec in TINY_MODELS
    lr = config.lr or (3e-3 if tiny else 5e-5)
    settings = _run_settings(model_spec, data_sha, config, lr)

    resume_dir = _latest_resumable(out)
    if resume_dir is not None:
        _check_resume(out, settings)
        loaded = load_checkpoint(resume_dir, device=str(device), dtype="float32",
                                 need_tokenizer=not tiny and _needs_tokenizer(records))
        net, tokenizer = loaded.model, loaded.tokenizer
        state = torch.load(resume_dir / STATE_FILE, weights_only=True)
        start_step = int(state["step"])
        history = json.loads((resume_dir / "trainer_state.json").read_text())["log_history"]
    else:
        if any(out.glob("checkpoint-*")):
            raise CheckpointError(
                f"{out} holds checkpoints but none can be resumed (no {STATE_FILE}); "
                "use another --out, or --overwrite to start over"
            )
        net, tokenizer = _fresh_model(model_spec, records + eval_records, config, device)
        state, start_step, history = None, 0, []
    net.to(device).train()
    max_len = model_max_length(net)
    examples = _examples(data, tokenizer)
    eval_examples = _examples(eval_data, tokenizer) if eval_data else []
    total = config.steps or max(1, math.ceil((config.epochs or 1.0) * len(examples)
                                             / config.batch_size))
    warmup = config.warmup if config.warmup is not None else max(1, total // 20)
    settings.update(max_steps=total)

    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=config.weight_decay)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    else:
        torch.manual_seed(config.seed)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_json(out / CONFIG_FILE, settings)
    checkpoints = [r.path for r in discover_checkpoints(out)] if resume_dir else []
    emit("start", {"device": str(device), "total": total, "start_step": start_step,
                   "resumed_from": resume_dir, "examples": len(examples), "lr": lr,
                   "parameters": sum(p.numel() for p in net.parameters())})

    def save(step: int) -> None:
        metrics = None
        if eval_examples:
            net.eval()
            metrics = asdict(evaluate(net, eval_examples, config.eval_batch_size, device))
            net.train()
            history.append({"step": step, "eval_loss": metrics["loss"],
                            "eval_accuracy": metrics["accuracy"]})
        path = _save_checkpoint(out, step, net, tokenizer, optimizer, history, total,
                                len(examples), config.batch_size)
        if path not in checkpoints:
            checkpoints.append(path)
        emit("checkpoint", {"step": step, "path": path, "eval": metrics})

    if start_step == 0 and config.save_initial and resume_dir is None:
        save(0)
    for step in range(start_step, total):
        idx = batch_indices(step, len(examples), config.batch_size, config.seed)
        batch = make_batch([examples[i] for i in idx], max_length=max_len).to(device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, lr, warmup)
        with autocast(device):
            loss, _ = batch_loss(net, batch)
        if not torch.isfinite(loss):
            raise ParameterError(f"the training loss became {float(loss)} at step {step + 1}; "
                                 "lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.max_grad_norm)
        optimizer.step()
        done = step + 1
        loss_value = float(loss.detach())
        history.append({"step": done, "loss": loss_value, "lr": optimizer.param_groups[0]["lr"]})
        emit("step", {"step": done, "total": total, "loss": loss_value,
                      "lr": optimizer.param_groups[0]["lr"]})
        if done % config.save_every == 0 or done == total:
            save(done)
    result = TrainResult(out, sorted(checkpoints, key=_step_key), total,
                         start_step if resume_dir else None, history,
                         time.perf_counter() - started, str(device))
    emit("done", {"result": result})
    return result


def _step_key(path: Path) -> int:
    return int(path.name.split("-")[-1])


def _needs_tokenizer(records: list[dict[str, Any]]) -> bool:
    return "prompt" in records[0]


def _check_resume(out: Path, settings: dict[str, Any]) -> None:
    cfg_path = out / CONFIG_FILE
    if not cfg_path.is_file():
        return
    saved = json.loads(cfg_path.read_text())
    changed = [k for k in RESUME_KEYS if saved.get(k) != settings.get(k)]
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise ParameterError(
            f"{out} holds a run with other settings ({diffs}); use another --out, the same "
            "settings to resume, or --overwrite to start over"
        )


def _fresh_model(spec: str, records: list[dict[str, Any]], config: TrainConfig,
                 device: Any) -> tuple[Any, Any]:
    if spec in TINY_MODELS:
        if not _needs_tokenizer(records):
            raise FileFormatError("training a tiny model from scratch needs prompt/target "
                                  "records (its tokenizer is built from their words)")
        tokenizer = build_word_tokenizer(data_words(records))
        net = tiny_model(spec, len(tokenizer), config.layers, config.width, config.heads,
                         config.seed)
        return net, tokenizer
    if not Path(spec).exists():
        raise CheckpointError(
            f"{spec!r} is neither a checkpoint path nor a tiny model name "
            f"({', '.join(TINY_MODELS)})"
        )
    loaded = load_checkpoint(spec, device=str(device), dtype="float32",
                             need_tokenizer=_needs_tokenizer(records))
    net = loaded.model
    if loaded.ref.kind == "gguf":
        net = dequantized_copy(net).to(device)
    return net, loaded.tokenizer


def dequantized_copy(model: Any) -> Any:
    """A plain float32 copy of a model loaded from a GGUF file.

    transformers dequantizes GGUF weights to ordinary tensors but keeps the model flagged as
    quantized, which forbids ``.float()`` and ``save_pretrained``; the copy is built from the
    same config without the quantization entry and gets the same weights.
    """
    import copy

    import torch
    import transformers

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    tied = set(getattr(fresh, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied:
        raise CheckpointError(
            f"could not copy the GGUF model's weights (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})"
        )
    return fresh


def _save_checkpoint(out: Path, step: int, model: Any, tokenizer: Any, optimizer: Any,
                     history: list[dict[str, Any]], total: int, n_examples: int,
                     batch_size: int) -> Path:
    """Write checkpoint-<step>/ atomically (temp dir, then rename); move the resume state."""
    import torch

    final = out / f"checkpoint-{step}"
    tmp = out / f".checkpoint-{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    state = {"global_step": step, "max_steps": total,
             "epoch": step * batch_size / max(n_examples, 1), "log_history": history}
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1) + "\n")
    torch.save({"step": step, "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                else None}, tmp / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in out.glob(f"checkpoint-*/{STATE_FILE}"):
        if old.parent != final:
            old.unlink()
    return final
