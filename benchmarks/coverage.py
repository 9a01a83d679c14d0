"""Measure how often mi-probe's confidence intervals cover the true MI on Gaussian tasks.

    python benchmarks/coverage.py --n 1000 --replicates 100 --subsamples 20 \
        --out benchmarks/results/coverage.json

For each estimator and task: draw ``replicates`` fresh samples of size n (seeds 0..R-1),
estimate with ``ci=level`` (``subsamples`` half-samples each, mi_probe.uncertainty), and
count how often the interval contains

* the true MI (closed form): meaningful only for estimators of Shannon MI, and only as
  good as their bias at this n allows: the interval covers sampling noise, not bias;
* the estimator's own mean at this n (the mean of the R estimates): the coverage the
  method promises for *any* estimator, renyi included (renyi has no closed-form "truth":
  it estimates a matrix-based Rényi quantity, not Shannon MI).

It also prints the bias (mean − truth), the real spread of the estimates across samples
and the mean standard error the intervals imply (half-width / t quantile); their ratio
near 1 means the subsampling variance is calibrated. Writes one JSON file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from accuracy import ensure_gaussian_plugin
from scipy import stats

DEFAULT_TASKS = ("gauss-1x1", "gauss-dense-2x2", "gauss-2pair-3x3", "gauss-dense-5x5")
DEFAULT_ESTIMATORS = ("gaussian", "ksg", "linear-probe", "renyi")
NON_SHANNON = {"renyi"}


def measure(estimator: str, task, n: int, replicates: int, subsamples: int,
            level: float) -> dict:
    """Coverage figures for one estimator on one task (values in nats)."""
    import mi_probe

    values, lows, highs = [], [], []
    start = time.perf_counter()
    for rep in range(replicates):
        x, y = task.sample(n, seed=rep)
        res = mi_probe.estimate(x, y, estimator, ci=level, replicates=subsamples,
                                resample_seed=10_000 + rep)
        values.append(res.value)
        lows.append(res.ci[0])
        highs.append(res.ci[1])
    values, lows, highs = map(np.asarray, (values, lows, highs))
    own_mean = float(values.mean())
    implied_se = (highs - lows) / 2 / stats.t.ppf(0.5 + level / 2, subsamples - 1)
    shannon = estimator not in NON_SHANNON
    return {
        "estimator": estimator, "task": task.name, "n": n, "replicates": replicates,
        "subsamples": subsamples, "level": level, "true_mi": task.true_mi,
        "coverage_truth": float(np.mean((lows <= task.true_mi) & (task.true_mi <= highs)))
        if shannon else None,
        "coverage_own_mean": float(np.mean((lows <= own_mean) & (own_mean <= highs))),
        "mean": own_mean, "bias": own_mean - task.true_mi if shannon else None,
        "sd_across_samples": float(values.std(ddof=1)),
        "mean_implied_se": float(implied_se.mean()),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-e", "--estimator", action="append", default=[])
    parser.add_argument("-t", "--task", action="append", default=[])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--subsamples", type=int, default=20)
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/coverage.json"))
    args = parser.parse_args()

    from mi_probe.bench import select_tasks

    ensure_gaussian_plugin()
    rows = []
    print(f"{'estimator':13s} {'task':18s} {'truth':>6s} {'cov(truth)':>10s} "
          f"{'cov(own mean)':>13s} {'bias':>7s} {'sd':>7s} {'impl. se':>8s} {'s':>6s}")
    for task in select_tasks(args.task or DEFAULT_TASKS):
        for est in args.estimator or DEFAULT_ESTIMATORS:
            row = measure(est, task, args.n, args.replicates, args.subsamples, args.level)
            rows.append(row)
            cov_t = "n/a" if row["coverage_truth"] is None else f"{row['coverage_truth']:.0%}"
            bias = "n/a" if row["bias"] is None else f"{row['bias']:+.3f}"
            print(f"{est:13s} {task.name:18s} {task.true_mi:6.3f} {cov_t:>10s} "
                  f"{row['coverage_own_mean']:13.0%} {bias:>7s} "
                  f"{row['sd_across_samples']:7.4f} {row['mean_implied_se']:8.4f} "
                  f"{row['seconds']:6.0f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": vars(args) | {"out": str(args.out)},
                                    "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
