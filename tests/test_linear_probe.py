"""The linear-probe estimator: V-information of logistic / linear-Gaussian probes."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import integrate, special, stats

import mi_probe
from mi_probe.errors import InputError

RHO = 0.75
GAUSS_MI = -0.5 * math.log(1 - RHO**2)  # 0.4133 nats


@pytest.fixture(autouse=True)
def _quiet_plugins():
    with warnings.catch_warnings():  # other estimators may still be in the making
        warnings.simplefilter("ignore")
        yield


def gaussian_pair(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    return x, RHO * x + math.sqrt(1 - RHO**2) * rng.standard_normal(n)


def mixture_pair(n: int, mu: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """y uniform on {0, 1}, x | y ~ N(±mu, 1)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return (2 * y - 1) * mu + rng.standard_normal(n), y


def mixture_mi(mu: float) -> float:
    """I(x; y) = log 2 − E_x[H(y | x)] with p(y = 1 | x) = sigmoid(2·mu·x), by quadrature."""

    def integrand(x):
        z = 2 * mu * x
        p = special.expit(z)
        h = p * np.logaddexp(0, -z) + (1 - p) * np.logaddexp(0, z)
        return 0.5 * (stats.norm.pdf(x, mu) + stats.norm.pdf(x, -mu)) * h

    return math.log(2) - integrate.quad(integrand, -mu - 12, mu + 12, epsabs=1e-12)[0]


def test_mixture_truth_by_quadrature_matches_monte_carlo():
    mu = 1.0
    x, _ = mixture_pair(200_000, mu, seed=1)
    z = 2 * mu * x
    p = special.expit(z)
    h = p * np.logaddexp(0, -z) + (1 - p) * np.logaddexp(0, z)
    assert mixture_mi(mu) == pytest.approx(math.log(2) - h.mean(), abs=3e-3)
    assert mixture_mi(mu) == pytest.approx(0.33683, abs=1e-4)


def test_continuous_probe_recovers_gaussian_mi():
    x, y = gaussian_pair(5000, seed=0)
    res = mi_probe.estimate(x, y, "linear-probe")
    assert res.value == pytest.approx(GAUSS_MI, rel=0.15)
    assert res.y_kind == "continuous"
    assert res.extras["r2"] == pytest.approx(RHO**2, abs=0.05)
    assert (res.extras["n_train"], res.extras["n_test"]) == (3500, 1500)


def test_continuous_probe_multivariate_gaussian():
    # y = x·A + noise with known covariance: I = ½ log det(Σ_y) − ½ log det(Σ_noise).
    rng = np.random.default_rng(3)
    n, a = 6000, np.array([[1.0, 0.0], [0.5, 1.0], [0.0, -0.7]])
    x = rng.standard_normal((n, 3))
    noise_cov = np.array([[1.0, 0.3], [0.3, 0.5]])
    y = x @ a + rng.multivariate_normal(np.zeros(2), noise_cov, size=n)
    truth = 0.5 * (np.linalg.slogdet(a.T @ a + noise_cov)[1] - np.linalg.slogdet(noise_cov)[1])
    res = mi_probe.estimate(x, y, "linear-probe")
    assert res.value == pytest.approx(truth, rel=0.1)


def test_discrete_probe_equals_mi_of_well_specified_logistic_model():
    # log p(y=1|x)/p(y=0|x) = 2·mu·x is linear, so the V-information is the MI. Held-out
    # standard deviation at n = 20000, test_fraction 0.5: 0.0068 nats over 8 seeds, so
    # 0.03 nats is about 4.4 standard deviations.
    mu = 1.0
    x, y = mixture_pair(20_000, mu, seed=0)
    res = mi_probe.estimate(x, y, "linear-probe", test_fraction=0.5)
    assert res.y_kind == "discrete"
    assert res.value == pytest.approx(mixture_mi(mu), abs=0.03)
    assert res.extras["entropy_y"] == pytest.approx(math.log(2), abs=0.01)
    assert res.extras["plugin_entropy_y"] == pytest.approx(math.log(2), abs=0.01)
    # Bayes accuracy is Φ(mu) = 0.841.
    assert res.extras["accuracy"] == pytest.approx(stats.norm.cdf(mu), abs=0.02)
    assert res.extras["entropy_y"] - res.extras["cross_entropy"] == pytest.approx(res.value)


def test_floors_hold_and_raw_value_is_kept():
    # Independent, many features, few samples: the probe overfits, raw V-information < 0.
    rng = np.random.default_rng(0)
    floored = 0
    for seed in range(4):
        x = rng.standard_normal((120, 30))
        for y, kind in ((rng.integers(0, 3, 120), "discrete"),
                        (rng.standard_normal((120, 2)), "continuous")):
            res = mi_probe.estimate(x, y, "linear-probe", seed=seed)
            raw = res.extras["raw_value"]
            assert res.value == max(raw, 0.0)
            assert res.value >= 0
            if kind == "discrete":
                assert res.value <= res.extras["entropy_y"]
            if raw < 0:
                floored += 1
                assert any("floored at 0" in d for d in res.diagnostics)
    assert floored >= 4


def test_value_stays_below_label_entropy_when_labels_are_decodable():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 2))
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0).astype(int)  # 4 classes, separable
    res = mi_probe.estimate(x, y, "linear-probe", l2=1e-6)
    h = res.extras["entropy_y"]
    assert h == pytest.approx(math.log(4), abs=0.02)
    assert 0.8 * h < res.value <= h
    assert res.extras["accuracy"] > 0.97


def test_same_seed_same_value_other_seed_other_split():
    x, y = mixture_pair(1000, 0.8, seed=2)
    a = mi_probe.estimate(x, y, "linear-probe", seed=5).value
    b = mi_probe.estimate(x, y, "linear-probe", seed=5).value
    c = mi_probe.estimate(x, y, "linear-probe", seed=6).value
    assert a == b
    assert c != a


def test_labels_missing_from_training_split_keep_a_finite_value():
    rng = np.random.default_rng(4)
    y = np.concatenate([rng.integers(0, 3, 300), np.arange(100, 140)])  # 40 singletons
    x = y[:, None] * 0.01 + rng.standard_normal((len(y), 2))
    res = mi_probe.estimate(x, y, "linear-probe")
    assert math.isfinite(res.extras["raw_value"])
    assert any("absent from the training split" in d for d in res.diagnostics)
    assert any("few samples per class" in d for d in res.diagnostics)


def test_layers_share_one_split():
    x, y = gaussian_pair(800, seed=5)
    xs = [x, np.tanh(x), np.random.default_rng(0).standard_normal(800)]
    batched = [r.value for r in mi_probe.estimate_layers(xs, y, "linear-probe")]
    single = [mi_probe.estimate(xi, y, "linear-probe").value for xi in xs]
    assert batched == pytest.approx(single, rel=1e-12)
    assert batched[0] > batched[2]


def test_degenerate_continuous_y_is_a_clear_error():
    rng = np.random.default_rng(0)
    y = np.column_stack([rng.standard_normal(200), np.ones(200)])
    with pytest.raises(InputError, match="constant or linearly dependent"):
        mi_probe.estimate(rng.standard_normal((200, 2)), y, "linear-probe")
