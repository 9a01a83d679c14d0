"""The `renyi` estimator against a plain numpy/scipy transcription of its formulas.

The reference below is written from the definitions (Sanchez Giraldo, Rao & Principe 2014)
with nothing shared with mi_probe.plugins.renyi: scipy pairwise distances, K / trace K,
numpy.linalg.eigvalsh, S_α = log Σ λ^α / (1 - α) (von Neumann at α = 1), the Hadamard
product for the joint. Eigenvalues at or below n·eps·λ_max are rounding noise and count as
zero for α < 1, negative ones for every α, in both (see entropy_from_eigenvalues).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mi_probe.plugins.renyi import (
    entropy_from_eigenvalues,
    gram_matrix,
    joint_entropy,
    kernel_width,
    matrix_entropy,
)
from scipy.spatial.distance import cdist, pdist

import mi_probe
from mi_probe.errors import ParameterError

ALPHAS = (0.5, 1.0, 2.0, 3.0)
KERNELS = ("gaussian", "laplacian", "polynomial", "linear")
TOL = 1e-8
FAST = settings(max_examples=25, deadline=None, derandomize=True)


# -- the plain reference ------------------------------------------------------------------
def ref_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def ref_width(x: np.ndarray, rule, metric: str = "euclidean") -> float:
    if not isinstance(rule, str):
        return float(rule)
    n, d = x.shape
    if rule == "median":
        return float(np.median(pdist(x, metric)))
    return float(np.mean(np.std(x, axis=0, ddof=1))) * n ** (-1.0 / (4 + d))


def ref_gram(x, kernel, sigma=1.0, degree=2, coef0=1.0) -> np.ndarray:
    if kernel == "gaussian":
        return np.exp(-cdist(x, x, "sqeuclidean") / (2 * sigma**2))
    if kernel == "laplacian":
        return np.exp(-cdist(x, x, "cityblock") / sigma)
    if kernel == "polynomial":
        return (x @ x.T + coef0) ** degree
    if kernel == "linear":
        return x @ x.T
    if kernel == "delta":
        return (x[:, None] == x[None, :]).astype(float)
    raise AssertionError(kernel)


def ref_entropy(k: np.ndarray, alpha: float) -> float:
    a = k / np.trace(k)
    lam = np.linalg.eigvalsh(a)
    cutoff = len(lam) * np.finfo(float).eps * lam.max() if alpha < 1 else 0.0
    lam = lam[lam > cutoff]
    if alpha == 1.0:
        return float(-np.sum(lam * np.log(lam)))
    return float(np.log(np.sum(lam**alpha)) / (1 - alpha))


def ref_mi(x, y, alpha=1.0, kernel="gaussian", sigma=1.0, y_sigma=None, normalize=True,
           degree=2, coef0=1.0, discrete=False) -> tuple[float, float, float]:
    """(S(A), S(B), S(A∘B / tr)) for the renyi estimator's parameters."""
    metric = "cityblock" if kernel == "laplacian" else "euclidean"
    if normalize:
        x = ref_normalize(x)
    ka = ref_gram(x, kernel, ref_width(x, sigma, metric), degree, coef0)
    if discrete:
        kb = ref_gram(y, "delta")
    else:
        if normalize:
            y = ref_normalize(y)
        ys = y_sigma if y_sigma is not None else sigma
        kb = ref_gram(y, kernel, ref_width(y, ys, metric), degree, coef0)
    return ref_entropy(ka, alpha), ref_entropy(kb, alpha), ref_entropy(ka * kb, alpha)


def data(n=60, d_x=4, d_y=2, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d_x)) * scale
    y = x[:, :d_y] + 0.5 * rng.normal(size=(n, d_y)) * scale
    return x, y


def assert_matches(res, ref):
    h_x, h_y, h_xy = ref
    assert res.extras["entropy_x"] == pytest.approx(h_x, abs=TOL)
    assert res.extras["entropy_y"] == pytest.approx(h_y, abs=TOL)
    assert res.extras["joint_entropy"] == pytest.approx(h_xy, abs=TOL)
    assert res.value == pytest.approx(h_x + h_y - h_xy, abs=TOL)


