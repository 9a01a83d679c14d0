"""Exact nearest-neighbour search in the max-norm (Chebyshev), brute force in torch.

For samples a, b in R^d the max-norm distance is ‖a − b‖_∞ = max_t |a_t − b_t|. A *joint*
space made of several spaces (x and y in KSG) uses the max of the per-space distances,
which is the max-norm of the concatenation, so each space is searched on its own and the
blocks are combined elementwise.

Cost and memory: O(n² · d) time. A space whose whole (n, n) screen matrix fits in
:data:`FULL_MATRIX_BYTES` (n ≤ 16384 by default) computes it once, each pair once (with
torch's fused ``pdist`` kernel on CPU), and reuses it for every search on that space;
larger spaces go in row chunks against all columns with O(chunk_size · n) memory. The
same code runs on CPU and CUDA. At d in the hundreds a KD-tree does not prune, so brute
force is the fast path; at low total dimension on CPU (``method="auto"``) scipy's
cKDTree is used instead.

Exactness. Every result is the one a plain float64 computation gives: distances are
``max_t |fl64(a_t − b_t)|`` of the float64 samples. The bulk of the work runs on a cheaper
*screen* copy of the data, and every decision the screen cannot settle — its distance
lies within a proven bound (``MaxNormSpace.slack``) of a k-th distance or a radius — is
recomputed from the float64 samples. Screens, with c the per-feature mean (rounded to
float32) and M = max |x − c|:

- "int16": x − c quantised to a power-of-two step h ≥ M / 16383 (differences fit in
  int16; the feature loop runs about 2× faster than in float32 on CPU; used for row
  chunks on CPU). |screen − float64 distance| ≤ h + 2^-51·M; slack = 1.001·h + 2^-40·M.
- "float32": |d32 − d64| ≤ 4.5 · 2^-24 · M; slack = 8 · 2^-24 · M.

Ties (equal float64 distances) are resolved as a float64 search would resolve them: counts
use the comparison asked for (strict or not), and which of several tied samples is "the
k-th" does not change the k-th distance.

Reusable pieces: :class:`MaxNormSpace` (one space, prepared once and reusable across
searches), :func:`kth_neighbor_distances`, :func:`count_within` and the one-pass
:func:`knn_counts` that KSG uses (k-th neighbour plus counts within that radius).

Example::

    from mi_probe.neighbors import MaxNormSpace, kth_neighbor_distances, count_within
    x = MaxNormSpace(x_np)                      # (n, d) array or tensor
    eps = kth_neighbor_distances([x], k=3)      # (n,) float64 tensor
    n_x = count_within([x], eps, strict=True)   # (n,) int64, self not counted
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .devices import resolve_device
from .errors import ParameterError

#: A space keeps its whole (n, n) distance matrix when it takes at most this many bytes
#: (n ≤ 16384 for the float32 screen): computed once using symmetry (half the work of row
#: chunks) and reused by every search on the space, e.g. a y shared by all layers. Above
#: it, rows are processed in chunks with O(chunk · n) memory.
FULL_MATRIX_BYTES = 1 << 30
#: Screens of MaxNormSpace (see its docstring).
SCREENS = ("auto", "int16", "float32", "none")
#: Unit roundoff of float32 (round to nearest).
_U32 = 2.0**-24
#: Screens are used for data spreads in this range (else float32 could under/overflow).
_SCREEN_MIN_ABS, _SCREEN_MAX_ABS = 1e-30, 1e30
#: int16 screen: |quantised value| ≤ this, so differences fit in int16.
_INT16_LEVELS = 16383
#: screen="auto" picks int16 when its step is at most this fraction of the sampled
#: nearest-neighbour distance (a wider step leaves more pairs to settle in float64).
_INT16_MAX_STEP = 2.0**-9
#: A chunk whose undecided pairs exceed this fraction of the chunk is redone in float64.
_REDO_FRACTION = 0.125
#: Elements per batch when recomputing single pairs in float64 (pairs × d).
_PAIR_BATCH_ELEMENTS = 1 << 22
#: method="auto" uses a KD-tree on the CPU up to this joint dimension (d_x + d_y).
KDTREE_MAX_DIM = 8
#: Screen candidates looked at beyond the k-th before falling back to the whole row.
_EXTRA_CANDIDATES = 8


def default_chunk_size(n: int, device: torch.device) -> int:
    """Rows per chunk: a (chunk, n) block of about 2^19 elements on CPU (cache-sized; as
    fast as any at n = 4096, d = 576), 2^25 on a GPU; at least 64 rows, so that the
    per-operation overhead stays small at large n."""
    budget = (1 << 25) if device.type == "cuda" else (1 << 19)
    return int(min(max(budget // max(n, 1), 64), max(n, 1)))


class MaxNormSpace:
    """The samples of one space, prepared for max-norm search.

    Args:
        values: (n, d) samples (numpy array or tensor); kept as float64 on ``device``.
        device: "cpu", "cuda", "auto" or a torch.device.
        screen: how the bulk of the distances is computed before close calls are settled
            in float64 (exact either way; see the module docstring): "int16" (features
            quantised to a power-of-two step, twice as fast as float32 in the feature
            loop on CPU), "float32", "none" (float64 throughout), or "auto" (int16 for row
            chunks on CPU when its step is small against the sampled nearest-neighbour
            distances, else float32). True/False mean "auto"/"none".
        full_matrix: keep the whole (n, n) screen matrix (computed once, using symmetry);
            None: when it fits in :data:`FULL_MATRIX_BYTES`.

    Attributes:
        exact: (n, d) float64 tensor, the samples.
        screen: the screen in use ("int16", "float32" or "none").
        slack: bound on |screen distance − float64 distance| (0 without a screen).
    """

    def __init__(self, values: Any, device: str | torch.device = "cpu",
                 screen: str | bool = "auto", full_matrix: bool | None = None):
        self.device = resolve_device(device)
        self.exact = torch.as_tensor(np.asarray(values) if not torch.is_tensor(values)
                                     else values).to(self.device, torch.float64)
        if self.exact.ndim == 1:
            self.exact = self.exact[:, None]
        self._exact_t_cache: torch.Tensor | None = None
        self.screen, self.slack, self._scale = "none", 0.0, None
        screen = {True: "auto", False: "none"}.get(screen, screen)
        itemsize = 8 if screen == "none" else 4
        self.full_matrix = (self.n * self.n * itemsize <= FULL_MATRIX_BYTES
                            if full_matrix is None else full_matrix)
        self._screen_t = self._make_screen(screen)
        self._full: torch.Tensor | None = None

    def _make_screen(self, screen: str) -> torch.Tensor | None:
        """The (d, n) screen copy, setting :attr:`screen` and :attr:`slack`."""
        if screen not in SCREENS:
            raise ParameterError(f"unknown screen {screen!r}; use one of {SCREENS}")
        if screen == "none" or self.exact.numel() == 0:
            return None
        centre = self.exact.mean(0).float().double()
        centred = self.exact - centre
        low, high = torch.aminmax(centred)
        spread = max(-float(low), float(high))
        if not _SCREEN_MIN_ABS < spread < _SCREEN_MAX_ABS:
            return None
        # Power-of-two step: quantised values and step × integer distances are exact.
        step = 2.0 ** math.ceil(math.log2(spread / _INT16_LEVELS))
        if screen == "auto":  # the whole matrix comes from pdist, which needs floats
            fine = (self.device.type == "cpu" and not self.full_matrix
                    and step <= _INT16_MAX_STEP * self._nn_scale())
            screen = "int16" if fine else "float32"
        self.screen = screen
        if screen == "int16":
            # |step·q − (x − c)| ≤ step/2 per value, so distances are off by at most step.
            self._scale = step
            self.slack = 1.001 * step + 2.0**-40 * spread
            return centred.mul_(1.0 / step).round_().to(torch.int16).T.contiguous()
        self.slack = 8.0 * _U32 * spread * (1.0 + 1e-6) + 2.0**-120
        return centred.float().T.contiguous()

    def _nn_scale(self) -> float:
        """Median over ≤ 32 sampled rows of the distance to the nearest of ≤ 512 sampled
        rows: a rough (high) nearest-neighbour distance, for choosing the screen."""
        gen = torch.Generator().manual_seed(0)
        perm = torch.randperm(self.n, generator=gen).to(self.device)
        rows, cols = perm[:32], perm[32:32 + 512]
        if cols.numel() == 0:
            return 0.0
        dist = max_abs_diff(self.exact[rows].T, self.exact[cols].T.contiguous())
        return float(dist.min(dim=1).values.median())

    @property
    def _exact_t(self) -> torch.Tensor:
        """(d, n) float64, one feature per row (made on first use)."""
        if self._exact_t_cache is None:
            self._exact_t_cache = self.exact.T.contiguous()
        return self._exact_t_cache

    @property
    def n(self) -> int:
        return int(self.exact.shape[0])

    @property
    def dim(self) -> int:
        return int(self.exact.shape[1])

    @property
    def screened(self) -> bool:
        """Whether blocks are float32 screen values (else exact float64)."""
        return self._screen_t is not None

    def _screen_distances(self, start: int, stop: int, cols: slice = slice(None)
                          ) -> torch.Tensor:
        """Screen (or, without one, exact) distances of rows start..stop to ``cols``."""
        cols_t = self._screen_t if self._screen_t is not None else self._exact_t
        out = max_abs_diff(cols_t[:, start:stop], cols_t[:, cols])
        if self._scale is not None:  # int16 steps → float32 (exact: power-of-two step)
            out = out.to(torch.float32).mul_(self._scale)
        return out

    def block(self, start: int, stop: int) -> torch.Tensor:
        """Distances (stop − start, n) from rows start..stop to all rows: float32 screen
        values when :attr:`screened`, else exact float64. Do not modify the result."""
        if self.full_matrix:
            if self._full is None:
                self._full = self._symmetric_matrix()
            return self._full[start:stop]
        return self._screen_distances(start, stop)

    def _symmetric_matrix(self) -> torch.Tensor:
        """The whole (n, n) matrix, computing each pair once: with torch's fused ``pdist``
        kernel on CPU (0.55 s for n = 4096, d = 576, float32, one thread, against 0.77 s
        for the int16 feature loop), else in tiles on and above the diagonal, mirrored."""
        n = self.n
        dtype = torch.float32 if self.screened else torch.float64
        if self.device.type == "cpu" and self._scale is None:
            cols_t = self._screen_t if self._screen_t is not None else self._exact_t
            condensed = torch.nn.functional.pdist(cols_t.T.contiguous(), p=math.inf)
            return _square_from_condensed(condensed, n)
        step = default_chunk_size(n, self.device)
        full = torch.empty((n, n), dtype=dtype, device=self.device)
        for s in range(0, n, step):
            e = min(s + step, n)
            tile = self._screen_distances(s, e, slice(s, None))
            full[s:e, s:] = tile
            full[e:, s:e] = tile[:, e - s:].T
        return full

    def exact_block(self, start: int, stop: int) -> torch.Tensor:
        """Exact float64 distances (stop − start, n)."""
        return max_abs_diff(self._exact_t[:, start:stop], self._exact_t)

    def pair_distances(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Exact float64 distances between sample pairs (rows[p], cols[p]); shape (P,)."""
        out = torch.empty(rows.shape[0], dtype=torch.float64, device=self.device)
        step = max(1, _PAIR_BATCH_ELEMENTS // max(self.dim, 1))
        for s in range(0, rows.shape[0], step):
            a = self.exact[rows[s:s + step]]
            b = self.exact[cols[s:s + step]]
            out[s:s + step] = (a - b).abs_().amax(dim=1)
        return out


def _square_from_condensed(condensed: torch.Tensor, n: int, block: int = 512
                           ) -> torch.Tensor:
    """(n, n) symmetric matrix with zero diagonal from pdist's condensed upper triangle
    (rows i < j in order)."""
    full = torch.empty((n, n), dtype=condensed.dtype, device=condensed.device)
    offset = 0
    for i in range(n - 1):
        full[i, i + 1:] = condensed[offset:offset + n - i - 1]
        offset += n - i - 1
    for s in range(0, n, block):
        e = min(s + block, n)
        full[e:, s:e] = full[s:e, e:].T
        upper = torch.triu(full[s:e, s:e], diagonal=1)
        full[s:e, s:e] = upper + upper.T
    return full


def max_abs_diff(rows_t: torch.Tensor, cols_t: torch.Tensor) -> torch.Tensor:
    """Max-norm distances between the columns of rows_t (d, m) and cols_t (d, n): (m, n).

    One pass per feature over an (m, n) buffer (subtract, abs, running max); any dtype
    (int16 screens too). Measured for all pairs at n = 4096, d = 576 on one CPU thread:
    float32 2.2 s, against 6.4 s for ``torch.cdist(p=inf)`` and 6.5-7 s for scipy's and
    scikit-learn's chebyshev; int16 about half the float32 time.
    """
    d, m = rows_t.shape
    out = torch.zeros((m, cols_t.shape[1]), dtype=cols_t.dtype, device=cols_t.device)
    buf = torch.empty_like(out)
    for t in range(d):
        torch.sub(rows_t[t, :, None], cols_t[t], out=buf)
        buf.abs_()
        torch.maximum(out, buf, out=out)
    return out


def _as_spaces(spaces: MaxNormSpace | Sequence[MaxNormSpace]) -> list[MaxNormSpace]:
    spaces = [spaces] if isinstance(spaces, MaxNormSpace) else list(spaces)
    if not spaces:
        raise ParameterError("a neighbour search needs at least one space")
    n = spaces[0].n
    if any(s.n != n or s.device != spaces[0].device for s in spaces):
        raise ParameterError("all spaces of a joint search need the same n and device")
    return spaces


@dataclass
class KnnCounts:
    """Result of :func:`knn_counts` (all tensors on the spaces' device).

    Attributes:
        kth: (n,) float64 distance to the k-th neighbour in the joint space.
        per_space_radius: (n, S) float64, for each space the largest distance in that
            space to any of the k nearest joint neighbours (KSG algorithm 2), or None.
        counts: (n, S) int64 neighbours within the radius in each space (self excluded),
            or None when no counting was asked for.
        method: the search that produced it ("brute", "kdtree", or a plugin's name).
    """

    kth: torch.Tensor
    per_space_radius: torch.Tensor | None
    counts: torch.Tensor | None
    method: str = ""


def knn_counts(
    spaces: MaxNormSpace | Sequence[MaxNormSpace],
    k: int | torch.Tensor,
    *,
    groups: torch.Tensor | None = None,
    count: str | None = "joint",
    chunk_size: int | None = None,
    method: str = "brute",
) -> KnnCounts:
    """k-th neighbour in the joint max-norm space, then neighbour counts per space, in one
    pass.

    Args:
        spaces: the spaces whose max-norm distances are combined by max (same n).
        k: neighbours to find, an int or an (n,) int64 tensor (a k per sample, ≥ 1).
        groups: optional (n,) int64 labels: neighbours are searched among samples with the
            same label only (counts still run over all samples).
        count: None (k-th distance only); "joint": count, in every space, the samples
            closer than the joint k-th distance (strictly; KSG algorithm 1 and Ross);
            "per-space": find, in every space, the largest distance to the k nearest joint
            neighbours and count samples at most that far (KSG algorithm 2).
        chunk_size: rows per chunk of the brute-force search (None: automatic).
        method: "brute" (chunked torch, any d, CPU or CUDA), "kdtree" (scipy's cKDTree on
            the float64 samples, CPU; fast for low total dimension), or "auto" (kdtree on
            CPU when the joint dimension is at most :data:`KDTREE_MAX_DIM`). All give the
            same result.

    Returns:
        A :class:`KnnCounts`. A sample never counts as its own neighbour; other samples at
        distance 0 (duplicates) do.
    """
    spaces = _as_spaces(spaces)
    n, dev = spaces[0].n, spaces[0].device
    if count not in (None, "joint", "per-space"):
        raise ParameterError(f"count must be None, 'joint' or 'per-space', got {count!r}")
    k_row = torch.as_tensor(k, dtype=torch.int64)
    k_row = (k_row.expand(n) if k_row.ndim == 0 else k_row).to(dev)
    k_max = int(k_row.max())
    if int(k_row.min()) < 1 or k_max > n - 1:
        raise ParameterError(f"k must lie in 1..n-1 = {n - 1}, got up to {k_max}")
    if count == "per-space" and int(k_row.min()) != k_max:
        raise ParameterError("count='per-space' needs one k for every sample")
    if choose_method(method, spaces) == "kdtree":
        return _kdtree_knn_counts(spaces, k_row, groups, count)
    step = chunk_size or default_chunk_size(n, dev)
    kth = torch.empty(n, dtype=torch.float64, device=dev)
    radius = (torch.empty((n, len(spaces)), dtype=torch.float64, device=dev)
              if count == "per-space" else None)
    counts = (torch.empty((n, len(spaces)), dtype=torch.int64, device=dev)
              if count is not None else None)
    for start in range(0, n, step):
        stop = min(start + step, n)
        chunk = _Chunk(spaces, start, stop)
        kth[start:stop], nearest = chunk.kth(k_row[start:stop], k_max, groups)
        if count is None:
            continue
        for s in range(len(spaces)):
            if count == "joint":
                r, strict = kth[start:stop], True
            else:
                r = chunk.exact_at(s, nearest).amax(dim=1)
                radius[start:stop, s] = r
                strict = False
            counts[start:stop, s] = chunk.count(s, r, strict)
    return KnnCounts(kth, radius, counts, "brute")


def choose_method(method: str, spaces: Sequence[MaxNormSpace]) -> str:
    """Resolve ``method`` ("auto", "brute" or "kdtree") for these spaces."""
    if method not in ("auto", "brute", "kdtree"):
        raise ParameterError(f"unknown search method {method!r}; use auto, brute or kdtree")
    on_cpu = spaces[0].device.type == "cpu"
    if method == "kdtree" and not on_cpu:
        raise ParameterError("the kdtree search runs on the CPU only; use device=cpu or "
                             "method brute")
    if method == "auto":
        small = sum(s.dim for s in spaces) <= KDTREE_MAX_DIM
        return "kdtree" if on_cpu and small else "brute"
    return method


def _kdtree_knn_counts(spaces: list[MaxNormSpace], k_row: torch.Tensor,
                       groups: torch.Tensor | None, count: str | None) -> KnnCounts:
    """:func:`knn_counts` with scipy's cKDTree (max-norm, float64: the same distances)."""
    from scipy.spatial import cKDTree

    arrays = [s.exact.numpy() for s in spaces]
    joint = np.hstack(arrays)
    n, k = joint.shape[0], k_row.numpy()
    kth = np.empty(n)
    nearest = np.empty((n, int(k.max())), dtype=np.int64)  # used by "per-space" (one k)
    labels = np.zeros(n, dtype=np.int64) if groups is None else groups.cpu().numpy()
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        k_max = int(k[members].max())
        dist, idx = cKDTree(joint[members]).query(joint[members], k=k_max + 1, p=np.inf)
        dist, idx = dist.reshape(len(members), -1), idx.reshape(len(members), -1)
        # Self is at distance 0, so the (k+1)-th including self is the k-th without it.
        kth[members] = dist[np.arange(len(members)), k[members]]
        if count == "per-space":
            not_self = np.argsort(idx == np.arange(len(members))[:, None], axis=1,
                                  kind="stable")
            nearest[members] = members[np.take_along_axis(idx, not_self, 1)[:, :k_max]]
    radius = counts = None
    if count is not None:
        counts = np.empty((n, len(arrays)), dtype=np.int64)
        if count == "per-space":
            radius = np.stack([np.abs(a[nearest] - a[:, None, :]).max(axis=2).max(axis=1)
                               for a in arrays], axis=1)
        for s, a in enumerate(arrays):
            r = kth if count == "joint" else radius[:, s]
            # Strict counts: at most the largest float64 below r.
            r_query = np.nextafter(r, 0.0) if count == "joint" else r
            within = cKDTree(a).query_ball_point(a, r_query, p=np.inf, return_length=True)
            self_in = (r > 0) if count == "joint" else np.ones(n, dtype=bool)
            counts[:, s] = np.where((r > 0) | (count != "joint"), within - self_in, 0)
        counts = torch.from_numpy(counts)
        radius = None if radius is None else torch.from_numpy(radius)
    return KnnCounts(torch.from_numpy(kth), radius, counts, "kdtree")


def kth_neighbor_distances(
    spaces: MaxNormSpace | Sequence[MaxNormSpace],
    k: int | torch.Tensor,
    *,
    groups: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """(n,) float64 max-norm distance from each sample to its k-th nearest other sample
    (in the joint space of ``spaces``; among samples of the same group if ``groups``)."""
    return knn_counts(spaces, k, groups=groups, count=None, chunk_size=chunk_size).kth


def count_within(
    spaces: MaxNormSpace | Sequence[MaxNormSpace],
    radius: torch.Tensor,
    *,
    strict: bool = True,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """(n, S) int64: per sample and space, the other samples at distance < radius
    (``strict``) or ≤ radius. radius: (n,) for every space or (n, S) one per space."""
    spaces = _as_spaces(spaces)
    n, dev = spaces[0].n, spaces[0].device
    radius = torch.as_tensor(radius, dtype=torch.float64, device=dev)
    if radius.ndim == 1:
        radius = radius[:, None].expand(n, len(spaces))
    step = chunk_size or default_chunk_size(n, dev)
    out = torch.empty((n, len(spaces)), dtype=torch.int64, device=dev)
    for start in range(0, n, step):
        stop = min(start + step, n)
        chunk = _Chunk(spaces, start, stop)
        for s in range(len(spaces)):
            out[start:stop, s] = chunk.count(s, radius[start:stop, s], strict)
    return out


class _Chunk:
    """Rows start..stop of a search: distance blocks per space, and exact recomputation of
    the pairs a float32 screen cannot settle."""

    def __init__(self, spaces: list[MaxNormSpace], start: int, stop: int):
        self.spaces, self.start, self.stop = spaces, start, stop
        self.blocks = [s.block(start, stop) for s in spaces]
        self.rows = torch.arange(stop - start, device=spaces[0].device)
        self.size = (stop - start) * spaces[0].n
        self._exact: list[torch.Tensor | None] = [None] * len(spaces)

    def _exact_block(self, s: int) -> torch.Tensor:
        if self._exact[s] is None:
            space = self.spaces[s]
            self._exact[s] = (self.blocks[s] if not space.screened
                              else space.exact_block(self.start, self.stop))
        return self._exact[s]

    def _exact_pairs(self, s: int, ri: torch.Tensor, ci: torch.Tensor) -> torch.Tensor:
        """Exact float64 distances in space s of the pairs (chunk row ri, column ci)."""
        if ri.numel() > _REDO_FRACTION * self.size:
            return self._exact_block(s)[ri, ci]
        return self.spaces[s].pair_distances(ri + self.start, ci)

    def kth(self, k_row: torch.Tensor, k_max: int,
            groups: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact k-th joint distance (m,) and the indices (m, k_max) of the nearest."""
        joint = self.blocks[0].clone()
        for b in self.blocks[1:]:
            torch.maximum(joint, b, out=joint)
        joint[self.rows, self.rows + self.start] = float("inf")
        if groups is not None:
            joint.masked_fill_(groups[self.start:self.stop, None] != groups[None, :],
                               float("inf"))
        n = joint.shape[1]
        if not any(sp.screened for sp in self.spaces):
            vals, idx = torch.topk(joint, k_max, dim=1, largest=False, sorted=True)
            return vals.gather(1, (k_row - 1)[:, None])[:, 0], idx
        # Every true k nearest has a screen distance ≤ kth + 2·slack (module docstring):
        # look for them among the nearest few by the screen, or in the whole row if needed.
        width = min(k_max + _EXTRA_CANDIDATES, n)
        vals, idx = torch.topk(joint, width, dim=1, largest=False, sorted=True)
        limit = vals.gather(1, (k_row - 1)[:, None]).double() + 2.0 * max(
            sp.slack for sp in self.spaces)
        cand = vals <= limit
        kth, nearest = self._exact_nearest(self.rows, idx, cand, k_row, k_max)
        if width < n:
            wide = cand[:, -1].nonzero()[:, 0]
            if wide.numel():
                cols = torch.arange(n, device=joint.device).expand(wide.numel(), n)
                kth[wide], nearest[wide] = self._exact_nearest(
                    wide, cols, joint[wide] <= limit[wide], k_row, k_max)
        return kth, nearest

    def _exact_nearest(self, rows: torch.Tensor, cols: torch.Tensor, cand: torch.Tensor,
                       k_row: torch.Tensor, k_max: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact k-th distance (r,) and nearest (r, k_max) for chunk rows ``rows`` (r,)
        among candidate columns ``cols`` (r, w) selected by ``cand`` (r, w)."""
        pr, pc = cand.nonzero(as_tuple=True)
        ri, ci = rows[pr], cols[pr, pc]
        dist = None
        for s in range(len(self.spaces)):
            d = self._exact_pairs(s, ri, ci)
            dist = d if dist is None else torch.maximum(dist, d)
        exact = torch.full(cand.shape, float("inf"), dtype=torch.float64, device=cand.device)
        exact[pr, pc] = dist
        vals, pos = torch.topk(exact, k_max, dim=1, largest=False, sorted=True)
        return vals.gather(1, (k_row[rows] - 1)[:, None])[:, 0], cols.gather(1, pos)

    def exact_at(self, s: int, idx: torch.Tensor) -> torch.Tensor:
        """Exact float64 distances in space s to the columns idx (m, j) of each row."""
        if not self.spaces[s].screened:
            return self.blocks[s].gather(1, idx)
        rows = (self.rows + self.start)[:, None].expand_as(idx)
        return self.spaces[s].pair_distances(rows.reshape(-1), idx.reshape(-1)).view(idx.shape)

    def count(self, s: int, radius: torch.Tensor, strict: bool) -> torch.Tensor:
        """(m,) int64: samples other than self at distance < radius (or ≤) in space s."""
        block = self.blocks[s]
        less = torch.lt if strict else torch.le
        if not self.spaces[s].screened:
            counted = torch.count_nonzero(less(block, radius[:, None]), dim=1)
        else:
            # Below r − slack: surely inside; above r + slack: surely outside; in between:
            # decided from the float64 samples.
            slack = self.spaces[s].slack
            below = block < _float32_toward(radius - slack, -math.inf)[:, None]
            band = (block <= _float32_toward(radius + slack, math.inf)[:, None]) ^ below
            ri, ci = band.nonzero(as_tuple=True)
            hit = less(self._exact_pairs(s, ri, ci), radius[ri])
            counted = (torch.count_nonzero(below, dim=1)
                       + torch.bincount(ri[hit], minlength=block.shape[0]))
        self_counted = (0.0 < radius) if strict else torch.ones_like(radius, dtype=torch.bool)
        return counted - self_counted.to(torch.int64)


def _float32_toward(v: torch.Tensor, direction: float) -> torch.Tensor:
    """float32 rounding of the float64 v that is ≤ v (direction −inf) or ≥ v (+inf)."""
    t = v.float()
    off = (t.double() > v) if direction < 0 else (t.double() < v)
    return torch.where(off, torch.nextafter(t, torch.full_like(t, direction)), t)
