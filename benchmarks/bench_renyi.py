"""Matrix-Rényi MI over many layers: mi-probe's batched path against a plain numpy loop.

Workload: ``--layers`` hidden-state-like matrices X_l (n, d) and one target Y (n, d), all
low-rank + noise and l2-normalised (see :func:`synthetic_layers`); I(X_l; Y) with the
paper's defaults (gaussian kernel, σ = 1, α = 1).

- ``mi-probe``: one ``mi_probe.estimate_layers(xs, y, "renyi")`` call (Gram matrices from
  one matmul, eigenvalues only, Y's Gram matrix and entropy once).
- ``plain``: what a research script does per layer: scipy ``cdist`` Gram matrices of X_l
  and Y, K / tr K, and ``numpy.linalg.eigh`` three times (X_l, Y recomputed, joint).

Both compute the same quantity, so the values must agree (max abs difference printed).
Run (threads: set OMP_NUM_THREADS / MKL_NUM_THREADS for both sides alike):

    OMP_NUM_THREADS=2 python benchmarks/bench_renyi.py                 # n=2048, d=576, 12
    OMP_NUM_THREADS=1 python benchmarks/bench_renyi.py --n 512 --layers 3   # quick

Writes benchmarks/results/renyi.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from results_io import RESULTS, write_record
from scipy.spatial.distance import cdist


def l2_rows(a: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm. a: (n, d)."""
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def synthetic_layers(n: int, d: int, layers: int, seed: int = 0, rank: int = 32):
    """Hidden-state-like data: list of ``layers`` (n, d) X_l and one (n, d) target Y.

    A shared latent z (n, rank) drives everything. Layer l mixes z with a share of
    information about Y that rises and falls with depth (a ridge), plus an anisotropic
    mean direction (hidden states are not centred) and isotropic noise; all rows are
    l2-normalised, like the paper's Z_l and Y.
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, rank))
    y = l2_rows(z[:, : rank // 2] @ rng.normal(size=(rank // 2, d))
                + 0.5 * rng.normal(size=(n, d)))
    mean_dir = rng.normal(size=d)
    xs = []
    for layer in range(layers):
        share = np.sin(np.pi * (layer + 1) / (layers + 1))
        signal = z @ rng.normal(size=(rank, d))
        own = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d))
        x = share * signal + (1 - share) * own + 0.3 * rng.normal(size=(n, d)) + 2 * mean_dir
        xs.append(l2_rows(x))
    return xs, y


def plain_entropy(k: np.ndarray) -> float:
    """von Neumann entropy of K / tr K with numpy's eigh (nats)."""
    a = k / np.trace(k)
    lam, _ = np.linalg.eigh(a)
    lam = lam[lam > 0]
    return float(-np.sum(lam * np.log(lam)))


def plain_renyi_layers(xs: list[np.ndarray], y: np.ndarray, sigma: float = 1.0) -> list[float]:
    """The plain per-layer loop: cdist Gram matrices and three eigh per layer."""
    out = []
    for x in xs:
        kx = np.exp(-cdist(x, x, "sqeuclidean") / (2 * sigma**2))
        ky = np.exp(-cdist(y, y, "sqeuclidean") / (2 * sigma**2))
        out.append(plain_entropy(kx) + plain_entropy(ky) - plain_entropy(kx * ky))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-plain", action="store_true", help="time mi-probe only")
    ap.add_argument("--out", type=Path, default=RESULTS / "renyi.json")
    args = ap.parse_args(argv)

    import mi_probe

    xs, y = synthetic_layers(args.n, args.d, args.layers, args.seed)
    mi_probe.estimate(xs[0][:64], y[:64], "renyi")  # warm-up: torch's lazy linalg init

    start = time.perf_counter()
    fast = [r.value for r in mi_probe.estimate_layers(xs, y, "renyi")]
    t_fast = time.perf_counter() - start
    print(f"mi-probe estimate_layers: {t_fast:8.2f} s  ({args.layers} layers, n={args.n}, "
          f"d={args.d})")

    record = {
        "benchmark": "renyi", "n": args.n, "d": args.d, "layers": args.layers,
        "seed": args.seed, "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "mi_probe_seconds": t_fast, "mi_probe_values": fast,
    }
    if not args.skip_plain:
        start = time.perf_counter()
        plain = plain_renyi_layers(xs, y)
        t_plain = time.perf_counter() - start
        diff = float(np.max(np.abs(np.array(fast) - np.array(plain))))
        print(f"plain numpy loop (3 eigh):  {t_plain:8.2f} s")
        print(f"speed-up: {t_plain / t_fast:.1f}x   max |difference|: {diff:.2e} nats")
        record.update(plain_seconds=t_plain, plain_values=plain,
                      speedup=t_plain / t_fast, max_abs_diff=diff)
    write_record(record, args.out)
    return record


if __name__ == "__main__":
    main()