# -- estimator against the reference ------------------------------------------------------
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_estimate_matches_numpy_reference(alpha, kernel, normalize):
    x, y = data(scale=0.5)
    res = mi_probe.estimate(x, y, "renyi", alpha=alpha, kernel=kernel, normalize=normalize,
                            sigma=0.8, degree=3, coef0=0.5)
    ref = ref_mi(x, y, alpha, kernel, 0.8, None, normalize, 3, 0.5)
    assert_matches(res, ref)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_discrete_y_uses_delta_kernel(alpha, kernel, normalize):
    x, _ = data(seed=1)
    labels = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0.5)
    res = mi_probe.estimate(x, labels, "renyi", alpha=alpha, kernel=kernel,
                            normalize=normalize)
    assert res.y_kind == "discrete"
    assert_matches(res, ref_mi(x, labels, alpha, kernel, normalize=normalize, discrete=True))


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
@pytest.mark.parametrize("rule", ["median", "scott"])
def test_width_rules(rule, kernel):
    # n = 40 gives 780 pairs, an even count: the median is the mean of the middle two.
    x, y = data(n=40, seed=2)
    res = mi_probe.estimate(x, y, "renyi", kernel=kernel, sigma=rule, y_sigma=0.7)
    metric = "cityblock" if kernel == "laplacian" else "euclidean"
    assert res.extras["sigma_x"] == pytest.approx(ref_width(ref_normalize(x), rule, metric),
                                                  rel=1e-12)
    assert res.extras["sigma_y"] == 0.7
    assert_matches(res, ref_mi(x, y, 1.0, kernel, rule, 0.7))


def test_median_width_of_large_n_uses_a_seeded_subsample():
    x = torch.as_tensor(np.random.default_rng(3).normal(size=(2500, 3)))
    w = kernel_width(x, "median")
    assert w == kernel_width(x, "median")
    assert w == pytest.approx(np.median(pdist(x.numpy())), rel=0.05)


def test_estimate_layers_equals_one_call_per_layer():
    x, y = data(n=50)
    xs = [x, x[:, :2] ** 2, np.random.default_rng(5).normal(size=(50, 3))]
    batched = mi_probe.estimate_layers(xs, y, "renyi", alpha=2.0)
    for res, xl in zip(batched, xs, strict=True):
        assert res.value == pytest.approx(mi_probe.estimate(xl, y, "renyi", alpha=2.0).value,
                                          abs=1e-12)


def test_float32_precision_is_close_but_not_exact():
    x, y = data(n=80)
    r64 = mi_probe.estimate(x, y, "renyi")
    r32 = mi_probe.estimate(x, y, "renyi", precision="float32")
    assert r32.value == pytest.approx(r64.value, abs=1e-4)


# -- public functions ---------------------------------------------------------------------
@pytest.mark.parametrize("kernel", KERNELS)
def test_gram_matrix_matches_reference(kernel):
    x, _ = data(n=30, seed=4)
    k = gram_matrix(torch.as_tensor(x), kernel, sigma=1.3, degree=3, coef0=2.0)
    np.testing.assert_allclose(k.numpy(), ref_gram(x, kernel, 1.3, 3, 2.0), rtol=1e-12,
                               atol=1e-12)


def test_gaussian_gram_shortcut_for_unit_rows_matches_distances():
    x = ref_normalize(data(n=30)[0])
    fast = gram_matrix(torch.as_tensor(x), "gaussian", 0.6, normalized_rows=True)
    np.testing.assert_allclose(fast.numpy(), ref_gram(x, "gaussian", 0.6), atol=1e-12)


def test_delta_gram_of_labels():
    lab = np.array([3, 1, 3, 2, 1])
    np.testing.assert_array_equal(gram_matrix(torch.as_tensor(lab), "delta").numpy(),
                                  ref_gram(lab, "delta"))


