"""mi-probe-faiss: the KSG estimator with a faiss-backed neighbour search ("ksg-faiss").

Same estimator, parameters and values as mi-probe's ``ksg`` (it subclasses it and only
replaces :meth:`~mi_probe.plugins.ksg.KSGEstimator.neighbor_stats`); faiss finds the
candidates, the max-norm decisions are made exactly in float64.

Why it is exact. faiss offers L2 (and inner-product) search only. For v in R^d,
‖v‖_∞ ≤ ‖v‖_2 ≤ √d · ‖v‖_∞, so every sample within max-norm distance r of a query lies
within L2 distance √d · r of it. faiss's exhaustive ``IndexFlatL2`` returns the K samples
of smallest *computed* squared L2 distance; its float32 arithmetic (on centred data) is
off by at most e = (2d + 8) · 2^-24 · (‖q‖² + max ‖x‖²), and the plugin allows twice that.
So if the K-th returned squared distance minus the allowance exceeds d · r², no sample
left out can be within max-norm r: the K candidates are a certified superset. The plugin
then computes exact float64 max-norm distances to the candidates only. A query whose
certificate fails is searched again with 4× more candidates.

- k-th neighbour: r = the k-th smallest exact max-norm distance among the first
  candidates (an upper bound of the true k-th), then certified as above, so the k-th
  distance and the neighbour set are exact.
- counts within a radius: faiss range search with the L2 threshold d · r² plus the
  allowance (per batch of samples with similar radii), then exact max-norm counts.

When it helps, and when not. The √d factor makes the L2 ball much larger than the
max-norm ball as d grows (about 5× more volume at d = 4, 65× at d = 8), so the candidate
sets stay small only at low dimension. Above a joint dimension of 8 (:data:`MAX_DIM`), or
when a query would need more than 4096 candidates for its k-th neighbour, the plugin uses
mi-probe's own exact search instead (same result; ``extras["search"]`` says which ran).
At d in the hundreds use the built-in ``ksg``; at low d its cKDTree path is usually at
least as fast. The plugin is mainly an example of a third-party estimator that swaps the
search backend of a built-in one (and a starting point for faiss on a GPU).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from mi_probe.plugins.ksg import KSGEstimator

from mi_probe import PluginError, hookimpl

__version__ = "0.1.0"

_U32 = 2.0**-24
#: Elements (rows × candidates × features) per batch of exact distance computations.
_BATCH_ELEMENTS = 1 << 22
#: Above this joint dimension (d_x + d_y) the √d bound prunes too little: use the
#: built-in search directly.
MAX_DIM = 8
#: Most candidates per query in the k-th neighbour search before falling back.
MAX_CANDIDATES = 4096


class BoundTooLoose(Exception):
    """Certifying a candidate set would need more than the allowed candidates."""


class L2Cover:
    """Certified candidate sets for max-norm balls, from a faiss ``IndexFlatL2``.

    Args:
        faiss: the imported faiss module.
        points: (m, d) float64 samples.
        cap: largest number of candidates per query before :class:`BoundTooLoose`.
    """

    def __init__(self, faiss: Any, points: np.ndarray, cap: int):
        centred = points - points.mean(axis=0)
        self.z = np.ascontiguousarray(centred, dtype=np.float32)
        self.index = faiss.IndexFlatL2(points.shape[1])
        self.index.add(self.z)
        self.sq = (centred**2).sum(axis=1)
        self.allowance = 2.0 * (2 * points.shape[1] + 8) * _U32
        self.m, self.d, self.cap = points.shape[0], points.shape[1], cap

    def candidates(self, rows: np.ndarray, radius_of: Callable, k_min: int
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (rows subset (r,), candidates (r, K)) that contain, for each row, every
        sample within max-norm distance radius_of(rows, candidates) of it (and itself).

        ``radius_of(rows, cand)`` returns (r,) radii; it may depend on the candidates
        (e.g. the k-th exact distance among them, an upper bound of the true k-th).
        """
        k = min(self.m, max(2 * (k_min + 1), 16))
        todo = np.asarray(rows)
        while todo.size:
            dist_sq, cand = self.index.search(self.z[todo], k)
            if k >= self.m:  # every sample is a candidate
                yield todo, cand
                return
            radius = radius_of(todo, cand) * (1.0 + 1e-9)
            allowance = self.allowance * (self.sq[todo] + self.sq.max())
            ok = dist_sq[:, -1].astype(np.float64) - allowance > self.d * radius**2
            if ok.any():
                yield todo[ok], cand[ok]
            todo = todo[~ok]
            k = min(self.m, 4 * k)
            if todo.size and self.cap < k < self.m:
                raise BoundTooLoose


    def within(self, radius: np.ndarray, batch: int = 256
               ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (rows (r,), lims (r + 1,), candidates) covering, for every sample i, all
        samples within max-norm distance radius[i] (itself included): candidates of row
        rows[j] are candidates[lims[j]:lims[j + 1]]. Uses faiss range search on batches
        of samples with similar radii (one L2 threshold per batch)."""
        order = np.argsort(radius, kind="stable")
        for s in range(0, self.m, batch):
            rows = order[s:s + batch]
            allowance = self.allowance * (self.sq[rows] + self.sq.max())
            need = self.d * (radius[rows] * (1.0 + 1e-9)) ** 2 + allowance
            lims, _, cand = self.index.range_search(self.z[rows], float(need.max()) * 1.000001)
            yield rows, lims.astype(np.int64), cand


def max_norm(points: np.ndarray, rows: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Exact float64 max-norm distances (r, K) from points[rows] to points[cand]."""
    out = np.empty(cand.shape)
    step = max(1, _BATCH_ELEMENTS // max(1, cand.shape[1] * points.shape[1]))
    for s in range(0, len(rows), step):
        diff = points[cand[s:s + step]] - points[rows[s:s + step], None, :]
        out[s:s + step] = np.abs(diff).max(axis=2)
    return out


def faiss_knn_counts(faiss: Any, arrays: list[np.ndarray], k: np.ndarray,
                     groups: np.ndarray | None, count: str, cap: int) -> dict[str, Any]:
    """k-th joint max-norm distance and counts per space (as mi_probe.neighbors.knn_counts
    computes them), with faiss candidates. Raises BoundTooLoose when pruning fails."""
    joint = np.hstack(arrays)
    n = joint.shape[0]
    labels = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    kth = np.empty(n)
    nearest = np.empty((n, int(k.max())), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        pts, k_m = joint[members], k[members]

        def sorted_exact(rows, cand, pts=pts):
            dist = max_norm(pts, rows, cand)
            dist[cand == rows[:, None]] = np.inf  # a sample is not its own neighbour
            order = np.argsort(dist, axis=1, kind="stable")
            return np.take_along_axis(dist, order, 1), np.take_along_axis(cand, order, 1)

        def kth_of(rows, cand, k_m=k_m, sorted_exact=sorted_exact):
            dist, _ = sorted_exact(rows, cand)
            return dist[np.arange(len(rows)), k_m[rows] - 1]

        cover = L2Cover(faiss, pts, cap)
        for rows, cand in cover.candidates(np.arange(len(members)), kth_of, int(k_m.max())):
            dist, cand = sorted_exact(rows, cand)
            kth[members[rows]] = dist[np.arange(len(rows)), k_m[rows] - 1]
            width = min(nearest.shape[1], cand.shape[1])
            nearest[members[rows], :width] = members[cand[:, :width]]
    radius = counts = None
    if count is not None:
        if count == "per-space":
            radius = np.stack([max_norm(a, np.arange(n), nearest).max(axis=1)
                               for a in arrays], axis=1)
        counts = np.empty((n, len(arrays)), dtype=np.int64)
        for s, a in enumerate(arrays):
            r = kth if count == "joint" else radius[:, s]
            for rows, lims, cand in L2Cover(faiss, a, cap).within(r):
                slot = np.repeat(np.arange(len(rows)), np.diff(lims))
                owner = rows[slot]
                dist = np.abs(a[cand] - a[owner]).max(axis=1)
                inside = (dist < r[owner]) if count == "joint" else (dist <= r[owner])
                inside &= cand != owner
                counts[rows, s] = np.bincount(slot[inside], minlength=len(rows))
    return {"kth": kth, "per_space_radius": radius, "counts": counts}


class FaissKSGEstimator(KSGEstimator):
    """KSG (and Ross for labels) with a faiss candidate search; see the module docstring."""

    name = "ksg-faiss"
    description = (
        "KSG kNN MI (as 'ksg') with an exact faiss-backed neighbour search: fast at low "
        "dimension, falls back to the built-in search when the L2 bound is too loose"
    )

    def neighbor_stats(self, spaces: list[Any], k: Any, params: dict[str, Any],
                       groups: np.ndarray | None = None, count: str = "joint") -> Any:
        import torch

        from mi_probe.neighbors import KnnCounts

        try:
            import faiss
        except ImportError:
            raise PluginError(
                "estimator 'ksg-faiss' needs faiss: pip install faiss-cpu (or use 'ksg')"
            ) from None
        arrays = [np.asarray(s.exact.cpu().numpy() if hasattr(s, "exact") else s,
                             dtype=np.float64) for s in spaces]
        n, dim = arrays[0].shape[0], sum(a.shape[1] for a in arrays)
        k_arr = np.broadcast_to(np.asarray(k, dtype=np.int64), (n,))
        try:
            if dim > MAX_DIM:
                raise BoundTooLoose
            res = faiss_knn_counts(faiss, arrays, k_arr, groups, count, MAX_CANDIDATES)
        except BoundTooLoose:
            fallback = super().neighbor_stats(spaces, k, params, groups, count)
            fallback.method = f"{fallback.method} (faiss L2 bound too loose here)"
            return fallback

        def tensor(a):
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a))

        return KnnCounts(tensor(res["kth"]), tensor(res["per_space_radius"]),
                         tensor(res["counts"]), "faiss")


@hookimpl
def register_estimators(register):
    register(FaissKSGEstimator)
