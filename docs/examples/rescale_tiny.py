"""Build the worked example of docs/rescaling.md: a tiny GPT-2 and progression data.

Task: a prompt of 8 tokens s, s+d, s+2d, ... (mod 32) and the next one as the target.
In distribution (ID) the step d is 1, 2 or 3; the shifted (OOD) data uses d = 4 or 5,
which the model never saw. The model (4 blocks, width 64) is trained on ID data only,
for 400 steps (about a minute on a busy CPU). Writes, under the folder given:

    model/                                  the checkpoint (config.json + safetensors)
    id_train.jsonl id_test.jsonl            token-id records {"input_ids", "target_id"}
    ood_train.jsonl ood_test.jsonl

Usage: python docs/examples/rescale_tiny.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformers as tf

MODULUS, LENGTH = 32, 8
ID_STEPS, OOD_STEPS = (1, 2, 3), (4, 5)


def progressions(n: int, seed: int, steps: tuple[int, ...]) -> np.ndarray:
    """(n, LENGTH + 1) token ids; the last column is the target."""
    rng = np.random.default_rng(seed)
    start, step = rng.integers(0, MODULUS, n), rng.choice(steps, n)
    return (start[:, None] + step[:, None] * np.arange(LENGTH + 1)[None]) % MODULUS


def write(path: Path, rows: np.ndarray) -> None:
    path.write_text("".join(json.dumps({"input_ids": r[:-1].tolist(), "target_id": int(r[-1])})
                            + "\n" for r in rows))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = tf.GPT2Config(n_layer=4, n_embd=64, n_head=4, vocab_size=MODULUS,
                           n_positions=LENGTH + 1, bos_token_id=0, eos_token_id=0)
    model = tf.GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(400):
        ids = torch.from_numpy(progressions(64, 10_000 + step, ID_STEPS))
        logits = model(ids[:, :-1]).logits[:, 1:]  # predict tokens 2.. (they need a step)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, MODULUS),
                                                 ids[:, 2:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().save_pretrained(out / "model")
    for name, steps, seed in (("id", ID_STEPS, 1), ("ood", OOD_STEPS, 2)):
        write(out / f"{name}_train.jsonl", progressions(400, seed, steps))
        write(out / f"{name}_test.jsonl", progressions(300, seed + 100, steps))
    print(f"trained to loss {loss.item():.3f}; wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "rescale-example"))
