"""Trust report: each diagnostic fires when it should and stays quiet otherwise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rich.console import Console

import mi_probe
from mi_probe import Estimate, Estimator
from mi_probe.bench import builtin_tasks
from mi_probe.params import Param
from mi_probe.trust import (
    attach,
    check_agreement,
    check_layers,
    effective_rank,
    render,
    renyi_sensitivity,
    trust_report,
)

TASKS = {t.name: t for t in builtin_tasks()}


def _checks(notes, level="warn"):
    return {n.check for n in notes if n.level == level}


def test_too_few_samples_for_the_dimension():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 10)), rng.normal(size=(60, 1))
    assert "few-samples" in _checks(trust_report(mi_probe.estimate(x, y, "ksg")))
    x, y = TASKS["gauss-1x1"].sample(300, seed=0)
    assert "few-samples" not in _checks(trust_report(mi_probe.estimate(x, y, "ksg")))


def test_knn_high_dimension_and_high_mi_regimes_reach_the_report():
    x, y = TASKS["gauss-dense-25x25"].sample(200, seed=1)
    notes = trust_report(mi_probe.estimate(x, y, "ksg"))
    assert any("dimension" in n.message for n in notes if n.check == "estimator")
    x, y = TASKS["gauss-strong-5x5"].sample(400, seed=1)
    notes = trust_report(mi_probe.estimate(x, y, "ksg"))
    assert any(n.check == "estimator" and "underestimates" in n.message for n in notes)
    (ceiling,) = [n for n in notes if n.check == "ceiling"]
    assert "% of the most this estimator can return" in ceiling.message
    x, y = TASKS["gauss-1x1"].sample(400, seed=1)
    assert not _checks(trust_report(mi_probe.estimate(x, y, "ksg")))


def test_infonce_near_log_batch_is_reported():
    x, y = TASKS["gauss-strong-5x5"].sample(240, seed=2)
    res = mi_probe.estimate(x, y, "mine", bound="infonce", batch_size=4, max_epochs=6)
    notes = trust_report(res)
    (ceiling,) = [n for n in notes if n.check == "ceiling"]
    share = res.value / math.log(res.extras["batch_size"])
    assert share > 0.9 and f"{share:.0%}" in ceiling.message
    assert any("log(batch)" in n.message for n in notes if n.level == "warn")


class _Trained(Estimator):
    """Gaussian plug-in MI plus seed noise of a chosen size: a stand-in for MINE."""

    name = "test-trained"
    y_kinds = frozenset({"continuous"})
    randomized = True
    params = (Param("seed", int, 0, "seed", low=0), Param("spread", float, 0.0, "noise sd"))

    def compute(self, x, y, params):
        r = np.corrcoef(x[:, 0], y.values[:, 0])[0, 1]
        noise = np.random.default_rng(params["seed"]).normal(0, params["spread"])
        return Estimate(-0.5 * math.log(1 - r * r) + noise)


def test_spread_across_seeds():
    x, y = TASKS["gauss-1x1"].sample(300, seed=3)
    noisy = mi_probe.estimate(x, y, _Trained(), spread=0.2, ci=0.9, replicates=5,
                              resample="seeds")
    assert "seed-spread" in _checks(trust_report(noisy))
    calm = mi_probe.estimate(x, y, _Trained(), spread=0.001, ci=0.9, replicates=5,
                             resample="seeds")
    assert "seed-spread" not in _checks(trust_report(calm))
    assert "seed-spread" in _checks(trust_report(calm), "info")


def test_disagreement_between_shannon_estimators_only():
    x, y = TASKS["gauss-strong-5x5"].sample(400, seed=4)
    knn = mi_probe.estimate(x, y, "ksg")
    probe = mi_probe.estimate(x, y, "linear-probe")  # the Gaussian optimum: near exact here
    renyi = mi_probe.estimate(x, y, "renyi")
    assert "disagreement" in _checks(check_agreement({"ksg": knn, "probe": probe}))
    assert not check_agreement({"renyi": renyi, "probe": probe})
    assert not check_agreement({"ksg": knn, "ksg-again": mi_probe.estimate(x, y, "ksg", k=4)})


def test_renyi_width_rank_and_sensitivity():
    x, y = TASKS["gauss-dense-2x2"].sample(200, seed=5)
    res = mi_probe.estimate(x, y, "renyi", normalize=False, sigma=1.5)
    notes = trust_report(res, xs=[x], y=y)
    info = {n.check: n.message for n in notes if n.level == "info"}
    assert "σ_x = 1.5" in info["renyi-width"]
    assert "renyi-quantity" in info and "renyi-rank" in info
    sens = res.extras["sigma_sensitivity"]
    half = mi_probe.estimate(x, y, "renyi", normalize=False, sigma=0.75, y_sigma=0.75)
    assert sens["sigma/2"] == pytest.approx(half.value)
    assert sens["sigma"] == res.value
    narrow = mi_probe.estimate(x, y, "renyi", normalize=False, sigma=0.01)
    assert any("narrow" in n.message for n in trust_report(narrow) if n.level == "warn")
    wide = mi_probe.estimate(x, y, "renyi", normalize=False, sigma=1e3)
    assert any("wide" in n.message for n in trust_report(wide) if n.level == "warn")
    assert "renyi-rank" not in _checks(trust_report(res))


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_effective_rank_definition(alpha):
    """exp(S_1) is the Roy-Vetterli effective rank; exp(S_2) the participation ratio."""
    x = np.random.default_rng(6).normal(size=(80, 3))
    res = mi_probe.estimate(x, x[:, :1], "renyi", normalize=False, sigma=2.0, alpha=alpha)
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    lam = np.clip(np.linalg.eigvalsh(np.exp(-sq / 8.0) / 80), 0, None)
    expected = (np.exp(-np.sum(lam[lam > 0] * np.log(lam[lam > 0]))) if alpha == 1
                else 1 / np.sum(lam ** 2))
    assert effective_rank(res.extras["entropy_x"]) == pytest.approx(expected, rel=1e-6)
    bits = mi_probe.estimate(x, x[:, :1], "renyi", normalize=False, sigma=2.0, alpha=alpha,
                             unit="bits")
    assert effective_rank(bits.extras["entropy_x"], "bits") == pytest.approx(expected, rel=1e-6)


def test_renyi_curve_tracking_the_entropy_of_the_states():
    rng = np.random.default_rng(7)
    y = rng.normal(size=(150, 2))
    base = y @ rng.normal(size=(2, 4)) + rng.normal(size=(150, 4))
    xs = [c * base for c in (0.1, 0.2, 0.4, 0.8, 1.6)]
    results = mi_probe.estimate_layers(xs, y, "renyi", normalize=False)
    names = [f"layer {i}" for i in range(5)]
    assert "renyi-tracks-entropy" in _checks(check_layers(results, names))
    shuffled = [results[i] for i in (0, 4, 1, 3, 2)]
    for res, h in zip(shuffled, (5.0, 0.5, 4.0, 1.0, 3.0), strict=True):
        res.extras["entropy_x"] = h  # the same values, now anti-correlated with H
    assert not check_layers(shuffled, names)
    notes = renyi_sensitivity(xs, y, results, layers=names)
    assert len([n for n in notes if n.subject.startswith("renyi · layer")]) == 5


def test_null_and_interval_notes():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(150, 2)), rng.normal(size=(150, 2))
    res = mi_probe.estimate(x, y, "renyi", normalize=False, sigma="median", permutations=19)
    messages = [n.message for n in trust_report(res) if n.check == "null"]
    assert any("survives shuffling" in m for m in messages)
    x, y = TASKS["gauss-1x1"].sample(300, seed=8)
    res = mi_probe.estimate(x, y, "ksg", permutations=19, ci=0.9, replicates=6)
    notes = [n for n in trust_report(res) if n.check in ("null", "wide-ci")]
    assert [n.level for n in notes] == ["info"] and "p = 0.05" in notes[0].message
    few = mi_probe.estimate(x, y, "ksg", permutations=4)
    assert any("cannot give p below" in n.message for n in trust_report(few))


def test_render_folds_repeats_and_attach_adds_warnings():
    rng = np.random.default_rng(9)
    xs = [rng.normal(size=(40, 8)) for _ in range(6)]
    y = rng.normal(size=(40, 1))
    results = mi_probe.estimate_layers(xs, y, "ksg")
    names = [f"layer {i}" for i in range(6)]
    notes = trust_report(results, layers=names)
    console = Console(record=True, width=200)
    render(notes, console)
    text = console.export_text()
    assert "trust report" in text and "the same check on 3 more" in text
    attach(results, notes, names)
    assert any("fewer than 10 per dimension" in d for d in results[0].diagnostics)


def test_probe_null_notes():
    from mi_probe.probe_results import ResultRow
    from mi_probe.trust import probe_null_notes

    def row(layer, value, null_mean, p=0.01):
        return ResultRow("ckpt", 10, str(layer), layer, "predictive", "renyi", value, "nats",
                         100, null_mean=null_mean, null_sd=0.01, excess=value - null_mean,
                         p_value=p)

    rows = [row(0, 1.0, 0.9), row(1, 1.2, 1.15, p=0.2), row(2, 1.1, 0.8)]
    notes = {n.check: n for n in probe_null_notes(rows, shuffles=19)}
    assert "96%" in notes["null-share"].message  # 1.15 / 1.2
    assert "from layer 1 (raw value) to layer 2" in notes["null-ridge"].message
    assert notes["null-p"].message.endswith("layers 1")
    few = probe_null_notes(rows, shuffles=3)
    assert any("cannot give p below 0.25" in n.message for n in few)
    calm = [row(0, 1.0, 0.1), row(1, 2.0, 0.1)]
    assert not [n for n in probe_null_notes(calm, shuffles=19) if n.level == "warn"]
    bare = [ResultRow("ckpt", 10, "0", 0, "predictive", "renyi", 1.0, "nats", 100)]
    assert "without a shuffled-y baseline" in probe_null_notes(bare)[0].message