def test_unknown_kernel_is_a_parameter_error():
    with pytest.raises(ParameterError, match="unknown kernel"):
        gram_matrix(torch.ones(3, 2), "cosine")


@pytest.mark.parametrize("alpha", ALPHAS)
def test_matrix_and_joint_entropy_match_reference(alpha):
    x, y = data(n=45, seed=6)
    ka, kb = ref_gram(x, "gaussian", 2.0), ref_gram(y, "laplacian", 1.5)
    assert matrix_entropy(torch.as_tensor(ka), alpha) == pytest.approx(
        ref_entropy(ka, alpha), abs=TOL)
    assert joint_entropy(torch.as_tensor(ka), torch.as_tensor(kb), alpha) == pytest.approx(
        ref_entropy(ka * kb, alpha), abs=TOL)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_rank_one_gram_has_zero_entropy(alpha):
    v = torch.as_tensor(np.random.default_rng(0).uniform(0.5, 2.0, size=20))
    assert matrix_entropy(torch.outer(v, v), alpha) == pytest.approx(0.0, abs=1e-10)
    # identical samples under a gaussian kernel: K is all ones
    same = gram_matrix(torch.ones(15, 3, dtype=torch.float64), "gaussian")
    assert matrix_entropy(same, alpha) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_identity_gram_has_entropy_log_n(alpha):
    assert matrix_entropy(torch.eye(37, dtype=torch.float64) * 4.0, alpha) == pytest.approx(
        math.log(37), abs=1e-12)
    # distinct labels under the delta kernel give the identity
    assert matrix_entropy(gram_matrix(torch.arange(37), "delta"), alpha) == pytest.approx(
        math.log(37), abs=1e-12)


def test_alpha_two_frobenius_path_equals_spectral_formula():
    k = torch.as_tensor(ref_gram(data(n=50)[0], "gaussian", 1.1))
    lam = np.linalg.eigvalsh((k / torch.trace(k)).numpy())
    assert matrix_entropy(k, 2.0) == pytest.approx(-math.log(np.sum(lam**2)), abs=1e-12)


def test_rounding_noise_eigenvalues_do_not_count_for_small_alpha():
    # a rank-3 Gram: the 57 other eigenvalues are pure rounding noise (|λ| ~ 1e-17)
    x = np.random.default_rng(8).normal(size=(60, 3))
    k = torch.as_tensor(x @ x.T)
    exact = np.linalg.svd(x / math.sqrt(np.trace(x @ x.T)), compute_uv=False) ** 2
    expected = math.log(np.sum(exact**0.5)) / 0.5
    assert matrix_entropy(k, 0.5) == pytest.approx(expected, abs=1e-12)
    noisy = torch.tensor([0.5, 0.5] + [1e-17] * 58, dtype=torch.float64)
    assert entropy_from_eigenvalues(noisy, 0.5) == pytest.approx(math.log(2), abs=1e-12)


# -- properties ---------------------------------------------------------------------------
@st.composite
def gram_pairs(draw):
    """Two unit-diagonal (gaussian / laplacian) Gram matrices on the same n samples."""
    seed = draw(st.integers(0, 2**31 - 1))
    n = draw(st.integers(3, 30))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, draw(st.integers(1, 4)))) * draw(st.floats(0.1, 3.0))
    y = rng.normal(size=(n, draw(st.integers(1, 3)))) * draw(st.floats(0.1, 3.0))
    kx = draw(st.sampled_from(["gaussian", "laplacian"]))
    return torch.as_tensor(ref_gram(x, kx)), torch.as_tensor(ref_gram(y, "gaussian"))


@FAST
@given(gram_pairs(), st.sampled_from(ALPHAS))
def test_entropy_lies_between_zero_and_log_n(pair, alpha):
    k, _ = pair
    s = matrix_entropy(k, alpha)
    assert -1e-10 <= s <= math.log(k.shape[0]) + 1e-10


@FAST
@given(gram_pairs())
def test_entropy_does_not_increase_with_alpha(pair):
    k, _ = pair
    values = [matrix_entropy(k, a) for a in (0.5, 0.9, 1.0, 1.1, 2.0, 3.0)]
    assert all(b <= a + 1e-9 for a, b in zip(values, values[1:], strict=False))


