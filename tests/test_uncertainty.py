"""Confidence intervals, seed intervals, permutation tests and the null baseline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from mi_probe.cli.app import app
from typer.testing import CliRunner

import mi_probe
from mi_probe import Estimate, Estimator, InputError, ParameterError
from mi_probe.bench import builtin_tasks
from mi_probe.params import Param
from mi_probe.uncertainty import (
    null_baseline,
    permutation_p_value,
    subsample_interval,
)

TASKS = {t.name: t for t in builtin_tasks()}


class Gaussian(Estimator):
    """Plug-in Gaussian MI from the sample covariance (nats): fast, √n-consistent."""

    name = "test-gaussian"
    y_kinds = frozenset({"continuous"})

    def compute(self, x, y, params):
        z = np.hstack([x, y.values])
        cov, d = np.atleast_2d(np.cov(z, rowvar=False)), x.shape[1]
        logdet = lambda m: np.linalg.slogdet(m)[1]  # noqa: E731
        return Estimate(0.5 * (logdet(cov[:d, :d]) + logdet(cov[d:, d:]) - logdet(cov)))


class NoisyGaussian(Gaussian):
    """The same plus seeded noise: a stand-in for a trained (randomized) estimator."""

    name = "test-noisy-gaussian"
    randomized = True
    params = (Param("seed", int, 0, "seed", low=0),)

    def compute(self, x, y, params):
        noise = np.random.default_rng(params["seed"]).normal(0, 0.05)
        return Estimate(super().compute(x, y, params).value + noise)


def test_no_new_arguments_no_change():
    x, y = TASKS["gauss-1x1"].sample(300, seed=0)
    res = mi_probe.estimate(x, y, Gaussian())
    assert res.ci is None and res.replicates is None
    assert not {"p_value", "ci_level", "null_mean"} & set(res.extras)


def test_subsample_interval_has_the_requested_structure():
    x, y = TASKS["gauss-1x1"].sample(400, seed=1)
    res = mi_probe.estimate(x, y, Gaussian(), ci=0.9, replicates=12, resample_seed=3)
    low, high = res.ci
    assert low < res.value < high
    assert len(res.replicates) == 12
    assert res.extras["subsample_size"] == 200 and res.extras["ci_level"] == 0.9
    assert res.extras["ci_method"] == "subsample-normal"
    # half-samples: the scale √(m/(n−m)) is 1, so the half-width is t·sd(replicates)
    from scipy import stats
    half = stats.t.ppf(0.95, 11) * np.std(res.replicates, ddof=1)
    assert (high - low) / 2 == pytest.approx(half)
    again = mi_probe.estimate(x, y, Gaussian(), ci=0.9, replicates=12, resample_seed=3)
    assert again.ci == res.ci
    bits = mi_probe.estimate(x, y, Gaussian(), ci=0.9, replicates=12, resample_seed=3,
                             unit="bits")
    np.testing.assert_allclose(np.array(bits.ci) * math.log(2), res.ci)
    assert json.loads(json.dumps(res.to_dict()))["ci"] == list(res.ci)


def test_interval_contains_the_truth_on_an_easy_case():
    task = TASKS["gauss-dense-3x3"]
    x, y = task.sample(2000, seed=2)
    res = mi_probe.estimate(x, y, Gaussian(), ci=0.95)
    assert res.ci[0] < task.true_mi < res.ci[1]
    assert res.ci[1] - res.ci[0] < 0.2


def test_interval_coverage_is_near_nominal():
    """200 fresh samples: a 95 % interval covers the truth 90-99 % of the time."""
    task = TASKS["gauss-1x1"]
    hits = 0
    for rep in range(200):
        x, y = task.sample(200, seed=1000 + rep)
        res = mi_probe.estimate(x, y, Gaussian(), ci=0.95, replicates=20, resample_seed=rep)
        hits += res.ci[0] <= task.true_mi <= res.ci[1]
    assert 0.90 <= hits / 200 <= 0.99


def test_percentile_interval_is_the_reverse_percentile():
    reps = np.array([0.8, 1.0, 1.1, 1.2, 1.4])
    low, high = subsample_interval(1.0, reps, n=100, m=50, level=0.5, method="percentile")
    q_lo, q_hi = np.quantile(reps - reps.mean(), [0.25, 0.75])
    assert (low, high) == pytest.approx((1.0 - q_hi, 1.0 - q_lo))
    # m = n/4: the finite-population scale is √(25/75)
    low4, high4 = subsample_interval(1.0, reps, n=100, m=25, level=0.5, method="normal")
    low2, high2 = subsample_interval(1.0, reps, n=100, m=50, level=0.5, method="normal")
    assert (high4 - low4) / (high2 - low2) == pytest.approx(math.sqrt(25 / 75))


def test_seed_interval_for_randomized_estimators():
    x, y = TASKS["gauss-1x1"].sample(300, seed=3)
    res = mi_probe.estimate(x, y, NoisyGaussian(), ci=0.95, replicates=5, resample="seeds")
    runs = [res.value, *res.replicates]
    assert res.extras["seed_mean"] == pytest.approx(np.mean(runs))
    assert res.ci[0] < res.extras["seed_mean"] < res.ci[1]
    assert len(set(runs)) == 6  # each replicate used its own seed
    with pytest.raises(ParameterError, match="randomized"):
        mi_probe.estimate(x, y, Gaussian(), ci=0.95, resample="seeds")


def test_permutation_p_value_small_for_dependent_data():
    x, y = TASKS["gauss-1x1"].sample(300, seed=4)
    res = mi_probe.estimate(x, y, Gaussian(), permutations=49)
    assert res.extras["p_value"] == pytest.approx(1 / 50)
    assert len(res.extras["null_values"]) == 49
    assert res.extras["excess"] == pytest.approx(res.value - res.extras["null_mean"])
    assert res.ci is None


def test_permutation_p_values_are_roughly_uniform_under_independence():
    rng = np.random.default_rng(5)
    p_values = []
    for rep in range(100):
        x, y = rng.normal(size=(100, 1)), rng.normal(size=(100, 1))
        p_values.append(mi_probe.estimate(x, y, Gaussian(), permutations=19,
                                          resample_seed=rep).extras["p_value"])
    p_values = np.array(p_values)
    assert 0.4 < p_values.mean() < 0.6
    assert np.mean(p_values <= 0.1) < 0.2
    assert permutation_p_value(1.0, np.array([0.5, 2.0, 1.0])) == pytest.approx(3 / 4)


def test_layers_share_subsamples_and_permutations():
    x, y = TASKS["gauss-dense-2x2"].sample(200, seed=6)
    first, second = mi_probe.estimate_layers([x, x.copy()], y, Gaussian(), ci=0.9,
                                             replicates=4, permutations=5)
    assert first.replicates == second.replicates
    assert first.extras["null_values"] == second.extras["null_values"]


def test_null_baseline_per_layer():
    x, y = TASKS["gauss-dense-2x2"].sample(300, seed=7)
    noise = np.random.default_rng(0).normal(size=x.shape)
    results, nulls = null_baseline([x, noise], y, Gaussian(), permutations=19)
    assert [r.value for r in results] == [n.value for n in nulls]
    assert nulls[0].p_value == pytest.approx(1 / 20) and nulls[1].p_value > 0.05
    assert nulls[0].excess == pytest.approx(nulls[0].value - nulls[0].null_mean)
    assert 0 < nulls[0].null_fraction < 0.2


def test_bad_options_are_user_errors():
    x, y = TASKS["gauss-1x1"].sample(50, seed=8)
    for kwargs in ({"ci": 95}, {"replicates": 1}, {"permutations": -1},
                   {"resample": "bootstrap", "ci": 0.9}):
        with pytest.raises(ParameterError):
            mi_probe.estimate(x, y, Gaussian(), **kwargs)
    with pytest.raises(InputError, match="subsample"):
        mi_probe.estimate(x[:3], y[:3], "renyi", ci=0.9)


def test_cli_mi_prints_and_serialises_interval_and_p_value(tmp_path):
    x, y = TASKS["gauss-1x1"].sample(200, seed=9)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    args = ["mi", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "-e", "renyi",
            "-p", "sigma=median", "-p", "normalize=false", "--ci", "0.9", "--replicates", "5",
            "--permutations", "9"]
    out = CliRunner().invoke(app, args + ["--no-trust"])
    assert out.exit_code == 0, out.output
    assert "90% CI [" in out.output and "permutation test: p = 0.1" in out.output
    data = json.loads(CliRunner().invoke(app, args + ["--json"]).output)
    assert len(data["ci"]) == 2 and data["extras"]["p_value"] == pytest.approx(0.1)
    assert len(data["replicates"]) == 5 and data["trust"]


def test_pooled_null_over_disjoint_windows():
    from mi_probe.uncertainty import null_from_result, pool_nulls

    x, y = TASKS["gauss-dense-2x2"].sample(400, seed=10)
    halves = [mi_probe.estimate(x[s], y[s], Gaussian(), permutations=9, resample_seed=k)
              for k, s in enumerate((slice(0, 200), slice(200, 400)))]
    pooled = pool_nulls(halves)
    assert pooled.value == pytest.approx(np.mean([r.value for r in halves]))
    assert len(pooled.null_values) == 18 and pooled.p_value == pytest.approx(1 / 19)
    single = null_from_result(halves[0])
    assert single.null_mean == pytest.approx(halves[0].extras["null_mean"])
    assert single.p_value == pytest.approx(halves[0].extras["p_value"])
    with pytest.raises(ParameterError):
        pool_nulls([mi_probe.estimate(x, y, Gaussian())])


def test_probe_shuffle_baseline(tiny_gpt2, tmp_path):
    """`mi-probe estimate --null P`: per-layer null, excess and p-value in results.csv and
    ridge.csv, a baseline table and trust notes; --null 0 warns that there is none."""
    import csv

    from tiny_models import write_prompt_target_jsonl

    from mi_probe.probe import probe

    data = write_prompt_target_jsonl(tmp_path / "probe.jsonl", n=30)
    results = probe(tiny_gpt2, tmp_path / "a", data=str(data), samples=30, null=4,
                    estimators=("renyi",), plots=False, incremental=False)
    rows = results.select(quantity="predictive")
    assert all(r.null_mean is not None and r.p_value >= 1 / 5 for r in rows)
    assert all(r.excess == pytest.approx(r.value - r.null_mean) for r in rows)
    with (tmp_path / "a" / "ridge.csv").open() as f:
        (ridge,) = list(csv.DictReader(f))
    best = max((r for r in rows if r.layer != "final_norm"), key=lambda r: r.excess)
    assert int(ridge["excess_ridge_layer"]) == best.layer_index

    runner = CliRunner()
    args = ["estimate", str(tiny_gpt2), "--data", str(data), "--samples", "30",
            "--no-plots", "--no-incremental"]
    out = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert out.exit_code == 0, out.output
    assert "shuffled-y baseline" in out.output and "excess" in out.output
    out = runner.invoke(app, [*args, "--null", "0", "--out", str(tmp_path / "c")])
    assert "without a shuffled-y baseline" in out.output
    with (tmp_path / "c" / "results.csv").open() as f:
        assert "null_mean" not in next(csv.reader(f))
