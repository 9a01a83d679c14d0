"""Tests of the KSG estimator (plugins/ksg.py) and the max-norm search (mi_probe.neighbors).

Accuracy tests use data with known MI; exactness tests compare with the plain numpy
reference below (brute-force distance matrices and digamma, nothing shared with the
library) on tie-free data with noise=0.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mi_probe.plugins.ksg import KSGEstimator, jitter
from scipy import integrate, stats
from scipy.special import digamma

import mi_probe
from mi_probe.errors import InputError, ParameterError
from mi_probe.neighbors import (
    MaxNormSpace,
    count_within,
    knn_counts,
    kth_neighbor_distances,
)
from mi_probe.registry import register_plugin, unregister_plugin
from mi_probe.testing import check_estimator


# -- plain reference --------------------------------------------------------------------
def chebyshev(a: np.ndarray) -> np.ndarray:
    """(n, n) max-norm distances with +inf on the diagonal (self is never a neighbour)."""
    d = np.abs(a[:, None, :] - a[None, :, :]).max(axis=2)
    np.fill_diagonal(d, np.inf)
    return d


def reference_ksg(x: np.ndarray, y: np.ndarray, k: int, algorithm: int) -> float:
    """KSG (Kraskov et al. 2004, eqs. 8 and 9) by brute force, in nats."""
    n = len(x)
    dx, dy = chebyshev(x), chebyshev(y)
    dz = np.maximum(dx, dy)
    nearest = np.argsort(dz, axis=1, kind="stable")[:, :k]
    if algorithm == 1:
        eps = np.take_along_axis(dz, nearest[:, -1:], axis=1)
        nx, ny = (dx < eps).sum(1), (dy < eps).sum(1)
        return digamma(k) + digamma(n) - np.mean(digamma(nx + 1) + digamma(ny + 1))
    ex = np.take_along_axis(dx, nearest, axis=1).max(1, keepdims=True)
    ey = np.take_along_axis(dy, nearest, axis=1).max(1, keepdims=True)
    nx, ny = (dx <= ex).sum(1), (dy <= ey).sum(1)
    return digamma(k) - 1.0 / k + digamma(n) - np.mean(digamma(nx) + digamma(ny))


def reference_ross(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Ross (2014) by brute force (every label has more than k samples), in nats."""
    n = len(x)
    d = chebyshev(x)
    same = labels[:, None] == labels[None, :]
    eps = np.sort(np.where(same, d, np.inf), axis=1)[:, k - 1:k]
    m = (d < eps).sum(1) + 1
    sizes = np.bincount(labels)[labels]
    return digamma(n) + digamma(k) - np.mean(digamma(sizes)) - np.mean(digamma(m))


