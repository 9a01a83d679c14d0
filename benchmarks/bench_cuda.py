"""The CUDA path in one short run (issue 7): every GPU code path of mi-probe, timed against
the same work on this machine's CPU, with the values compared.

Prepared for a session that is lent a GPU machine, where the repository arrives without a
virtual environment but with torch, transformers, numpy, scipy, scikit-learn, pluggy,
typer, rich and hypothesis installed. From the repository root there::

    python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . && \\
    PYTHONUNBUFFERED=1 python3 benchmarks/bench_cuda.py --out $OUT/bench_cuda.json

(about 3 minutes on an H200 with 16 CPU cores). Anywhere, as a smoke test of the script
itself: ``python benchmarks/bench_cuda.py --device cpu --quick``.

Parts (data are synthetic or random-weight models, so nothing is downloaded):

- ``renyi_exact``: exact renyi, ``--layers`` hidden-state-like layers at ``--n`` samples,
  d = 576 (``bench_renyi.synthetic_layers``): mi-probe on the device against the plain
  per-layer numpy loop on the CPU (``bench_renyi.plain_renyi_layers``, extrapolated from
  ``--plain-layers`` layers); issue 7 asks for ≥ 10× with values equal to 1e-6.
- ``renyi_approx``: the approximate path at ``--approx-n`` samples, predictive and
  incremental, all layers.
- ``ksg``: Ross KSG with labels (n = 4096, d = 576, 50 labels) on the device and on the CPU.
- ``mine``: one MINE fit on the device and on the CPU (same seed).
- ``extraction``: last-token states of every layer of a SmolLM2-135M-shaped Llama (random
  weights, same shapes and cost as the real model), mi-probe's lean extraction against the
  plain ``output_hidden_states`` forward: tokens/s, and peak device memory per length.
- ``rescale``: seconds per β optimiser step on the same model (bf16 autocast on CUDA).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import lean_last_states, plain_last_states  # noqa: E402
from bench_ksg import make_data  # noqa: E402
from bench_renyi import l2_rows, plain_renyi_layers, synthetic_layers  # noqa: E402
from results_io import RESULTS, write_record  # noqa: E402

#: SmolLM2-135M's shapes (its config.json), for a random-weight model of the same cost.
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                    num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
                    tie_word_embeddings=True)


def timed(fn, device):
    """(result, wall seconds) of fn(), waiting for the device's queued work."""
    import torch

    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def renyi_exact(dev: str, n: int, layers: int, plain_layers: int) -> dict:
    import mi_probe

    xs, y = synthetic_layers(n, 576, layers)
    mi_probe.estimate_layers([x[:64] for x in xs[:2]], y[:64], "renyi", device=dev)  # warm-up
    res, fast = timed(lambda: mi_probe.estimate_layers(xs, y, "renyi", approx="off",
                                                       device=dev), dev)
    values = [r.value for r in res]
    start = time.perf_counter()
    plain = plain_renyi_layers([l2_rows(x) for x in xs[:plain_layers]], l2_rows(y))
    per_layer = (time.perf_counter() - start) / plain_layers
    diff = max(abs(a - b) for a, b in zip(values, plain, strict=False))
    out = {"n": n, "layers": layers, "mi_probe_s": fast, "plain_s_per_layer": per_layer,
           "plain_s_extrapolated": per_layer * layers, "speedup": per_layer * layers / fast,
           "max_abs_diff": diff, "values": values}
    print(f"renyi exact  {layers} layers, n={n}: {fast:.1f} s; plain numpy loop "
          f"{per_layer:.1f} s/layer -> {per_layer * layers:.0f} s: {out['speedup']:.1f}x; "
          f"max |diff| {diff:.1e} nats", flush=True)
    return out


def renyi_approx(dev: str, n: int, layers: int) -> dict:
    import mi_probe

    xs, y = synthetic_layers(n, 576, layers)
    xs = [x.astype(np.float32) for x in xs]
    deltas = [b - a for a, b in zip(xs[:-1], xs[1:], strict=True)]
    res, wall = timed(lambda: mi_probe.estimate_layers(xs + deltas, y.astype(np.float32),
                                                       "renyi", approx="on", device=dev), dev)
    errors = [r.extras["approx_error"] for r in res]
    print(f"renyi approx {len(res)} estimates (predictive + incremental), n={n}: {wall:.1f} s; "
          f"reported error max {max(errors):.1e} nats", flush=True)
    return {"n": n, "estimates": len(res), "wall_s": wall, "max_reported_error": max(errors)}


def _both_devices(name: str, dev: str, run) -> dict:
    """Time run(device) on ``dev`` and on the CPU; values must match."""
    on_dev, t_dev = timed(lambda: run(dev), dev)
    on_cpu, t_cpu = timed(lambda: run("cpu"), "cpu")
    print(f"{name:12s} {dev}: {t_dev:.2f} s, cpu: {t_cpu:.2f} s ({t_cpu / t_dev:.1f}x); "
          f"values {on_dev:.6f} / {on_cpu:.6f}", flush=True)
    return {"device_s": t_dev, "cpu_s": t_cpu, "ratio": t_cpu / t_dev,
            "device_value": on_dev, "cpu_value": on_cpu}


