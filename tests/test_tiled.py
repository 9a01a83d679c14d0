"""The tiled symmetric storage behind the approximate renyi path."""

import numpy as np
import pytest
import torch
from mi_probe.plugins.renyi import gram_matrix, kernel_block

import mi_probe
from mi_probe import tiled
from mi_probe.slq import frobenius_squared
from mi_probe.tiled import TiledSymmetric, tiled_bytes


@pytest.fixture
def rows():
    x = torch.as_tensor(np.random.default_rng(0).normal(size=(203, 7)))
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True)


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "polynomial", "linear"])
def test_tiles_assemble_the_dense_gram_matrix(rows, kernel):
    dense = gram_matrix(rows, kernel, 0.7, 3, 1.0)
    t = TiledSymmetric.build(203, lambda r, c: kernel_block(rows[r], rows[c], kernel, 0.7, 3,
                                                            1.0), tile=50)
    assert len(t.edges) == 6 and len(t.tiles) == 15  # 5 tile rows, upper triangle only
    np.testing.assert_allclose(t.dense().numpy(), dense.numpy(), rtol=1e-12, atol=1e-12)


def test_tiled_operations_match_dense(rows):
    dense = gram_matrix(rows, "gaussian", 1.0, normalized_rows=True)
    t = TiledSymmetric.build(203, lambda r, c: kernel_block(rows[r], rows[c], "gaussian", 1.0,
                                                            normalized_rows=True), tile=64)
    v = torch.as_tensor(np.random.default_rng(1).normal(size=(203, 5)))
    np.testing.assert_allclose((t @ v).numpy(), (dense @ v).numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(t.diagonal().numpy(), torch.diagonal(dense).numpy())
    assert t.frobenius_squared() == pytest.approx(frobenius_squared(dense), rel=1e-13)
    other = TiledSymmetric.build(203, lambda r, c: kernel_block(rows[r], rows[c], "linear"),
                                 tile=64)
    t.mul_(other).div_(3.0)
    np.testing.assert_allclose(t.dense().numpy(), (dense * (rows @ rows.T) / 3.0).numpy(),
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="differently tiled"):
        t.mul_(TiledSymmetric.build(203, lambda r, c: kernel_block(rows[r], rows[c]), tile=100))


def test_tiled_storage_is_about_half():
    assert tiled_bytes(8192, 4, tile=1024) == (8192**2 + 8192 * 1024) // 2 * 4
    assert tiled_bytes(500, 4, tile=1024) == 500 * 500 * 4


def test_approximate_path_with_many_tiles(monkeypatch):
    """At n = 700 with 128-row tiles the approximate path runs on 6 tile rows; it stays
    within its reported error of the exact value."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(700, 6))
    x = z @ rng.normal(size=(6, 40)) + 0.5 * rng.normal(size=(700, 40))
    y = z[:, :3] @ rng.normal(size=(3, 40)) + 0.5 * rng.normal(size=(700, 40))
    exact = mi_probe.estimate(x, y, "renyi")
    monkeypatch.setattr(tiled, "TILE", 128)
    approx = mi_probe.estimate(x, y, "renyi", approx="on")
    assert approx.extras["method"] == "approx"
    assert abs(approx.value - exact.value) <= 2 * approx.extras["approx_error"]
    assert abs(approx.value - exact.value) <= 0.01 * exact.value