def gaussian_pair(seed: int, n: int, rhos: tuple[float, ...], d_x: int):
    """x (n, d_x), y (n, len(rhos)) jointly Gaussian: corr(x_j, y_j) = rhos[j], all else
    independent. True MI = −½ Σ log(1 − ρ_j²)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_x))
    r = np.array(rhos)
    y = r * x[:, :len(r)] + np.sqrt(1 - r**2) * rng.standard_normal((n, len(r)))
    return x, y, float(-0.5 * np.log(1 - r**2).sum())


def ksg(x, y, **params) -> mi_probe.MIResult:
    return mi_probe.estimate(x, y, "ksg", **params)


# -- accuracy against known MI ----------------------------------------------------------
def test_gaussian_1d_rho_075_within_5_percent():
    # At n = 5000 one estimate scatters by about 0.018 nats (4 %) from data set to data
    # set, so the mean over 4 independent data sets (about 2 %) is held to 5 %.
    truth = -0.5 * math.log(1 - 0.75**2)
    assert truth == pytest.approx(0.4133, abs=1e-4)
    values = [ksg(*gaussian_pair(seed, 5000, (0.75,), 1)[:2]).value for seed in range(4)]
    assert np.mean(values) == pytest.approx(truth, rel=0.05)


def test_multivariate_gaussian_known_mi():
    # d_x = 3, d_y = 2, true MI = 0.6547 nats. Measured over 10 other data sets at
    # n = 4000: mean 0.633 (algorithm 1) and 0.638 (algorithm 2), KSG's small negative bias
    # in 5 dimensions; sd 0.017. Tolerance: bias + 3 sd = 0.075.
    x, y, truth = gaussian_pair(7, 4000, (0.8, 0.5), 3)
    assert truth == pytest.approx(0.6547, abs=1e-4)
    for algorithm in (1, 2):
        assert ksg(x, y, algorithm=algorithm).value == pytest.approx(truth, abs=0.075)


def two_gaussians_mi(mu: float) -> float:
    """I(X; Y) for Y uniform on {0, 1}, X | Y ~ N(±mu, 1): h(X) − h(X | Y), by quadrature."""
    def p(t):
        return 0.5 * (stats.norm.pdf(t, -mu, 1) + stats.norm.pdf(t, mu, 1))

    h_x = integrate.quad(lambda t: -p(t) * math.log(p(t)), -mu - 12, mu + 12, limit=200)[0]
    return h_x - 0.5 * math.log(2 * math.pi * math.e)


def test_ross_two_gaussians_known_mi():
    # True MI 0.3368 nats for mu = 1 (a Monte Carlo check with 2e6 samples gave 0.3372 ±
    # 0.0004). Measured over 10 other data sets at n = 5000 (k = 3): mean 0.3384, sd 0.010;
    # tolerance 0.03 (3 sd).
    truth = two_gaussians_mi(1.0)
    assert truth == pytest.approx(0.3368, abs=1e-3)
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 5000)
    x = rng.standard_normal(5000) + np.where(labels == 1, 1.0, -1.0)
    res = ksg(x, labels)
    assert res.y_kind == "discrete"
    assert res.value == pytest.approx(truth, abs=0.03)


# -- exactness against the reference ----------------------------------------------------
@pytest.mark.parametrize("search", ["brute", "kdtree"])
@pytest.mark.parametrize("algorithm", [1, 2])
def test_matches_reference_continuous(search, algorithm):
    x, y, _ = gaussian_pair(11, 300, (0.9, 0.3), 3)
    got = ksg(x, y, algorithm=algorithm, noise=0.0, search=search, chunk_size=64).value
    assert got == pytest.approx(reference_ksg(x, y, 3, algorithm), abs=1e-10)


@pytest.mark.parametrize("search", ["brute", "kdtree"])
def test_matches_reference_labels(search):
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, 300)
    x = rng.standard_normal((300, 4)) + labels[:, None] * 0.5
    got = ksg(x, labels, k=4, noise=0.0, search=search, chunk_size=50).value
    assert got == pytest.approx(reference_ross(x, labels, 4), abs=1e-10)


def test_matches_reference_high_dimension_float32():
    # d = 200 takes the brute-force path with its float32 screen; float32 input stays exact.
    rng = np.random.default_rng(9)
    x = rng.standard_normal((250, 200)).astype(np.float32)
    y = (x[:, :3] @ rng.standard_normal((3, 2)) + rng.standard_normal((250, 2))).astype(
        np.float32)
    got = ksg(x, y, noise=0.0).value
    assert got == pytest.approx(reference_ksg(x.astype(float), y.astype(float), 3, 1),
                                abs=1e-10)


# -- the neighbour search ---------------------------------------------------------------
def near_ties(seed: int, n: int, d: int, step: float = 0.1) -> np.ndarray:
    """Data rounded to ``step`` plus 1e-9 noise: distances tie in float32 (and int16) but
    not in float64, so the screen must hand many decisions to float64."""
    rng = np.random.default_rng(seed)
    return np.round(rng.standard_normal((n, d)) / step) * step + 1e-9 * rng.standard_normal(
        (n, d))


@pytest.mark.parametrize("step, d", [(0.1, 6), (1.0, 2)])  # few / very many near ties
@pytest.mark.parametrize("screen", ["auto", "int16", "float32", "none"])
def test_search_exact_on_near_ties_all_paths_agree(step, d, screen):
    # Coarse ties exercise every fallback: whole rows searched for the k-th neighbour and
    # chunks recomputed in float64 when too many pairs are undecided.
    x, y = near_ties(1, 240, d, step), near_ties(2, 240, 2, step)
    dx, dy = chebyshev(x), chebyshev(y)
    eps = np.sort(np.maximum(dx, dy), axis=1)[:, 2]
    expect = np.stack([(dx < eps[:, None]).sum(1), (dy < eps[:, None]).sum(1)], axis=1)
    for full in (True, False):
        for chunk in (1, 37, None):
            spaces = [MaxNormSpace(x, screen=screen, full_matrix=full),
                      MaxNormSpace(y, screen=screen, full_matrix=full)]
            res = knn_counts(spaces, 3, chunk_size=chunk)
            np.testing.assert_array_equal(res.kth.numpy(), eps)
            np.testing.assert_array_equal(res.counts.numpy(), expect)
    res = knn_counts([MaxNormSpace(x), MaxNormSpace(y)], 3, method="kdtree")
    np.testing.assert_array_equal(res.kth.numpy(), eps)
    np.testing.assert_array_equal(res.counts.numpy(), expect)


def test_kth_and_count_helpers_with_groups_and_duplicates():
    x = near_ties(4, 200, 3)
    labels = np.random.default_rng(0).integers(0, 3, 200)
    x[10], labels[10] = x[11], labels[11]  # an exact duplicate: a neighbour at distance 0
    d = chebyshev(x)
    eps = np.sort(np.where(labels[:, None] == labels[None, :], d, np.inf), axis=1)[:, 1]
    space = MaxNormSpace(x, full_matrix=False)
    got = kth_neighbor_distances(space, 2, groups=torch.as_tensor(labels), chunk_size=16)
    np.testing.assert_array_equal(got.numpy(), eps)
    radius = torch.as_tensor(eps)
    strict = count_within(space, radius, chunk_size=16)[:, 0].numpy()
    np.testing.assert_array_equal(strict, (d < eps[:, None]).sum(1))
    assert strict[10] >= 1  # the duplicate counts, the sample itself does not
    np.testing.assert_array_equal(count_within(space, radius, strict=False)[:, 0].numpy(),
                                  (d <= eps[:, None]).sum(1))


def test_search_rejects_bad_k_and_method():
    space = MaxNormSpace(np.zeros((5, 2)))
    with pytest.raises(ParameterError, match="k must lie"):
        knn_counts(space, 5)
    with pytest.raises(ParameterError, match="method"):
        knn_counts(space, 2, method="balltree")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu():
    x, y, _ = gaussian_pair(2, 2000, (0.7,), 20)
    assert ksg(x, y, device="cuda").value == ksg(x, y, device="cpu", search="brute").value


# -- contract: seeds, layers, permutations, symmetry --------------------------------------
def test_seed_determinism_and_noise_use():
    x, y = near_ties(6, 400, 2), near_ties(7, 400, 1)  # ties: the noise decides
    a, b = ksg(x, y, seed=1).value, ksg(x, y, seed=1).value
    assert a == b
    assert ksg(x, y, seed=2).value != a


def test_noise_scales_with_each_feature_spread_not_mean():
    rng = np.random.default_rng(0)
    x = np.stack([1e6 + rng.standard_normal(2000), 1e-3 * rng.standard_normal(2000)], 1)
    moved = jitter(x, 1e-4, seed=0) - x
    np.testing.assert_allclose(moved.std(0), 1e-4 * x.std(0), rtol=0.1)
    np.testing.assert_array_equal(jitter(x, 1e-4, 0), jitter(x.copy(), 1e-4, 0))
    np.testing.assert_array_equal(jitter(x, 0.0, 0), x)


def test_estimate_layers_equals_per_layer():
    x, y, _ = gaussian_pair(3, 600, (0.8,), 2)
    layers = [x, np.tanh(x), x[:, ::-1] * 3.0]
    for target in (y, (x[:, 0] > 0).astype(int) + (y[:, 0] > 0.5)):
        for search in ("brute", "kdtree"):
            batched = mi_probe.estimate_layers(layers, target, "ksg", search=search)
            single = [ksg(xl, target, search=search).value for xl in layers]
            assert [r.value for r in batched] == single


def test_permutation_invariance():
    x, y, _ = gaussian_pair(8, 500, (0.6,), 2)
    labels = (y[:, 0] > 0).astype(int)
    perm = np.random.default_rng(1).permutation(500)
    for target in (y, labels):
        assert ksg(x[perm], target[perm]).value == pytest.approx(ksg(x, target).value,
                                                                 abs=1e-12)


def test_symmetric_exactly():
    x, y, _ = gaussian_pair(4, 500, (0.6, 0.2), 2)
    assert ksg(x, y).value == ksg(y, x).value


@pytest.mark.parametrize("search", ["kdtree", "brute"])
def test_conformance(search):
    check_estimator("ksg", {"search": search}, max_examples=2)


def test_chunked_equals_whole_matrix(monkeypatch):
    x, y, _ = gaussian_pair(5, 400, (0.7, 0.4), 30)
    whole = ksg(x, y, search="brute").value
    monkeypatch.setattr("mi_probe.neighbors.FULL_MATRIX_BYTES", 0)
    for chunk in (1, 33, 400):
        assert ksg(x, y, search="brute", chunk_size=chunk).value == whole


# -- parameters, errors and diagnostics ---------------------------------------------------
def test_algorithm_2_rejects_labels():
    with pytest.raises(ParameterError, match="algorithm=2"):
        ksg(np.zeros((20, 2)), np.arange(20) % 2, algorithm=2)


def test_labels_that_never_repeat_are_an_error():
    with pytest.raises(InputError, match="occurs only once"):
        ksg(np.random.default_rng(0).standard_normal((30, 2)), np.arange(30))


def test_rare_labels_are_adapted_and_reported():
    rng = np.random.default_rng(2)
    labels = np.concatenate([np.repeat([0, 1], 100), [2, 3, 3]])  # one singleton, one pair
    x = rng.standard_normal((203, 2)) + labels[:, None]
    res = ksg(x, labels)
    assert res.extras["n_used"] == 202 and res.extras["samples_dropped"] == 1
    assert any("fewer than k + 1" in note for note in res.diagnostics)


def test_diagnostics_high_dimension_high_mi_and_negative():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 30))
    assert any("x and y have 32 dimensions" in m for m in ksg(x, x[:, :2]).diagnostics)
    z = rng.standard_normal(2000)
    strong = ksg(z, z + 1e-4 * rng.standard_normal(2000))
    assert any("underestimates" in note for note in strong.diagnostics)
    values = {s: ksg(rng.standard_normal(400), rng.standard_normal(400)) for s in range(6)}
    negative = [r for r in values.values() if r.value < 0]
    assert negative, "independent data should give some negative estimates"
    assert all(any("not clipped" in note for note in r.diagnostics) for r in negative)


def test_estimator_metadata():
    est = KSGEstimator()
    assert est.symmetric and est.randomized
    assert est.min_samples({"k": 5}) == 6
    assert {p.name for p in est.params} >= {"k", "algorithm", "noise", "seed", "device",
                                            "chunk_size"}


# -- the separately installable faiss plugin ----------------------------------------------
FAISS_SRC = Path(__file__).resolve().parents[1] / "plugins" / "third_party" / "mi-probe-faiss"


@pytest.fixture
def ksg_faiss(monkeypatch):
    """The mi-probe-faiss plugin, imported from its source tree and registered at run
    time (unregistered afterwards); skipped when faiss is not installed."""
    pytest.importorskip("faiss")
    if "ksg-faiss" in {info.name for info in mi_probe.estimators()}:
        yield None  # installed in this environment: use it as it is
        return
    monkeypatch.syspath_prepend(str(FAISS_SRC))
    register_plugin(importlib.import_module("mi_probe_faiss"), "ksg-faiss-test")
    yield None
    unregister_plugin("ksg-faiss-test")


def test_faiss_plugin_equals_builtin_ksg(ksg_faiss):
    x, y, _ = gaussian_pair(12, 600, (0.8,), 2)
    labels = (x[:, 0] + 0.3 * y[:, 0] > 0).astype(int) + (x[:, 1] > 1)
    for target, params in ((y, {}), (y, {"algorithm": 2}), (labels, {"k": 5})):
        got = mi_probe.estimate(x, target, "ksg-faiss", **params)
        assert got.extras["search"] == "faiss"
        assert got.value == ksg(x, target, **params).value
    wide = np.random.default_rng(0).standard_normal((300, 12))  # joint d = 13 > 8
    got = mi_probe.estimate(wide, y[:300], "ksg-faiss")
    assert "faiss L2 bound too loose" in got.extras["search"]
    assert got.value == ksg(wide, y[:300]).value


def test_faiss_plugin_installs_with_its_entry_point(tmp_path):
    pytest.importorskip("faiss")
    from test_gaussian_plugin import pip_install_target

    site = pip_install_target(FAISS_SRC, tmp_path / "site", tmp_path)
    eps = [ep for dist in md.distributions(path=[str(site)])
           for ep in dist.entry_points if ep.group == "mi_probe"]
    assert [(ep.name, ep.value) for ep in eps] == [("ksg-faiss", "mi_probe_faiss")]
