"""The mine estimator: MINE (DV), NWJ and InfoNCE bounds from one trainer."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import mi_probe
from mi_probe.errors import ParameterError, ResourceError

RHO = 0.75
GAUSS_MI = -0.5 * math.log(1 - RHO**2)  # 0.4133 nats
# A small critic and few epochs keep these tests at a few seconds each.
FAST = dict(hidden=32, layers=1, lr=5e-3, batch_size=128, max_epochs=30, patience=5)


@pytest.fixture(autouse=True)
def _quiet_plugins():
    with warnings.catch_warnings():  # other estimators may still be in the making
        warnings.simplefilter("ignore")
        yield


def gaussian_pair(n: int, seed: int, rho: float = RHO) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    return x, rho * x + math.sqrt(1 - rho**2) * rng.standard_normal(n)


@pytest.mark.parametrize("bound", ["mine", "nwj"])
def test_dv_and_nwj_recover_gaussian_mi(bound):
    x, y = gaussian_pair(5000, seed=0)
    res = mi_probe.estimate(x, y, "mine", bound=bound, **FAST)
    assert res.value == pytest.approx(GAUSS_MI, rel=0.15)
    ex = res.extras
    assert ex["bound"] == bound
    assert ex["heldout_value"] == res.value
    assert (ex["n_train"], ex["n_test"]) == (3500, 1500)
    assert 1 <= ex["best_epoch"] <= ex["epochs_trained"] <= FAST["max_epochs"]
    assert len(ex["heldout_curve"]) == ex["epochs_trained"]
    assert max(ex["heldout_curve"]) == pytest.approx(res.value, abs=1e-6)
    assert 0 < ex["heldout_std_error"] < 0.05


def test_infonce_is_a_lower_bound_below_its_ceiling():
    x, y = gaussian_pair(5000, seed=0)
    res = mi_probe.estimate(x, y, "mine", bound="infonce", **FAST)
    assert res.extras["log_batch_ceiling"] == pytest.approx(math.log(128))
    # A lower bound: well below log B here, close to the truth from below (held-out noise
    # is about 0.02 nats, so a few percent above the truth would still be noise).
    assert 0.8 * GAUSS_MI < res.value < 1.1 * GAUSS_MI
    assert not any("ceiling" in d for d in res.diagnostics)


def test_infonce_ceiling_diagnostic_fires_on_high_mi():
    # y = x + 0.01·noise: I ≈ 4.6 nats, far above log 16 = 2.77.
    rng = np.random.default_rng(1)
    x = rng.standard_normal(600)
    y = x + 0.01 * rng.standard_normal(600)
    params = {**FAST, "batch_size": 16, "max_epochs": 15, "lr": 2e-2}
    nce = mi_probe.estimate(x, y, "mine", bound="infonce", **params)
    assert nce.value <= math.log(16) + 1e-6
    assert nce.value > 0.9 * math.log(16)
    assert any("log(batch) ceiling" in d for d in nce.diagnostics)
    dv = mi_probe.estimate(x, y, "mine", bound="mine", **params)
    assert not any("ceiling" in d for d in dv.diagnostics)
    assert dv.value > nce.value


def test_independent_data_give_near_zero():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((2000, 2)), rng.standard_normal(2000)
    for bound in ("mine", "infonce"):
        res = mi_probe.estimate(x, y, "mine", bound=bound, **FAST)
        assert abs(res.value) < 0.05


def test_same_seed_same_value_and_units_convert():
    x, y = gaussian_pair(500, seed=3)
    params = {**FAST, "max_epochs": 5}
    a = mi_probe.estimate(x, y, "mine", seed=7, **params)
    b = mi_probe.estimate(x, y, "mine", seed=7, unit="bits", **params)
    c = mi_probe.estimate(x, y, "mine", seed=8, **params)
    assert b.value == a.value / math.log(2)  # bitwise the same nats value
    assert b.extras["train_value"] == pytest.approx(a.extras["train_value"] / math.log(2))
    assert b.extras["heldout_curve"] == pytest.approx(
        [v / math.log(2) for v in a.extras["heldout_curve"]])
    assert c.value != a.value


def test_discrete_labels_are_one_hot_inputs():
    # y uniform on {0, 1}, x | y ~ N(±1, 1): I = 0.3368 nats (see test_linear_probe).
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 2500)
    x = (2 * y - 1) + rng.standard_normal(2500)
    res = mi_probe.estimate(x, y, "mine", **FAST)
    assert res.y_kind == "discrete"
    assert res.value == pytest.approx(0.3368, rel=0.2)


def test_bad_parameters_are_clear_errors():
    x, y = gaussian_pair(100, seed=0)
    with pytest.raises(ParameterError, match="bound"):
        mi_probe.estimate(x, y, "mine", bound="dv")
    with pytest.raises(ParameterError, match="batch_size"):
        mi_probe.estimate(x, y, "mine", batch_size=1)


def test_batches_too_large_for_memory_are_refused_before_training():
    x, y = gaussian_pair(200_000, seed=0)
    with pytest.raises(ResourceError, match="lower batch_size"):
        mi_probe.estimate(x, y, "mine", batch_size=50_000)


def test_missing_cuda_is_a_clear_error():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    x, y = gaussian_pair(100, seed=0)
    with pytest.raises(ParameterError, match="CUDA"):
        mi_probe.estimate(x, y, "mine", device="cuda")