@FAST
@given(gram_pairs())
def test_entropy_is_continuous_at_alpha_one(pair):
    k, _ = pair
    s1 = matrix_entropy(k, 1.0)
    assert matrix_entropy(k, 1.0 + 1e-6) == pytest.approx(s1, abs=1e-4)
    assert matrix_entropy(k, 1.0 - 1e-6) == pytest.approx(s1, abs=1e-4)


@FAST
@given(gram_pairs(), st.sampled_from(ALPHAS))
def test_joint_entropy_is_at_least_each_marginal(pair, alpha):
    # Sanchez Giraldo et al. 2014: holds for unit-diagonal (normalised) kernels
    ka, kb = pair
    joint = joint_entropy(ka, kb, alpha)
    assert joint >= max(matrix_entropy(ka, alpha), matrix_entropy(kb, alpha)) - 1e-9


@FAST
@given(st.integers(0, 2**31 - 1), st.sampled_from(ALPHAS), st.sampled_from(KERNELS))
def test_mi_is_symmetric_and_permutation_invariant(seed, alpha, kernel):
    x, y = data(n=25, d_x=3, d_y=3, seed=seed)
    kw = dict(alpha=alpha, kernel=kernel)
    v = mi_probe.estimate(x, y, "renyi", **kw).value
    assert mi_probe.estimate(y, x, "renyi", **kw).value == pytest.approx(v, abs=1e-9)
    perm = np.random.default_rng(seed).permutation(25)
    assert mi_probe.estimate(x[perm], y[perm], "renyi", **kw).value == pytest.approx(
        v, abs=1e-9)


