"""How far float32 spectra put exact renyi from float64 (issue 7), with and without deflation.

For each layer l: S(A_l), S(A_l∘B) with float64 eigenvalues (the reference) and with
float32 eigenvalues; S(B) in float64 for both, so the MI error is the error of float32
on the two per-layer spectra. ``--deflate k`` first takes the top k eigenpairs out in
float64 (exact ones, from ``eigh``) and computes the rest in float32 on the deflated
(n−k)×(n−k) block (Householder similarity, so no spurious zero eigenvalues): this
tests whether float32's error comes from the large eigenvalues (it would shrink) or not.

States as in ``bench_renyi_scale.py`` (``--states PREFIX`` with PREFIX_x.npy, PREFIX_y.npy).
Run::

    OMP_NUM_THREADS=2 python benchmarks/float32_error.py --states /tmp/smol16k \\
        --layers 0,15,30 --deflate 0,16,64

Prints the largest |MI error| per deflation rank; writes results/float32_error.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from mi_probe.plugins.renyi import entropy_from_eigenvalues, gram_matrix, l2_normalize
from results_io import RESULTS, write_record


def unit_trace_gram(values: np.ndarray) -> torch.Tensor:
    """K / tr K (n, n) float64 of l2-normalised rows, gaussian kernel σ = 1 (the defaults)."""
    t = l2_normalize(torch.as_tensor(np.asarray(values, dtype=np.float64)))
    k = gram_matrix(t, "gaussian", 1.0, normalized_rows=True)
    return k / k.diagonal().sum()


def float32_spectrum(a: torch.Tensor, deflate: int) -> torch.Tensor:
    """Eigenvalues (n,) of a: the top ``deflate`` in float64, the rest in float32."""
    if deflate == 0:
        return torch.linalg.eigvalsh(a.float()).double()
    lam, vec = torch.linalg.eigh(a)
    qr, tau = torch.geqrf(vec[:, -deflate:].clone())
    m = torch.ormqr(qr, tau, torch.ormqr(qr, tau, a, left=True, transpose=True),
                    left=False, transpose=False)
    rest = torch.linalg.eigvalsh(m[deflate:, deflate:].float()).double()
    return torch.cat([rest, lam[-deflate:]])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--states", required=True, help="prefix of _x.npy and _y.npy")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--layers", default="all", help="comma-separated, or all")
    ap.add_argument("--deflate", default="0", help="comma-separated deflation ranks")
    ap.add_argument("--out", type=Path, default=RESULTS / "float32_error.json")
    args = ap.parse_args(argv)
    xs = np.load(args.states + "_x.npy", mmap_mode="r")
    y = np.load(args.states + "_y.npy", mmap_mode="r")
    layers = (range(xs.shape[0]) if args.layers == "all"
              else [int(v) for v in args.layers.split(",")])
    ranks = [int(v) for v in args.deflate.split(",")]
    b = unit_trace_gram(y[:args.n])
    errors: dict[int, list[float]] = {k: [] for k in ranks}
    for layer in layers:
        a = unit_trace_gram(xs[layer][:args.n])
        ab = a * b
        ab /= ab.diagonal().sum()
        exact = [entropy_from_eigenvalues(torch.linalg.eigvalsh(m), 1.0) for m in (a, ab)]
        for k in ranks:
            s32 = [entropy_from_eigenvalues(float32_spectrum(m, k), 1.0) for m in (a, ab)]
            errors[k].append((s32[0] - s32[1]) - (exact[0] - exact[1]))
        print(f"layer {layer}: MI error " + ", ".join(
            f"k={k} {errors[k][-1]:+.1e}" for k in ranks), flush=True)
    summary = {k: {"max_abs": max(map(abs, e)), "over_1e-6": sum(abs(v) > 1e-6 for v in e)}
               for k, e in errors.items()}
    for k, s in summary.items():
        print(f"deflate {k}: max |MI error| {s['max_abs']:.2e} nats; "
              f"{s['over_1e-6']}/{len(errors[k])} layers over 1e-6")
    record = {"n": args.n, "layers": list(layers), "errors": errors, "summary": summary}
    write_record(record, args.out)
    return record


if __name__ == "__main__":
    main()
