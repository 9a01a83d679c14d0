"""KSG with label y (Ross 2014): mi-probe against a plain KD-tree script, npeet-plus, ennemi.

Workload: n samples of x in R^d built as class means + noise (``--classes`` labels), y the
labels. Every implementation computes the same estimator (k-th neighbour among samples
with the same label, max-norm, then counts over all samples), so the values must agree:

- ``mi-probe``: ``mi_probe.estimate(x, labels, "ksg")`` (exact chunked search in torch).
- ``kdtree``: the plain baseline below: scipy cKDTree per label + one over all samples.
- ``npeet-plus``: ``npeet_plus.mi(x, labels * L, k, base=e)``, i.e. KSG algorithm 1 with the
  labels as one more coordinate spaced L apart (L larger than any distance in x): then the
  k-th joint neighbour always has the same label and the y count is the label's size, which
  is exactly the Ross estimator. (``npeet_plus.micd`` is a different estimator,
  H(X) − Σ p(y) H(X | y) with Kozachenko-Leonenko entropies and an ``abs()``; it is timed
  only with ``--with-micd`` and its value is not expected to agree.)
- ``ennemi``: ``estimate_mi(labels, x, discrete_y=True, preprocess=False)`` estimates MI
  between y and each *column* of x separately (no multivariate x), so it is compared with
  mi-probe and the baseline on the first column of x only (a separate 1-D section).

Each timing is the best of ``--repeats`` runs in this process, one thread each by default
(npeet-plus and the baseline are single-threaded); ``--all-cores`` adds a mi-probe row on
all cores (its CPU seconds then add up over threads). Run:

    OMP_NUM_THREADS=1 python benchmarks/bench_ksg.py                  # n=4096, d=576
    OMP_NUM_THREADS=1 python benchmarks/bench_ksg.py --n 1024 --d 64  # quick

Writes benchmarks/results/ksg.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from results_io import RESULTS, write_record
from scipy.spatial import cKDTree
from scipy.special import digamma


def make_data(n: int, d: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x (n, d) float64 = class mean (scale 0.3) + N(0, 1) noise; labels (n,) balanced
    (n // classes or one more per label; keep n ≥ (k + 1) · classes so that no label is
    too rare for k, where npeet-plus would compute a different estimator)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % classes)
    means = 0.3 * rng.standard_normal((classes, d))
    return means[labels] + rng.standard_normal((n, d)), labels


def kdtree_ross(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Plain Ross (2014) estimator with scipy cKDTree (max-norm), in nats.

    Labels that occur once are dropped and k is lowered to (count − 1) for rare labels,
    as scikit-learn and mi-probe do.
    """
    sizes = np.bincount(labels)[labels]
    keep = sizes >= 2
    x, labels, sizes = x[keep], labels[keep], sizes[keep]
    radius = np.empty(len(x))
    k_used = np.minimum(k, sizes - 1)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        kk = int(k_used[idx[0]])
        dist, _ = cKDTree(x[idx]).query(x[idx], k=kk + 1, p=np.inf)
        radius[idx] = dist.reshape(len(idx), -1)[:, kk]
    # m_i: the sample itself plus all samples strictly closer than the radius.
    m = cKDTree(x).query_ball_point(x, np.nextafter(radius, 0), p=np.inf, return_length=True)
    n = len(x)
    return float(digamma(n) + digamma(k_used).mean() - digamma(sizes).mean()
                 - digamma(m).mean())


def best_time(fn: Callable[[], float], repeats: int) -> tuple[float, float, float]:
    """(best wall seconds, best CPU seconds of this process, value) of ``repeats`` calls.

    CPU seconds are the steadier figure on a shared machine (with one thread each, they
    are the work done, whatever else runs)."""
    wall = cpu = math.inf
    value = math.nan
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        value = float(fn())
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, value