# -- large n: the approximate path and memory planning ------------------------------------
def hidden_like(n=600, d=64, seed=0):
    """Low-rank + noise rows with a shared mean direction, like transformer states."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 8))
    x = z @ rng.normal(size=(8, d)) + 0.5 * rng.normal(size=(n, d)) + 2 * rng.normal(size=d)
    y = z[:, :4] @ rng.normal(size=(4, d)) + 0.5 * rng.normal(size=(n, d))
    return x, y


@pytest.mark.parametrize("alpha", [1.0, 0.5, 3.0])
def test_approximate_path_is_within_its_error_of_exact(alpha):
    x, y = hidden_like()
    exact = mi_probe.estimate(x, y, "renyi", alpha=alpha)
    approx = mi_probe.estimate(x, y, "renyi", alpha=alpha, approx="on")
    assert exact.extras["method"] == "exact" and approx.extras["method"] == "approx"
    err = approx.extras["approx_error"]
    assert 0 < err < 0.05
    assert abs(approx.value - exact.value) <= 2 * err  # a ≈95 % bound: twice is ≈4 σ
    assert abs(approx.value - exact.value) <= 0.01 * abs(exact.value)
    assert "stochastic Lanczos" in approx.diagnostics[-1]
    for key in ("entropy_x", "entropy_y", "joint_entropy"):
        assert approx.extras[key] == pytest.approx(exact.extras[key], abs=err)


def test_approximate_path_with_labels_and_alpha_two():
    x, _ = hidden_like(seed=1)
    labels = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0)
    exact = mi_probe.estimate(x, labels, "renyi")
    approx = mi_probe.estimate(x, labels, "renyi", approx="on", tol=1e-3)
    # the reported error is a ≈95 % bound from 16+ probes: allow twice it (≈4 σ)
    assert abs(approx.value - exact.value) <= 2 * approx.extras["approx_error"]
    # α = 2 needs no spectrum: the "approximation" is exact up to its float32 matrices
    two = mi_probe.estimate(x, labels, "renyi", alpha=2, approx="on")
    assert two.value == pytest.approx(mi_probe.estimate(x, labels, "renyi", alpha=2).value,
                                      abs=1e-5)


def test_approximation_is_seeded():
    x, y = hidden_like(n=300)
    a = mi_probe.estimate(x, y, "renyi", approx="on", seed=3).value
    assert mi_probe.estimate(x, y, "renyi", approx="on", seed=3).value == a
    assert mi_probe.estimate(x, y, "renyi", approx="on", seed=4).value != a


def test_auto_approximates_from_approx_above():
    x, y = hidden_like(n=300)
    assert mi_probe.estimate(x, y, "renyi").extras["method"] == "exact"
    res = mi_probe.estimate(x, y, "renyi", approx_above=300)
    assert res.extras["method"] == "approx"


def test_memory_limit_switches_to_approx_or_refuses(monkeypatch):
    from mi_probe.plugins import renyi

    from mi_probe.errors import ResourceError

    # small SLQ workspaces, so that at n = 1000 the approximation needs less than exact
    monkeypatch.setitem(renyi.SLQ_DEFAULTS, "max_steps", 20)
    monkeypatch.setitem(renyi.SLQ_DEFAULTS, "max_probes", 16)
    x, y = hidden_like(n=1000, d=16)  # exact: 3 float64 n×n = 22.9 MiB; approx 11.5 MiB
    monkeypatch.setenv("MI_PROBE_MEMORY_LIMIT", "18M")
    res = mi_probe.estimate(x, y, "renyi")
    assert res.extras["method"] == "approx"
    assert any("more than is available" in d for d in res.diagnostics)
    with pytest.raises(ResourceError, match=r"exact path.*pass approx=on"):
        mi_probe.estimate(x, y, "renyi", approx="off")
    monkeypatch.setenv("MI_PROBE_MEMORY_LIMIT", "10M")
    with pytest.raises(ResourceError, match="MI_PROBE_MEMORY_LIMIT=10M.*fewer samples"):
        mi_probe.estimate(x, y, "renyi")


def test_memory_sizes_and_budget(monkeypatch):
    from mi_probe.resources import memory_budget, parse_size

    assert parse_size("1024") == 1024 and parse_size("6G") == 6 * 2**30
    assert parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size("512m") == 512 * 2**20
    with pytest.raises(ParameterError, match="memory size"):
        parse_size("lots")
    monkeypatch.delenv("MI_PROBE_MEMORY_LIMIT", raising=False)
    have, source = memory_budget()
    assert have is None or have > 0
    monkeypatch.setenv("MI_PROBE_MEMORY_LIMIT", "2G")
    assert memory_budget() == (2 * 2**30, "MI_PROBE_MEMORY_LIMIT=2G")


def test_trace_function_on_a_known_spectrum():
    from mi_probe.slq import trace_function

    rng = np.random.default_rng(0)
    lam = np.concatenate([[0.3, 0.2, 0.1], rng.uniform(0, 1, 397) ** 4])
    lam[3:] *= 0.4 / lam[3:].sum()
    q, _ = np.linalg.qr(rng.normal(size=(400, 400)))
    a = torch.as_tensor((q * lam) @ q.T)

    def f(v):
        return np.where(v > 0, -v * np.log(np.where(v > 0, v, 1)), 0.0)

    exact = float(np.sum(f(lam)))
    est = trace_function(a, f, lambda v: 1 / v, 1e-3, deflate=16, seed=1)
    assert abs(est.value - exact) <= est.error <= 1e-3 or est.probes == 64
    assert est.deflated == 16 and est.top[:3] == pytest.approx([0.3, 0.2, 0.1], rel=1e-6)
    plain = trace_function(a, f, lambda v: 1 / v, 1e-3, deflate=0, seed=1, max_probes=64)
    assert abs(plain.value - exact) <= plain.error


def test_read_only_inputs_give_no_warning(tmp_path):
    """States memory-mapped from .npy files (read-only) are accepted without torch's
    non-writable-array warning, with the same value."""
    x, y = hidden_like(n=200, d=8)
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = mi_probe.estimate_layers([xm], y, "renyi")[0].value
    assert got == pytest.approx(mi_probe.estimate(x.astype(np.float32), y, "renyi").value,
                                abs=1e-12)
