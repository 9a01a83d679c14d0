"""Tiny random causal LMs with real tokenizers, saved like real checkpoints (for tests).

Everything is built offline from configs in well under a second per model:

- :func:`build_tokenizer` trains a byte-level BPE (vocabulary of 320) on a few sentences, so
  any text (the built-in pydoc default data included) tokenizes;
- :func:`build_model` makes a random GPT-2, Llama, GPT-NeoX or OPT with a few layers of
  width 32 (seeded, deterministic);
- :func:`save_checkpoint` writes ``config.json`` + ``model.safetensors`` + the tokenizer with
  ``save_pretrained``, so ``mi_probe.checkpoints.load_checkpoint`` reads it like any other;
- :func:`save_trainer_run` writes ``checkpoint-<step>/`` folders with ``trainer_state.json``
  as the Hugging Face Trainer does.

Import it from a test as ``from tiny_models import ...`` (pytest puts ``tests/`` on the path),
or use the session fixtures in ``tests/conftest.py`` (``tiny_gpt2``, ``tiny_llama``,
``tiny_trainer_run``), which build each checkpoint once per test session.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ARCHITECTURES = ("gpt2", "llama", "gpt_neox", "opt")
VOCAB_SIZE = 320
WIDTH = 32
_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A function returns a value to the caller of the function.",
    "Python is a programming language that lets you work quickly.",
    "The model reads the prompt and predicts the next token.",
    "Every layer adds something to the residual stream.",
]


def build_tokenizer(vocab_size: int = VOCAB_SIZE) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on a few sentences.

    The special token ``<|endoftext|>`` (id 0) is BOS, EOS and padding.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_SENTENCES * 4, trainer)
    special = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=special, eos_token=special, pad_token=special
    )


def build_config(arch: str = "gpt2", layers: int = 3, width: int = WIDTH) -> Any:
    """A transformers config for a tiny model of architecture ``arch`` (see ARCHITECTURES)."""
    import transformers as tf

    common = {"vocab_size": VOCAB_SIZE, "bos_token_id": 0, "eos_token_id": 0,
              "pad_token_id": 0}
    if arch == "gpt2":
        return tf.GPT2Config(n_layer=layers, n_embd=width, n_head=2, n_positions=256,
                             **common)
    if arch == "llama":
        return tf.LlamaConfig(num_hidden_layers=layers, hidden_size=width,
                              intermediate_size=2 * width, num_attention_heads=2,
                              num_key_value_heads=2, max_position_embeddings=256, **common)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(num_hidden_layers=layers, hidden_size=width,
                                intermediate_size=2 * width, num_attention_heads=2,
                                max_position_embeddings=256, **common)
    if arch == "opt":
        return tf.OPTConfig(num_hidden_layers=layers, hidden_size=width, ffn_dim=2 * width,
                            num_attention_heads=2, max_position_embeddings=256,
                            word_embed_proj_dim=width, **common)
    raise ValueError(f"unknown architecture {arch!r}; use one of {ARCHITECTURES}")


def build_model(arch: str = "gpt2", layers: int = 3, width: int = WIDTH, seed: int = 0) -> Any:
    """A random causal LM (eval mode, float32) from :func:`build_config`, seeded."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(build_config(arch, layers, width))
    return model.eval()


def save_checkpoint(
    path: str | Path,
    arch: str = "gpt2",
    layers: int = 3,
    seed: int = 0,
    tokenizer: Any = None,
    step: int | None = None,
) -> Path:
    """Save a tiny model and a tokenizer to ``path`` (created); returns ``path``.

    With ``step``, also writes ``trainer_state.json`` (``{"global_step": step}``).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    build_model(arch, layers, seed=seed).save_pretrained(path)
    (tokenizer or build_tokenizer()).save_pretrained(path)
    if step is not None:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def save_trainer_run(
    root: str | Path, arch: str = "gpt2", steps: tuple[int, ...] = (10, 20, 30),
    layers: int = 3,
) -> Path:
    """``root/checkpoint-<step>/`` for each step (different random weights each), as a
    Trainer writes them; returns ``root``."""
    root = Path(root)
    tokenizer = build_tokenizer()
    for i, step in enumerate(steps):
        save_checkpoint(root / f"checkpoint-{step}", arch, layers, seed=i, tokenizer=tokenizer,
                        step=step)
    return root


def write_prompt_target_jsonl(path: str | Path, n: int = 40) -> Path:
    """``n`` lines of ``{"prompt", "target"}`` made from the tokenizer's sentences."""
    path = Path(path)
    lines = []
    for i in range(n):
        words = _SENTENCES[i % len(_SENTENCES)].split()
        cut = 2 + i % (len(words) - 2)
        prompt = " ".join(words[:cut]) + (" and" * (i // len(_SENTENCES)))
        lines.append(json.dumps({"prompt": prompt, "target": " " + words[cut]}))
    path.write_text("\n".join(lines) + "\n")
    return path
