"""Benchmark tasks (closed forms against independent Monte Carlo), scoring and the runner."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from mi_probe.cli.app import app
from scipy import integrate, special, stats
from typer.testing import CliRunner

from mi_probe import Estimate, Estimator, ParameterError, hookimpl
from mi_probe.bench import (
    BenchTask,
    builtin_tasks,
    is_solved,
    log_ratio,
    run_bench,
    select_tasks,
    split_params,
)
from mi_probe.bench.runner import parse_estimator_spec
from mi_probe.bench.tasks import (
    additive_noise_mi,
    dense_cov,
    gaussian_mi,
    mixture_means,
    mixture_mi_mc,
    pair_cov,
    student_t_correction,
)
from mi_probe.registry import register_plugin, unregister_plugin

TASKS = {t.name: t for t in builtin_tasks()}
MC_N = 100_000


def _mc_check(log_ratio_samples: np.ndarray, truth: float) -> None:
    """The closed form lies within 5 Monte Carlo standard errors of E[log p(x,y)/p(x)p(y)]."""
    mean = log_ratio_samples.mean()
    se = log_ratio_samples.std(ddof=1) / math.sqrt(len(log_ratio_samples))
    assert abs(mean - truth) < 5 * se + 1e-3, (mean, se, truth)


@pytest.mark.parametrize("name, cov_fn", [
    ("gauss-dense-3x3", lambda: dense_cov(3, 3)),
    ("gauss-2pair-5x5", lambda: pair_cov(5, 5)),
])
def test_gaussian_closed_form_matches_monte_carlo(name, cov_fn):
    task, cov = TASKS[name], cov_fn()
    x, y = task.sample(MC_N, seed=11)
    d = task.dim_x
    joint = stats.multivariate_normal(cov=cov).logpdf(np.hstack([x, y]))
    px = stats.multivariate_normal(cov=cov[:d, :d]).logpdf(x)
    py = stats.multivariate_normal(cov=cov[d:, d:]).logpdf(y)
    _mc_check(joint - px - py, task.true_mi)
    assert task.true_mi == pytest.approx(gaussian_mi(cov, d))


@pytest.mark.parametrize("name, dim, df", [("student-2x2-df2", 2, 2), ("student-1x1-df1", 1, 1)])
def test_student_t_closed_form_matches_monte_carlo(name, dim, df):
    task = TASKS[name]
    x, y = task.sample(MC_N, seed=12)
    eye = np.eye(dim)
    joint = stats.multivariate_t(shape=np.eye(2 * dim), df=df).logpdf(np.hstack([x, y]))
    px = stats.multivariate_t(shape=eye, df=df).logpdf(x)
    py = stats.multivariate_t(shape=eye, df=df).logpdf(y)
    _mc_check(joint - px - py, task.true_mi)
    assert task.true_mi == pytest.approx(student_t_correction(dim, dim, df))
    assert task.true_mi > 0  # identity dispersion: all the MI comes from the shared tails


@pytest.mark.parametrize("eps", [0.1, 0.75])
def test_additive_noise_closed_form_matches_monte_carlo(eps):
    task = TASKS[f"additive-noise-{eps:g}"]
    x, y = task.sample(MC_N, seed=13)
    # p(y) = |[y-ε, y+ε] ∩ [0, 1]| / (2ε); p(y|x) = 1/(2ε) on the support
    p_y = (np.minimum(1.0, y + eps) - np.maximum(0.0, y - eps)) / (2 * eps)
    _mc_check((-np.log(2 * eps) - np.log(p_y)).ravel(), task.true_mi)
    assert task.true_mi == pytest.approx(additive_noise_mi(eps))


def test_mixture_monte_carlo_matches_quadrature():
    means = mixture_means(2, 1, 1.0, seed=2001)[:, 0]
    value, se = mixture_mi_mc(means[:, None], draws=50_000, seed=3)

    def integrand(t):  # Σ_k π_k p(t|k) log p(t|k)/p(t)
        lik = stats.norm.pdf(t, loc=means)
        return float(np.sum(0.5 * lik * np.log(lik / lik.mean())))

    exact = integrate.quad(integrand, -12, 12, limit=200)[0]
    assert abs(value - exact) < 5 * se
    task = TASKS["mixture-2class-1d"]
    assert task.mi_se > 0 and 0 < task.true_mi < math.log(2)


@pytest.mark.parametrize("name, base_name, inverse", [
    ("normal-cdf-gauss-2pair-3x3", "gauss-2pair-3x3", special.ndtri),
    ("half-cube-gauss-2pair-3x3", "gauss-2pair-3x3",
     lambda t: np.sign(t) * np.abs(t) ** (2 / 3)),
    ("asinh-student-2x2-df1", "student-2x2-df1", np.sinh),
])
def test_transforms_are_invertible_maps_of_the_base_sample(name, base_name, inverse):
    """MI is unchanged because each side is an invertible map of the base task's sample."""
    task, base = TASKS[name], TASKS[base_name]
    x, y = task.sample(500, seed=4)
    bx, by = base.sample(500, seed=4)
    np.testing.assert_allclose(inverse(x), bx, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(inverse(y), by, rtol=1e-6, atol=1e-8)
    assert task.true_mi == base.true_mi


def test_spiral_is_a_norm_preserving_invertible_rotation():
    task, base = TASKS["spiral-gauss-2pair-5x5"], TASKS["gauss-2pair-5x5"]
    x, _ = task.sample(300, seed=5)
    bx, _ = base.sample(300, seed=5)
    np.testing.assert_allclose((x * x).sum(1), (bx * bx).sum(1))
    angle = (x * x).sum(1) / 5  # speed 1/d in the (0, 1) plane
    back = x.copy()
    back[:, 0] = np.cos(angle) * x[:, 0] + np.sin(angle) * x[:, 1]
    back[:, 1] = -np.sin(angle) * x[:, 0] + np.cos(angle) * x[:, 1]
    np.testing.assert_allclose(back, bx, atol=1e-10)
    assert not np.allclose(x, bx)


def test_every_builtin_task_samples_what_it_declares():
    assert len(TASKS) >= 40
    for task in TASKS.values():
        x, y = task.sample(7, seed=1)
        assert x.shape == (7, task.dim_x)
        if task.y_kind == "discrete":
            assert y.shape == (7,) and np.issubdtype(y.dtype, np.integer)
        else:
            assert y.shape == (7, task.dim_y)
        again = task.sample(7, seed=1)
        np.testing.assert_array_equal(again[0], x)
        assert task.true_mi > 0


def test_scoring_follows_beyond_normal():
    assert log_ratio(0.5, 1.0) == pytest.approx(math.log(0.5))
    assert is_solved(1.45, 1.0) and is_solved(0.7, 1.0)
    assert not is_solved(1.6, 1.0) and not is_solved(0.6, 1.0)
    assert log_ratio(-0.1, 1.0) is None and not is_solved(0.0, 1.0)


# -- runner ------------------------------------------------------------------------------------
class _Plugin:
    """A runtime plugin: one failing estimator, one continuous-only estimator, one task."""

    class Broken(Estimator):
        name = "bench-test-broken"
        description = "raises on wide data"

        def compute(self, x, y, params):
            if x.shape[1] > 1:
                raise RuntimeError("boom")
            return Estimate(0.3)

    class Correlation(Estimator):
        name = "bench-test-gauss"
        description = "-½ log(1 - r²) of the first coordinates"
        y_kinds = frozenset({"continuous"})

        def compute(self, x, y, params):
            r = np.corrcoef(x[:, 0], y.values[:, 0])[0, 1]
            return Estimate(-0.5 * math.log(1 - r * r))

    @staticmethod
    @hookimpl
    def register_estimators(register):
        register(_Plugin.Broken)
        register(_Plugin.Correlation)

    @staticmethod
    @hookimpl
    def register_bench_tasks(register):
        base = TASKS["gauss-1x1"]
        register(BenchTask("plugin-task", 1, 1, "continuous", base.sampler, base.mi,
                           "plugin", "a task from a plugin"))


@pytest.fixture
def bench_plugin():
    register_plugin(_Plugin, name="bench-test-plugin")
    yield
    unregister_plugin("bench-test-plugin")


def test_runner_records_errors_skips_and_scores(bench_plugin):
    tasks = select_tasks(["plugin-task", "gauss-dense-2x2", "mixture-2*"])
    assert [t.name for t in tasks] == ["gauss-dense-2x2", "mixture-2class-1d", "plugin-task"]
    seen = []
    run = run_bench(["bench-test-gauss", "bench-test-broken"], tasks, [200, 400], seeds=2,
                    on_record=seen.append)
    assert len(run.records) == len(seen) == 3 * 2 * 2 * 2
    cells = {(c.estimator, c.task, c.n): c for c in run.cells()}
    assert len(cells) == 2 * 3 * 2
    ok = cells[("bench-test-gauss", "plugin-task", 400)]
    assert ok.status == "ok" and ok.n_ok == 2 and ok.solved
    assert ok.log_ratio == pytest.approx(math.log(ok.mean / TASKS["gauss-1x1"].true_mi))
    assert cells[("bench-test-gauss", "mixture-2class-1d", 200)].status == "skipped"
    failed = cells[("bench-test-broken", "gauss-dense-2x2", 200)]
    assert failed.status == "failed" and "boom" in failed.error and not failed.solved
    assert cells[("bench-test-broken", "plugin-task", 200)].mean == pytest.approx(0.3)
    data = json.loads(json.dumps(run.to_dict()))
    assert {t["name"] for t in data["tasks"]} == {t.name for t in tasks}
    assert data["config"]["seeds"] == [0, 1]


def test_cli_bench_writes_table_json_and_heatmap(bench_plugin, tmp_path):
    result = CliRunner().invoke(app, [
        "bench", "-e", "bench-test-gauss", "-e", "renyi[sigma=median,normalize=false]",
        "--n", "150", "--seeds", "1", "-t", "plugin-task", "-t", "additive-noise-0.75",
        "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "solved" in result.output and "plugin-task" in result.output
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["config"]["estimators"] == ["bench-test-gauss",
                                            "renyi[sigma=median,normalize=false]"]
    assert len(data["cells"]) == 4
    assert (tmp_path / "heatmap.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_bench_rejects_bad_input_in_one_line():
    runner = CliRunner()
    for args, words in [(["-t", "no-such-task*"], "no benchmark task"),
                        (["-e", "renyi", "--n", "ten"], "bad --n"),
                        (["-e", "renyi", "-p", "ksg.k=3"], "no estimator of this run"),
                        (["-e", "renyi", "-p", "renyi.nope=1"], "unknown parameter")]:
        result = runner.invoke(app, ["bench", *args, "--out", "/nonexistent/x"])
        assert result.exit_code == 2, args
        assert words in result.output and "Traceback" not in result.output
    assert runner.invoke(app, ["bench", "--list"]).exit_code == 0


def test_parameter_and_spec_parsing():
    assert parse_estimator_spec("renyi[sigma=0.5,alpha=2]") == (
        "renyi[sigma=0.5,alpha=2]", "renyi", {"sigma": "0.5", "alpha": "2"})
    specs = ["ksg", "renyi[sigma=0.5]"]
    assert split_params(["ksg.k=5", "renyi[sigma=0.5].alpha=2"], specs) == {
        "ksg": {"k": "5"}, "renyi[sigma=0.5]": {"alpha": "2"}}
    with pytest.raises(ParameterError):
        parse_estimator_spec("renyi[sigma=0.5")
    with pytest.raises(ParameterError):
        split_params(["k=5"], specs)


def test_builtin_tasks_come_through_the_plugin_hook():
    from mi_probe.registry import get_registry

    reg = get_registry()
    assert "bench-tasks" in reg.plugins
    assert set(reg.plugins["bench-tasks"].bench_tasks) == set(TASKS)
