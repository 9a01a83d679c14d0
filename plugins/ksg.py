"""Kraskov–Stögbauer–Grassberger k-nearest-neighbour mutual information (max-norm).

Continuous x (n, d_x) and y (n, d_y), joint distance max(‖x_i − x_j‖_∞, ‖y_i − y_j‖_∞):

    algorithm 1:  I = ψ(k) + ψ(n) − ⟨ψ(n_x + 1) + ψ(n_y + 1)⟩
        ε_i = distance to the k-th joint neighbour; n_x = #{j ≠ i: ‖x_i − x_j‖ < ε_i}
    algorithm 2:  I = ψ(k) − 1/k + ψ(n) − ⟨ψ(n_x) + ψ(n_y)⟩
        ε_x,i = largest x-distance to the k nearest joint neighbours; n_x = #{j ≠ i:
        ‖x_i − x_j‖ ≤ ε_x,i} (likewise for y)

Discrete y (labels), Ross (2014), "algorithm 1" only:

    I = ψ(n) + ⟨ψ(k_i)⟩ − ⟨ψ(n_{y_i})⟩ − ⟨ψ(m_i)⟩
        ε_i = distance to the k_i-th nearest sample with the same label, n_{y_i} = samples
        with that label, m_i = 1 + #{j ≠ i: ‖x_i − x_j‖ < ε_i} over all samples.
    Labels with fewer than k + 1 samples use k_i = (count − 1); samples whose label occurs
    once are left out (n is then the samples kept), as scikit-learn does; a diagnostic
    says how many. This keeps rare next tokens from making the estimator unusable.

Values are in nats and are reported as computed: negative values are not clipped (a
diagnostic says so). Tie-breaking noise: every feature gets Gaussian noise of standard
deviation ``noise`` × that feature's standard deviation, drawn from a generator seeded by
``seed`` and a hash of the data, so the noise depends on the data, not on which side it is
passed: I(x; y) = I(y; x) exactly, and ``estimate_layers`` equals per-layer calls.

The neighbour search (mi_probe.neighbors) is exact (float64 decisions): brute force in
torch, O(n² · (d_x + d_y)) time, on CPU or CUDA with identical results (a KD-tree on CPU
at low dimension). Memory: each space keeps its n × n screen matrix up to n = 16384
(1 GiB; y's is then computed once for all layers), beyond that O(chunk_size · n).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import digamma

from mi_probe.data import Target
from mi_probe.errors import InputError, ParameterError
from mi_probe.estimator import Estimate, Estimator
from mi_probe.hookspecs import hookimpl
from mi_probe.params import Param

#: KSG is flagged as high-dimensional when d_x + d_y exceeds this many times ln(n).
HIGH_DIM_FACTOR = 2.0
#: Continuous y: flag values above this fraction of the largest value KSG can return.
HIGH_MI_FRACTION = 0.5
#: Discrete y: flag values above this fraction of the Ross ceiling (≈ H(y)).
SEPARABLE_FRACTION = 0.9


def jitter(values: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """float64 copy of values (n, d) plus N(0, (noise · std_j)²) noise on each feature j.

    std_j is feature j's standard deviation (1 for constant features). The generator is
    seeded by (seed, SHA-256 of the data), so equal data and seed give equal noise.
    """
    out = np.array(values, dtype=np.float64)
    if noise == 0.0:
        return out
    std = out.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    h = hashlib.sha256(memoryview(np.ascontiguousarray(out)).cast("B"))
    h.update(repr(out.shape).encode())
    rng = np.random.default_rng([seed, int.from_bytes(h.digest()[:8], "little")])
    out += (noise * scale) * rng.standard_normal(out.shape, dtype=np.float32)
    return out


@dataclass
class LabelGroups:
    """Per-sample label bookkeeping for the Ross estimator, computed once per y.

    Attributes:
        keep: (n,) bool, samples whose label occurs at least twice.
        codes: (n_kept,) int64 label codes of the kept samples.
        k: (n_kept,) int64, min(k, label count − 1) per kept sample.
        class_size: (n_kept,) int64, samples with the same label.
        n_reduced: kept samples whose k was lowered.
        n_rare_labels: labels with fewer than k + 1 samples.
    """

    keep: np.ndarray
    codes: np.ndarray
    k: np.ndarray
    class_size: np.ndarray
    n_reduced: int
    n_rare_labels: int

    @classmethod
    def build(cls, y: Target, k: int) -> LabelGroups:
        sizes = np.bincount(y.values)
        size = sizes[y.values]
        keep = size >= 2
        if keep.sum() < 2:
            raise InputError(
                "every label occurs only once, so no sample has a neighbour with the same "
                "label: the Ross KSG estimator needs repeated labels (collect more samples "
                "per label or merge rare labels)"
            )
        size_kept = size[keep]
        k_kept = np.minimum(k, size_kept - 1)
        return cls(keep, y.values[keep], k_kept, size_kept, int((k_kept < k).sum()),
                   int(((sizes > 0) & (sizes < k + 1)).sum()))


class KSGEstimator(Estimator):
    """KSG kNN mutual information; Ross (2014) for labels. See the module docstring."""

    name = "ksg"
    description = (
        "Kraskov-Stögbauer-Grassberger kNN MI in the max-norm (algorithm 1 or 2), Ross "
        "(2014) for discrete y; exact chunked search in torch on cpu or cuda"
    )
    params = (
        Param("k", int, 3, "neighbours per sample (larger: less variance, more bias)", low=1),
        Param("algorithm", int, 1, "KSG algorithm 1 or 2 (2 needs continuous y)", low=1,
              high=2),
        Param("noise", float, 1e-10, "tie-breaking noise, relative to each feature's std",
              low=0.0),
        Param("seed", int, 0, "seed of the tie-breaking noise", low=0),
        Param("device", str, "auto", "where to search: cpu, cuda or auto (same result)",
              choices=("cpu", "cuda", "auto")),
        Param("search", str, "auto", "neighbour search: chunked brute force (torch, any d, "
              "cpu or cuda), kdtree (cpu, low d), or auto (kdtree on cpu when d_x + d_y <= "
              "8); all exact and equal", choices=("auto", "brute", "kdtree")),
        Param("chunk_size", int, None, "rows per chunk of the brute-force search "
              "(default: automatic)", low=1, optional=True),
    )
    y_kinds = frozenset({"continuous", "discrete"})
    symmetric = True
    randomized = True
    # On independent data at n = 500 the KSG estimate scatters around 0 with a standard
    # deviation of about 0.01-0.02 nats in low dimension, 0.025 for labels (Ross): 4 sd.
    independence_tolerance = 0.1

    def min_samples(self, params: dict[str, Any]) -> int:
        return params["k"] + 1

    def check_params(self, params: dict[str, Any], x: np.ndarray, y: Target) -> None:
        if y.kind == "discrete" and params["algorithm"] == 2:
            raise ParameterError(
                "algorithm=2 is defined for continuous y only; labels use the Ross (2014) "
                "estimator, which is algorithm 1: pass algorithm=1"
            )

    # -- the neighbour search: a subclass may swap the backend -------------------------
    def neighbor_stats(self, spaces: list[Any], k: Any, params: dict[str, Any],
                       groups: np.ndarray | None = None, count: str = "joint") -> Any:
        """k-th joint distance and counts per space, as a
        :class:`mi_probe.neighbors.KnnCounts` (see :func:`mi_probe.neighbors.knn_counts`).

        ``spaces`` holds jittered float64 (n, d) arrays or prepared
        :class:`~mi_probe.neighbors.MaxNormSpace` objects; ``k`` an int or (n,) ints;
        ``groups`` optional (n,) labels. Subclasses may swap the search backend here.
        """
        import torch

        from mi_probe.devices import resolve_device
        from mi_probe.neighbors import MaxNormSpace, knn_counts

        dev = resolve_device(params["device"])
        prepared = [s if isinstance(s, MaxNormSpace) else MaxNormSpace(s, dev)
                    for s in spaces]
        return knn_counts(prepared, torch.as_tensor(k), count=count,
                          groups=None if groups is None else torch.as_tensor(groups).to(dev),
                          chunk_size=params["chunk_size"], method=params["search"])

    def prepare_y(self, y: np.ndarray, params: dict[str, Any]) -> Any:
        """Jittered y as a prepared space, shared by all layers (when n is small enough for
        a whole distance matrix, y's distances are then computed once)."""
        from mi_probe.neighbors import MaxNormSpace

        return MaxNormSpace(jitter(y, params["noise"], params["seed"]), params["device"])

    # -- the estimator -----------------------------------------------------------------
    def compute(self, x: np.ndarray, y: Target, params: dict[str, Any]) -> Estimate:
        return self.compute_layers([x], y, params)[0]

    def compute_layers(
        self, xs: Sequence[np.ndarray], y: Target, params: dict[str, Any]
    ) -> list[Estimate]:
        if y.kind == "discrete":
            groups = LabelGroups.build(y, params["k"])
            return [self._ross(x, groups, params) for x in xs]
        y_space = self.prepare_y(y.values, params)
        return [self._ksg(x, y_space, y.values.shape[1], params) for x in xs]

    def _ksg(self, x: np.ndarray, y_space: Any, d_y: int, params: dict[str, Any]) -> Estimate:
        k, alg, n = params["k"], params["algorithm"], x.shape[0]
        xj = jitter(x, params["noise"], params["seed"])
        res = self.neighbor_stats([xj, y_space], k, params,
                                  count="joint" if alg == 1 else "per-space")
        kth, counts = res.kth.cpu().numpy(), res.counts.cpu().numpy()
        if alg == 1:
            value = digamma(k) + digamma(n) - np.mean(digamma(counts + 1).sum(axis=1))
            ceiling = digamma(n) - digamma(k)
        else:
            value = digamma(k) - 1.0 / k + digamma(n) - np.mean(digamma(counts).sum(axis=1))
            ceiling = digamma(n) - digamma(k) - 1.0 / k
        notes = _common_notes(float(value), n, x.shape[1] + d_y, "x and y have", kth, params)
        if value > HIGH_MI_FRACTION * ceiling:
            notes.append(
                f"the value is {value / ceiling:.0%} of the largest one KSG can return at "
                f"this n and k (ψ(n) − ψ(k) = {ceiling:.3g} nats): KSG underestimates "
                "strongly dependent variables (it needs on the order of exp(I) samples; Gao, "
                "Ver Steeg & Galstyan 2015), so the true MI may be much larger"
            )
        extras = {"variant": f"ksg{alg}", "n_used": n, "ceiling_nats": float(ceiling),
                  "zero_radius_samples": int((kth == 0).sum()), "search": res.method}
        return Estimate(float(value), notes, extras)

    def _ross(self, x: np.ndarray, groups: LabelGroups, params: dict[str, Any]) -> Estimate:
        xj = jitter(x[groups.keep], params["noise"], params["seed"])
        n = xj.shape[0]
        res = self.neighbor_stats([xj], groups.k, params, groups=groups.codes)
        kth, counts = res.kth.cpu().numpy(), res.counts.cpu().numpy()
        mean_psi_size = float(np.mean(digamma(groups.class_size)))
        value = (digamma(n) + np.mean(digamma(groups.k)) - mean_psi_size
                 - np.mean(digamma(counts[:, 0] + 1)))
        ceiling = digamma(n) - mean_psi_size
        notes = _common_notes(float(value), n, x.shape[1], "x has", kth, params)
        dropped = int((~groups.keep).sum())
        if groups.n_rare_labels:
            notes.append(
                f"{groups.n_rare_labels} label(s) have fewer than k + 1 = {params['k'] + 1} "
                f"samples: k was lowered to (count − 1) for {groups.n_reduced} sample(s) and "
                f"{dropped} sample(s) whose label occurs once were left out (n used = {n}); "
                "rare labels make the estimate less reliable"
            )
        if ceiling > 0 and value > SEPARABLE_FRACTION * ceiling:
            notes.append(
                f"the value is {value / ceiling:.0%} of the most the Ross estimator can return "
                f"here (ψ(n) − ⟨ψ(n_label)⟩ = {ceiling:.3g} nats, about H(y)): the labels are "
                "almost perfectly separated by nearest neighbours in x"
            )
        extras = {"variant": "ross", "n_used": n, "ceiling_nats": float(ceiling),
                  "zero_radius_samples": int((kth == 0).sum()), "samples_dropped": dropped,
                  "search": res.method}
        return Estimate(float(value), notes, extras)


def _common_notes(value: float, n: int, dim: int, subject: str, kth: np.ndarray,
                  params: dict[str, Any]) -> list[str]:
    """Diagnostics shared by the continuous and the discrete-y estimators."""
    notes = []
    if dim > HIGH_DIM_FACTOR * math.log(n):
        notes.append(
            f"{subject} {dim} dimensions, large against ln(n) = {math.log(n):.1f}: "
            "nearest-neighbour distances concentrate in high dimension and KSG is biased "
            "(toward 0 for dependent data); compare values only at equal n and dimension"
        )
    if value < 0:
        notes.append(
            f"the estimate is negative ({value:.3g} nats) and is reported as is, not clipped "
            "to 0: KSG has no floor, and small negative values are consistent with "
            "independence at this n"
        )
    zero = int((kth == 0).sum())
    if zero:
        notes.append(
            f"{zero} sample(s) have a k-th neighbour at distance 0 (duplicate samples"
            + (", and noise=0" if params["noise"] == 0 else "")
            + "): KSG assumes continuous data; keep noise > 0 or remove duplicates"
        )
    return notes


@hookimpl
def register_estimators(register):
    register(KSGEstimator)