def optional(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def run_section(title: str, runners: dict[str, Callable[[], float]], repeats: int,
                baseline: str) -> dict[str, dict[str, float]]:
    """Time every runner, print a table against ``baseline``, return the figures."""
    rows = {name: best_time(fn, repeats) for name, fn in runners.items()}
    base_t, base_cpu, base_v = rows[baseline]
    mine_t, mine_cpu, _ = rows["mi-probe"]
    print(f"\n{title}")
    print(f"{'implementation':<14}{'wall s':>9}{'cpu s':>9}{'value (nats)':>15}{'Δ value':>10}"
          f"{'mi-probe × (wall)':>19}{'(cpu)':>8}")
    out = {}
    for name, (t, cpu, v) in rows.items():
        out[name] = {"seconds": t, "cpu_seconds": cpu, "value_nats": v,
                     "value_minus_baseline": v - base_v, "speedup_vs_baseline": base_t / t,
                     "mi_probe_speedup": t / mine_t, "mi_probe_speedup_cpu": cpu / mine_cpu}
        print(f"{name:<14}{t:>9.3f}{cpu:>9.3f}{v:>15.10f}{v - base_v:>10.1e}"
              f"{t / mine_t:>19.2f}{cpu / mine_cpu:>8.2f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--classes", type=int, default=50)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for mi-probe")
    ap.add_argument("--device", default="cpu", help="mi-probe device: cpu, cuda or auto")
    ap.add_argument("--skip", nargs="*", default=[],
                    help="implementations to leave out: kdtree npeet-plus ennemi")
    ap.add_argument("--all-cores", action="store_true",
                    help="also time mi-probe on all cores (on a busy machine OpenMP "
                         "threads that wait for each other make this much slower)")
    ap.add_argument("--with-micd", action="store_true",
                    help="also time npeet_plus.micd (a different estimator)")
    ap.add_argument("--out", type=Path,
                    default=RESULTS / "ksg.json")
    args = ap.parse_args()

    import torch

    import mi_probe

    torch.set_num_threads(args.threads)
    x, labels = make_data(args.n, args.d, args.classes, args.seed)
    k = args.k
    mi_probe.estimate(x[:64], labels[:64], "ksg", k=k, device=args.device)  # warm-up

    def ours(xx: np.ndarray) -> Callable[[], float]:
        return lambda: mi_probe.estimate(xx, labels, "ksg", k=k, device=args.device).value

    npeet = optional("npeet_plus") or optional("npeet")
    ennemi = optional("ennemi")
    runners: dict[str, Callable[[], float]] = {"mi-probe": ours(x)}
    cores = os.cpu_count() or 1
    if args.all_cores and cores > args.threads:
        def all_cores() -> float:
            torch.set_num_threads(cores)
            try:
                return ours(x)()
            finally:
                torch.set_num_threads(args.threads)

        runners[f"mi-probe {cores}thr"] = all_cores
    if "kdtree" not in args.skip:
        runners["kdtree"] = lambda: kdtree_ross(x, labels, k)
    if npeet is not None and "npeet-plus" not in args.skip:
        spacing = 10.0 * (x.max() - x.min()) + 1.0  # beyond any max-norm distance in x
        y_col = (labels * spacing).astype(float)[:, None]
        runners["npeet-plus"] = lambda: npeet.mi(x, y_col, k=k, base=math.e)
        if args.with_micd:
            runners["npeet micd"] = lambda: npeet.micd(x, labels[:, None], k=k, base=math.e)
    baseline = "kdtree" if "kdtree" in runners else "mi-probe"
    results = {"multivariate": run_section(
        f"Ross KSG, n={args.n}, d={args.d}, {args.classes} labels, k={k} "
        f"(baseline: {baseline})", runners, args.repeats, baseline)}

    if ennemi is not None and "ennemi" not in args.skip:
        x1 = x[:, :1]
        one_d = {"mi-probe": ours(x1), "kdtree": lambda: kdtree_ross(x1, labels, k),
                 "ennemi": lambda: float(ennemi.estimate_mi(
                     labels, x1, k=k, discrete_y=True, preprocess=False)[0, 0])}
        results["first_column"] = run_section(
            "Same, first column of x only (d=1; ennemi has no multivariate x)", one_d,
            args.repeats, "kdtree")

    versions = {m: getattr(optional(m), "__version__", None)
                for m in ("numpy", "scipy", "torch", "sklearn", "ennemi")}
    try:
        import importlib.metadata as md

        versions["npeet-plus"] = md.version("npeet-plus")
    except Exception:  # noqa: BLE001 - absent or unnamed distribution
        versions["npeet-plus"] = None
    report = {
        "benchmark": "ksg (Ross, label y)",
        "config": {k_: getattr(args, k_) for k_ in
                   ("n", "d", "classes", "k", "seed", "repeats", "threads", "device")},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "versions": versions,
        "results": results,
    }
    write_record(report, args.out)


if __name__ == "__main__":
    main()
