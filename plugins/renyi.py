"""Matrix-based Rényi α-order mutual information (Sanchez Giraldo, Rao & Principe 2014).

For samples u_1..u_n with Gram matrix K_ij = κ(u_i, u_j), let A = K / tr(K). Then

    S_α(A) = 1/(1-α) · log Σ_i λ_i(A)^α        (α ≠ 1)
    S_1(A) = -Σ_i λ_i log λ_i                   (von Neumann limit)
    S_2(A) = -log ‖A‖_F²                        (no eigendecomposition)
    I_α(X; Y) = S_α(A) + S_α(B) - S_α(A∘B / tr(A∘B))

All entropies are in nats. Kernels (σ is the width):

    gaussian    exp(-‖u-v‖² / (2σ²))
    laplacian   exp(-‖u-v‖₁ / σ)            (scikit-learn's laplacian_kernel, gamma = 1/σ)
    polynomial  (u·v + coef0)^degree
    linear      u·v
    delta       1[u = v]                    (discrete labels; used for discrete y)

With l2-normalised rows (the default), ‖u-v‖² = 2 - 2u·v, so the Gaussian Gram matrix is
one matrix product and one elementwise exp.

Paths: the exact one computes eigenvalues only (O(n³) per entropy, Y's once per call, the
joint matrix in place; labels give a block-diagonal joint matrix whose blocks are
diagonalised separately). The approximate one (``approx="on"``, or ``"auto"`` from
``approx_above`` samples or when the exact path does not fit in memory) estimates each
entropy as a trace by stochastic Lanczos quadrature (:mod:`mi_probe.slq`, O(n²) per
matrix-vector product) and reports its error. Before any work, :func:`plan` predicts the
peak memory and raises ResourceError when it does not fit (see docs/estimators.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mi_probe.data import Target
from mi_probe.devices import resolve_device
from mi_probe.errors import ParameterError
from mi_probe.estimator import Estimate, Estimator
from mi_probe.hookspecs import hookimpl
from mi_probe.params import Param
from mi_probe.resources import fits, format_bytes, require
from mi_probe.slq import frobenius_squared, trace_function
from mi_probe.tiled import TiledSymmetric, tiled_bytes

KERNELS = ("gaussian", "laplacian", "polynomial", "linear", "delta")
WIDTH_RULES = ("median", "scott")
APPROX_MODES = ("auto", "off", "on")
#: approx="auto" approximates from this many samples on (exact spectra cost O(n³)).
APPROX_ABOVE = 8192
#: Label blocks smaller than this get exact spectra even on the approximate path.
_SMALL_BLOCK = 2048
#: Settings of the stochastic Lanczos quadrature (see mi_probe.slq.trace_function).
SLQ_DEFAULTS = {"deflate": 32, "steps": 20, "max_steps": 60, "probes": 16, "max_probes": 64}
#: Added to each approximate entropy's error: the approximate path keeps its matrices in
#: float32, whose rounding moved exact entropies of hidden-state Gram matrices by up to
#: 4e-6 nats (n = 2048, SmolLM2-135M, all layers).
FLOAT32_FLOOR = 1e-5
_MEDIAN_MAX_POINTS = 2000


def _torch():
    import torch

    return torch


def l2_normalize(x: Any) -> Any:
    """Rows scaled to unit Euclidean norm (all-zero rows stay zero). x: (n, d) tensor."""
    torch = _torch()
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


def kernel_width(x: Any, rule: float | str, seed: int = 0, p: float = 2.0) -> float:
    """The Gaussian/Laplacian width σ for data x (n, d): a number, or a rule.

    ``"median"``: the median distance between distinct samples in the kernel's metric
    (``p`` = 2 Euclidean for gaussian, 1 for laplacian), on a seeded subsample of at
    most 2000 points. ``"scott"``: σ = n^(-1/(4+d)) · mean feature standard deviation.
    """
    torch = _torch()
    if not isinstance(rule, str):
        return float(rule)
    n, d = x.shape
    if rule == "scott":
        std = float(x.double().std(dim=0, unbiased=True).mean()) if n > 1 else 1.0
        return max(std, 1e-12) * n ** (-1.0 / (4 + d))
    if rule == "median":
        if n > _MEDIAN_MAX_POINTS:
            gen = np.random.default_rng(seed)
            idx = torch.as_tensor(gen.choice(n, _MEDIAN_MAX_POINTS, replace=False))
            x = x[idx.to(x.device)]
        xd = x.double()
        dist = torch.cdist(xd, xd, p=p)
        iu = torch.triu_indices(dist.shape[0], dist.shape[0], offset=1, device=dist.device)
        med = float(torch.quantile(dist[iu[0], iu[1]], 0.5)) if iu.shape[1] else 1.0
        return med if med > 0 else 1.0
    raise ParameterError(f"unknown kernel width rule {rule!r}; use a number or {WIDTH_RULES}")


def gram_matrix(
    x: Any,
    kernel: str = "gaussian",
    sigma: float = 1.0,
    degree: int = 2,
    coef0: float = 1.0,
    normalized_rows: bool = False,
) -> Any:
    """Gram matrix K (n, n) of the rows of x (n, d) under ``kernel`` (see module doc).

    ``normalized_rows`` says the rows already have unit norm, which lets the Gaussian
    kernel skip computing squared norms. For ``"delta"``, x is (n,) or (n, 1) labels.
    """
    return kernel_block(x, x, kernel, sigma, degree, coef0, normalized_rows)


def kernel_block(
    x1: Any,
    x2: Any,
    kernel: str = "gaussian",
    sigma: float = 1.0,
    degree: int = 2,
    coef0: float = 1.0,
    normalized_rows: bool = False,
) -> Any:
    """Kernel values (n1, n2) between the rows of x1 (n1, d) and x2 (n2, d); see
    :func:`gram_matrix` (which is ``kernel_block(x, x, ...)``)."""
    torch = _torch()
    if kernel == "delta":
        same = x1.reshape(-1)[:, None] == x2.reshape(-1)[None, :]
        return same.to(torch.float32 if x1.dtype == torch.float32 else torch.float64)
    # one n1×n2 buffer, transformed in place: -‖u-v‖²/(2σ²) = (2u·v - ‖u‖² - ‖v‖²)/(2σ²)
    if kernel == "gaussian":
        g = x1 @ x2.T
        if normalized_rows:
            g.sub_(1.0)
        else:
            if x1 is x2:
                sq1 = sq2 = torch.diagonal(g).clone()
            else:
                sq1, sq2 = (x1 * x1).sum(dim=1), (x2 * x2).sum(dim=1)
            g.mul_(2.0).sub_(sq1[:, None]).sub_(sq2[None, :]).mul_(0.5)
        return g.clamp_max_(0.0).mul_(1.0 / (sigma * sigma)).exp_()
    if kernel == "laplacian":
        return torch.cdist(x1, x2, p=1.0).mul_(-1.0 / sigma).exp_()
    if kernel == "polynomial":
        return (x1 @ x2.T).add_(coef0).pow_(degree)
    if kernel == "linear":
        return x1 @ x2.T
    raise ParameterError(f"unknown kernel {kernel!r}; use one of {KERNELS}")


def sequence_gram(x: Any, *kernel_args: Any, **kernel_kwargs: Any) -> Any:
    """Sequence kernel (n, n) of per-step states x (n, T, d): entry (i, j) is the mean over
    all step pairs (t, t') of κ(x_i^t, x_j^t') (the InfoRidge paper's sequence kernel);
    the kernel arguments are those of :func:`gram_matrix`.

    Computed as the T×T block means of the Gram matrix of all n·T rows, so it needs
    (n·T)² numbers of memory. A mean of PSD kernels over a product measure is PSD.
    """
    n, steps, d = x.shape
    k = gram_matrix(x.reshape(n * steps, d), *kernel_args, **kernel_kwargs)
    return k.reshape(n, steps, n, steps).mean(dim=(1, 3))


def _trace(k: Any) -> float:
    """tr k in float64; a ParameterError when it is not positive."""
    tr = float(k.diagonal().double().sum())
    if not tr > 0:
        raise ParameterError(
            "the Gram matrix has zero trace (all-zero samples with a linear or polynomial "
            "kernel?); use the gaussian kernel or non-zero data"
        )
    return tr


def _normalized(k: Any) -> Any:
    return k / _trace(k)


def entropy_from_eigenvalues(lam: Any, alpha: float, eps: float | None = None) -> float:
    """S_α (nats) from the eigenvalues lam (n,) of a unit-trace PSD matrix.

    Negative eigenvalues (rounding) are set to 0. For α < 1, eigenvalues at or below the
    rounding level n·eps·λ_max are set to 0 as well (``eps``: machine epsilon of the dtype
    the spectrum was computed in; default: lam's own): λ^α would turn each of them into
    noise of order sqrt(eps). For α ≥ 1 they contribute at most n·eps·|log eps| and are
    kept, which is more accurate when the spectrum was computed in float32.
    """
    torch = _torch()
    cutoff = 0.0
    if alpha < 1.0:
        if eps is None:
            eps = float(torch.finfo(lam.dtype).eps)
        cutoff = lam.shape[0] * eps * float(lam.max())
    lam = torch.where(lam > cutoff, lam, torch.zeros_like(lam))
    lam = lam / lam.sum()
    if alpha == 1.0:
        pos = lam[lam > 0]
        return float(-(pos * torch.log(pos)).sum())
    return float(torch.log((lam[lam > 0] ** alpha).sum()) / (1.0 - alpha))


def spectrum(k: Any, precision: str = "float64", trace: float | None = None) -> tuple:
    """Eigenvalues (n,) float64 of k / ``trace`` (default tr k) and the machine epsilon of
    the dtype they were computed in. Only eigenvalues are computed, and k / tr k is never
    formed (the eigenvalues of k are divided instead)."""
    torch = _torch()
    dtype = torch.float64 if precision == "float64" else torch.float32
    tr = _trace(k) if trace is None else trace
    lam = torch.linalg.eigvalsh(k.to(dtype))
    return lam.double() / tr, float(torch.finfo(dtype).eps)


def matrix_entropy(k: Any, alpha: float = 1.0, precision: str = "float64") -> float:
    """Matrix-based Rényi α-entropy S_α(K / tr K) of a Gram matrix k (n, n), in nats.

    α = 2 uses the Frobenius norm (no eigendecomposition); other α use eigenvalues only,
    computed in ``precision`` ("float64" by default). k is not modified.
    """
    if alpha == 2.0:
        return -math.log(frobenius_squared(k) / _trace(k) ** 2)
    lam, eps = spectrum(k, precision)
    return entropy_from_eigenvalues(lam, alpha, eps)


def joint_entropy(k1: Any, k2: Any, alpha: float = 1.0, precision: str = "float64") -> float:
    """Joint entropy S_α(K1∘K2 / tr(K1∘K2)) of two Gram matrices (n, n), in nats."""
    return matrix_entropy(k1 * k2, alpha, precision)


# -- the approximate path ----------------------------------------------------------------
def _spectral_function(alpha: float) -> tuple:
    """(f, |f''|) on float64 arrays for the spectral sum behind S_α: −λ log λ or λ^α."""
    if alpha == 1.0:
        def f(lam):
            safe = np.where(lam > 0, lam, 1.0)
            return np.where(lam > 0, -lam * np.log(safe), 0.0)

        return f, lambda lam: 1.0 / lam

    def f_alpha(lam):
        return np.where(lam > 0, np.abs(lam) ** alpha, 0.0)

    return f_alpha, lambda lam: abs(alpha * (alpha - 1.0)) * lam ** (alpha - 2.0)


def approx_entropy(k: Any, alpha: float, tol: float, seed: int = 0, **slq: Any) -> tuple:
    """S_α(K / tr K) by stochastic Lanczos quadrature (see :mod:`mi_probe.slq`).

    Returns (entropy in nats, estimated absolute error in nats (≈ 95 %), the
    :class:`~mi_probe.slq.TraceEstimate`, or None for α = 2, which is exact). ``tol`` is
    the target error of the entropy. k (n, n) is scaled to unit trace in place.
    """
    if alpha == 2.0:
        return matrix_entropy(k, 2.0), 0.0, None
    k.div_(_trace(k))
    f, d2f = _spectral_function(alpha)
    # an error δ in Σλ^α moves S_α by δ / (|1 - α| Σλ^α); Σλ^α >= min(1, n^(1-α))
    n = k.shape[0]
    floor = 1.0 if alpha == 1.0 else abs(1.0 - alpha) * min(1.0, n ** (1.0 - alpha))
    est = trace_function(k, f, d2f, tol * floor, seed=seed, **{**SLQ_DEFAULTS, **slq})
    if alpha == 1.0:
        return est.value, est.error + FLOAT32_FLOOR, est
    total = max(est.value, 1e-300)
    error = est.error / (abs(1.0 - alpha) * total) + FLOAT32_FLOOR
    return math.log(total) / (1.0 - alpha), error, est


# -- planning: which path, and will it fit? ----------------------------------------------
@dataclass
class Plan:
    """How an estimate will be computed.

    Attributes:
        method: "exact" (full eigenvalue decompositions) or "approx" (SLQ).
        need_bytes: predicted peak memory of the n×n matrices and workspaces.
        note: a diagnostic when ``approx="auto"`` chose the approximation for memory.
    """

    method: str
    need_bytes: int
    note: str | None = None


def predicted_bytes(n: int, method: str, precision: str, steps: int = 1) -> int:
    """Peak bytes of one renyi estimate with n samples (T = ``steps`` per-step rows).

    exact: Gram of y (for labels: the label blocks of x's Gram matrix), Gram of x (the
    joint is formed in place) and the copy LAPACK works on, in ``precision``; approx: the
    upper-triangular tiles of two Gram matrices in float32 (:mod:`mi_probe.tiled`) plus
    float64 Lanczos and deflation vectors. A sequence kernel first
    builds the (n·T)² Gram matrix of all rows.
    """
    width = 8 if (method == "exact" and precision == "float64") else 4
    if method == "exact":
        need = 3 * n * n * width
    else:  # tiles of two matrices (dense for a sequence kernel), float64 Lanczos basis
        # of a round, deflation block, products
        need = 2 * (tiled_bytes(n, width) if steps == 1 else n * n * width)
        block = SLQ_DEFAULTS["deflate"] + 16
        need += n * (SLQ_DEFAULTS["max_steps"] * SLQ_DEFAULTS["max_probes"] + 4 * block) * 8
    if steps > 1:
        need += (n * steps) ** 2 * width
    return int(need)


def plan(n: int, params: dict[str, Any], steps: int = 1) -> Plan:
    """Choose the exact or approximate path and check the memory it needs.

    Raises ResourceError (saying what to change) when the chosen path does not fit in
    :func:`mi_probe.resources.memory_budget`.
    """
    mode, prec = params["approx"], params["precision"]
    exact = predicted_bytes(n, "exact", prec, steps)
    approx = predicted_bytes(n, "approx", prec, steps)
    what = f"renyi at n = {n}"
    if mode == "off" or (mode == "auto" and n < params["approx_above"] and fits(exact)):
        lighter = ", or precision=float32" if prec == "float64" else ""
        require(exact, f"{what} (exact path, {prec})",
                f"pass approx=on (float32 matrices, about {format_bytes(approx)})"
                f"{lighter}, or use fewer samples")
        return Plan("exact", exact)
    require(approx, f"{what} (approximate path, float32)",
            "use fewer samples (memory grows with n²) or set MI_PROBE_MEMORY_LIMIT if the "
            "machine has more memory than detected")
    note = None
    if mode == "auto" and n < params["approx_above"]:
        note = (f"the exact path would need about {format_bytes(exact)}, more than is "
                "available, so the approximate path was used (approx=off forces exact)")
    return Plan("approx", approx, note)


class RenyiEstimator(Estimator):
    """Matrix-based Rényi α-order MI; defaults follow the InfoRidge paper."""

    name = "renyi"
    description = (
        "Matrix-based Rényi α-order MI from kernel Gram matrices (Sanchez Giraldo et al. "
        "2014); paper defaults: α=1, gaussian σ=1, rows l2-normalised"
    )
    params = (
        Param("alpha", float, 1.0, "Rényi order α > 0; 1 is the von Neumann limit", low=0.0,
              low_open=True),
        Param("kernel", str, "gaussian", "kernel on x (and on continuous y)",
              choices=KERNELS[:-1]),
        Param("sigma", float, 1.0, "kernel width on x, or a rule", low=0.0, low_open=True,
              words=WIDTH_RULES),
        Param("y_sigma", float, None, "kernel width on y (default: same as sigma)", low=0.0,
              low_open=True, words=WIDTH_RULES, optional=True),
        Param("degree", int, 2, "polynomial kernel degree", low=1),
        Param("coef0", float, 1.0, "polynomial kernel offset", low=0.0),
        Param("normalize", bool, True, "l2-normalise the rows of x and continuous y first"),
        Param("precision", str, "float64", "dtype of the exact path's Gram matrices and "
              "spectra (float32: about 2× faster, a few 1e-6 nats off on hidden states)",
              choices=("float64", "float32")),
        Param("device", str, "cpu", "where to compute: cpu, cuda or auto",
              choices=("cpu", "cuda", "auto")),
        Param("approx", str, "auto", "entropies by stochastic Lanczos quadrature (error "
              "estimate in extras): on, off, or auto (n >= approx_above, or when the exact "
              "path does not fit in memory)", choices=APPROX_MODES),
        Param("approx_above", int, APPROX_ABOVE, "smallest n for which approx=auto "
              "approximates", low=2),
        Param("tol", float, 1e-2, "target error bound of each approximate entropy (nats, "
              "≈95 %; actual errors are usually several times smaller)", low=0.0,
              low_open=True),
        Param("seed", int, 0, "seed of the approximation's random vectors", low=0),
    )
    y_kinds = frozenset({"continuous", "discrete"})
    symmetric = True
    # A kernel estimator is biased upward at finite n, growing with the dimension: in the
    # conformance setting (n = 500, d_x <= 3, d_y <= 2) it stays below 0.04 nats; at d = 8
    # it is about 0.17 (see docs/estimators.md).
    independence_tolerance = 0.1

    def check_params(self, params: dict[str, Any], x: np.ndarray, y: Target) -> None:
        """Refuse, before any work, an estimate that would not fit in memory."""
        steps = x.shape[1] if x.ndim == 3 else 1
        plan(x.shape[0], params, steps)

    # -- the pieces, exposed so that pipelines can reuse them --------------------------
    def prepare_side(self, values: np.ndarray, params: dict[str, Any], sigma: Any,
                     dtype: Any = None, tiled: bool = False) -> tuple:
        """Gram matrix (n, n) of one side and the width used. values: (n, d) floats, or
        (n, T, d) per-step states, whose Gram matrix is the :func:`sequence_gram` (rows
        normalised per step; a width rule sees all n·T rows). ``dtype``: a torch dtype
        overriding ``precision``. ``tiled``: return a
        :class:`~mi_probe.tiled.TiledSymmetric` (half the memory; (n, d) values only)."""
        torch = _torch()
        if dtype is None:
            dtype = torch.float64 if params["precision"] == "float64" else torch.float32
        dev = resolve_device(params["device"])
        # read-only inputs (np.load(..., mmap_mode="r")) are copied: torch warns on them
        t = torch.as_tensor(np.require(values, requirements=("C", "W")), device=dev).to(dtype)
        shape = t.shape
        t = t.reshape(-1, shape[-1])
        if params["normalize"]:
            t = l2_normalize(t)
        kernel = params["kernel"]
        width = (kernel_width(t, sigma, p=1.0 if kernel == "laplacian" else 2.0)
                 if kernel in ("gaussian", "laplacian") else None)
        args = (kernel, width or 1.0, params["degree"], params["coef0"], params["normalize"])
        if tiled and len(shape) == 2:
            k = TiledSymmetric.build(t.shape[0], lambda r, c: kernel_block(t[r], t[c], *args))
        elif len(shape) == 3:
            k = sequence_gram(t.reshape(shape), *args)
        else:
            k = gram_matrix(t, *args)
        return k, width

    def target_gram(self, y: Target, params: dict[str, Any]) -> tuple:
        """Gram matrix of the target: delta kernel for labels, else the x kernel."""
        torch = _torch()
        if y.kind == "discrete":
            dtype = torch.float64 if params["precision"] == "float64" else torch.float32
            lab = torch.as_tensor(y.values, device=resolve_device(params["device"]))
            return gram_matrix(lab, "delta").to(dtype), None
        sigma = params["y_sigma"] if params["y_sigma"] is not None else params["sigma"]
        return self.prepare_side(y.values, params, sigma)

    def compute(self, x: np.ndarray, y: Target, params: dict[str, Any]) -> Estimate:
        return self.compute_layers([x], y, params)[0]

    def compute_layers(
        self, xs: Sequence[np.ndarray], y: Target, params: dict[str, Any]
    ) -> list[Estimate]:
        if y.kind == "discrete":
            return self._layers_against_labels(y, xs, params)
        the_plan = plan(y.n, params)
        sigma = params["y_sigma"] if params["y_sigma"] is not None else params["sigma"]
        kb, y_width = self.prepare_side(y.values, params, sigma, self._dtype(the_plan, params),
                                        tiled=the_plan.method == "approx")
        return self._layers_against(kb, y_width, xs, params, the_plan)

    def compute_sequence_layers(
        self, xs: Sequence[np.ndarray], y: np.ndarray, params: dict[str, Any]
    ) -> list[Estimate]:
        """Sequence-level MI (nats) of each x (n, T, d) with y (n, T, d_y): both Gram
        matrices are sequence kernels (:func:`sequence_gram`). ``params``: resolved."""
        the_plan = plan(y.shape[0], params, y.shape[1])
        sigma = params["y_sigma"] if params["y_sigma"] is not None else params["sigma"]
        kb, y_width = self.prepare_side(y, params, sigma, self._dtype(the_plan, params))
        return self._layers_against(kb, y_width, xs, params, the_plan)

    @staticmethod
    def _dtype(the_plan: Plan, params: dict[str, Any]) -> Any:
        torch = _torch()
        if the_plan.method == "approx" or params["precision"] == "float32":
            return torch.float32
        return torch.float64

    def _entropy(self, k: Any, params: dict[str, Any], the_plan: Plan, seed_offset: int,
                 tol_scale: float = 1.0) -> tuple[float, float, Any]:
        """(S_α of k / tr k, error estimate, SLQ details or None); may modify k."""
        alpha = params["alpha"]
        if the_plan.method == "exact":
            return matrix_entropy(k, alpha, params["precision"]), 0.0, None
        return approx_entropy(k, alpha, params["tol"] * tol_scale,
                              params["seed"] + seed_offset)

    def _layers_against(self, kb: Any, y_width: Any, xs: Sequence[np.ndarray],
                        params: dict[str, Any], the_plan: Plan | None = None
                        ) -> list[Estimate]:
        """MI of each x with the target Gram matrix kb (n, n): S(kb) once, then per layer
        the Gram matrix of x, its entropy and (in place) the joint entropy."""
        if the_plan is None:
            the_plan = plan(kb.shape[0], params)
        dtype = self._dtype(the_plan, params)
        kb = kb.to(dtype)
        # S(B) is computed once for all layers: spend more probes on it
        h_y, e_y, _ = self._entropy(kb, params, the_plan, 0, tol_scale=0.25)
        out = []
        for x in xs:
            ka, x_width = self.prepare_side(x, params, params["sigma"], dtype,
                                            tiled=isinstance(kb, TiledSymmetric))
            h_x, e_x, sx = self._entropy(ka, params, the_plan, 1)
            ka.mul_(kb)  # the joint Gram matrix, in place (scale does not matter)
            h_xy, e_xy, sxy = self._entropy(ka, params, the_plan, 2)
            del ka
            extras = {
                "entropy_x_nats": h_x,
                "entropy_y_nats": h_y,
                "joint_entropy_nats": h_xy,
                "sigma_x": x_width,
                "sigma_y": y_width,
                "method": the_plan.method,
            }
            out.append(self._finish(h_x + h_y - h_xy, (e_x, e_y, e_xy), (sx, sxy), extras,
                                    the_plan))
        return out

    def _layers_against_labels(self, y: Target, xs: Sequence[np.ndarray],
                               params: dict[str, Any]) -> list[Estimate]:
        """Labels: the delta kernel makes the joint matrix block-diagonal by label, so its
        spectrum is the union of the label blocks' spectra (Σ n_c³ instead of n³ work), and
        S(B) is the Rényi entropy of the label frequencies. No n×n Gram matrix of y."""
        torch = _torch()
        alpha = params["alpha"]
        the_plan = plan(y.n, params)
        counts = np.bincount(y.values, minlength=y.n_classes).astype(float)
        h_y = _entropy_of_probabilities(counts[counts > 0] / y.n, alpha)
        dev = resolve_device(params["device"])
        blocks = [torch.as_tensor(np.flatnonzero(y.values == c), device=dev)
                  for c in range(y.n_classes) if counts[c] > 0]
        out = []
        for x in xs:
            ka, x_width = self.prepare_side(x, params, params["sigma"],
                                            self._dtype(the_plan, params))
            tr = _trace(ka)
            parts = [ka[idx][:, idx] for idx in blocks]
            h_x, e_x, sx = self._entropy(ka, params, the_plan, 1)
            del ka
            h_xy, e_xy = self._block_entropy(parts, tr, params, the_plan)
            extras = {
                "entropy_x_nats": h_x,
                "entropy_y_nats": h_y,
                "joint_entropy_nats": h_xy,
                "sigma_x": x_width,
                "sigma_y": None,
                "method": the_plan.method,
            }
            out.append(self._finish(h_x + h_y - h_xy, (e_x, 0.0, e_xy), (sx,), extras,
                                    the_plan))
        return out

    def _block_entropy(self, parts: list, tr: float, params: dict[str, Any],
                       the_plan: Plan) -> tuple[float, float]:
        """S_α of the block-diagonal matrix diag(parts) / tr, and its error estimate."""
        alpha = params["alpha"]
        if the_plan.method == "exact":
            if alpha == 2.0:
                return -math.log(sum(frobenius_squared(b) for b in parts) / tr**2), 0.0
            spectra = [spectrum(b, params["precision"], tr) for b in parts]
            lam = _torch().cat([s[0] for s in spectra])
            return entropy_from_eigenvalues(lam, alpha, spectra[0][1]), 0.0
        f, d2f = _spectral_function(alpha)
        total, err = 0.0, 0.0
        for i, b in enumerate(parts):
            b = b / tr
            if b.shape[0] < min(params["approx_above"], _SMALL_BLOCK) or alpha == 2.0:
                lam, _ = spectrum(b, "float64", 1.0)
                total += float(np.sum(f(np.clip(lam.numpy(), 0.0, None))))
                continue
            est = trace_function(b, f, d2f, params["tol"] / max(len(parts), 1),
                                 **{**SLQ_DEFAULTS, "seed": params["seed"] + 3 + i})
            total, err = total + est.value, err + est.error
        if alpha == 1.0:
            return total, err
        return math.log(total) / (1.0 - alpha), err / (abs(1.0 - alpha) * total)

    @staticmethod
    def _finish(value: float, errors: tuple, details: tuple, extras: dict[str, Any],
                the_plan: Plan) -> Estimate:
        notes = [the_plan.note] if the_plan.note else []
        if the_plan.method == "approx":
            error = float(sum(errors))
            extras["approx_error_nats"] = error
            extras["entropy_errors_nats"] = [float(e) for e in errors]
            used = [d for d in details if d is not None]
            if used:
                extras["slq"] = {"probes": [d.probes for d in used],
                                 "steps": used[0].steps,
                                 "deflated": [d.deflated for d in used],
                                 "products": [d.products for d in used]}
            notes.append(
                f"approximate entropies (stochastic Lanczos quadrature): the value is "
                f"within about ±{error:.2g} nats (95 %) of the exact one"
            )
        return Estimate(value, notes, extras)


def _entropy_of_probabilities(p: np.ndarray, alpha: float) -> float:
    """Rényi α-entropy (nats) of a probability vector p."""
    if alpha == 1.0:
        return float(-np.sum(p * np.log(p)))
    return float(np.log(np.sum(p**alpha)) / (1.0 - alpha))


@hookimpl
def register_estimators(register):
    register(RenyiEstimator)