def ksg(dev: str, n: int) -> dict:
    import mi_probe

    x, labels = make_data(n, 576, 50, seed=0)
    mi_probe.estimate(x[:64], labels[:64], "ksg", y_kind="discrete", device=dev)  # warm-up
    return _both_devices("ksg", dev, lambda d: mi_probe.estimate(
        x, labels, "ksg", y_kind="discrete", device=d).value)


def mine(dev: str, n: int, epochs: int) -> dict:
    import mi_probe

    x, labels = make_data(n, 576, 50, seed=1)
    for d in (dev, "cpu"):  # warm-up: the first fit initialises torch's autograd and kernels
        mi_probe.estimate(x[:64], labels[:64], "mine", y_kind="discrete", device=d,
                          max_epochs=1, batch_size=16)
    return _both_devices("mine", dev, lambda d: mi_probe.estimate(
        x, labels, "mine", y_kind="discrete", device=d, max_epochs=epochs).value)


def smollm2_shaped(dev: str, layers: int):
    """A random-weight Llama with SmolLM2-135M's shapes (``layers`` blocks), float32, eval."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(**{**SMOLLM2_135M, "num_hidden_layers": layers})
    return transformers.AutoModelForCausalLM.from_config(config).to(dev).eval()


def extraction(model, dev: str, samples: int, lengths: list[int], batch: int) -> dict:
    import torch

    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    seqs = [rng.integers(1, vocab, size=int(rng.integers(16, 64))).tolist()
            for _ in range(samples)]
    tokens = sum(map(len, seqs))
    methods = {"plain": plain_last_states, "lean": lean_last_states}
    for fn in methods.values():  # warm-up
        fn(model, seqs[:2], 2, 0)
    rate = {}
    for name, fn in methods.items():
        _, wall = timed(lambda fn=fn: fn(model, seqs, batch, 0), dev)
        rate[name] = tokens / wall
    cuda = dev.startswith("cuda")
    peak: dict[str, list] = {"plain": [], "lean": []}
    for length in lengths:
        fixed = [rng.integers(1, vocab, size=length).tolist() for _ in range(batch)]
        for name, fn in methods.items():
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            fn(model, fixed, batch, 0)
            peak[name].append(round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
                              if cuda else None)
    print(f"extraction   lean {rate['lean']:.0f} tok/s vs plain {rate['plain']:.0f} tok/s: "
          f"{rate['lean'] / rate['plain']:.2f}x; peak extra device MiB at lengths {lengths}: "
          f"plain {peak['plain']}, lean {peak['lean']}", flush=True)
    return {"tokens": tokens, "lean_tok_s": rate["lean"], "plain_tok_s": rate["plain"],
            "speedup": rate["lean"] / rate["plain"], "lengths": lengths,
            "peak_extra_mib": peak}


def rescale(model, dev: str, steps: int) -> dict:
    from mi_probe.probe_data import ProbeExample
    from mi_probe.rescale_train import FitConfig, fit_betas

    rng = np.random.default_rng(1)
    vocab = model.config.vocab_size
    examples = [ProbeExample(rng.integers(1, vocab, size=48).tolist(),
                             rng.integers(1, vocab, size=4).tolist()) for _ in range(64)]
    config = FitConfig(steps=steps, batch_size=16, heldout_fraction=0.0)
    result, wall = timed(lambda: fit_betas(model, examples, config, device=model.device), dev)
    print(f"rescale      {result.steps_run} β steps (batch 16 x 52 tokens): "
          f"{wall / result.steps_run:.3f} s/step", flush=True)
    return {"steps": result.steps_run, "s_per_step": wall / result.steps_run}


def main(argv: list[str] | None = None) -> dict:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script only")
    ap.add_argument("--parts", default="renyi_exact,renyi_approx,ksg,mine,extraction,rescale")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_cuda.json")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; run with --device cpu to check the script")
    q = args.quick
    parts = set(args.parts.split(","))
    record: dict = {"benchmark": "cuda", "device": args.device, "quick": q,
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    "torch": torch.__version__, "cpus": os.cpu_count()}
    if "renyi_exact" in parts:
        record["renyi_exact"] = renyi_exact(args.device, 256 if q else 4096, 3 if q else 31,
                                            1 if q else 2)
    if "renyi_approx" in parts:
        record["renyi_approx"] = renyi_approx(args.device, 512 if q else 16384, 3 if q else 31)
    if "ksg" in parts:
        record["ksg"] = ksg(args.device, 512 if q else 4096)
    if "mine" in parts:
        record["mine"] = mine(args.device, 512 if q else 4096, 2 if q else 20)
    if parts & {"extraction", "rescale"}:
        model = smollm2_shaped(args.device, 2 if q else 30)
        if "extraction" in parts:
            record["extraction"] = extraction(model, args.device, 16 if q else 512,
                                              [32, 64] if q else [64, 256, 1024], 4 if q else 32)
        if "rescale" in parts:
            record["rescale"] = rescale(model, args.device, 2 if q else 20)
    write_record(record, args.out)
    return record


if __name__ == "__main__":
    main()
