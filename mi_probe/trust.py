"""How far to trust an MI estimate: diagnostics gathered into a short *trust report*.

Sources, in the order the report shows them:

* the estimator's own diagnostics (``MIResult.diagnostics``): estimator-specific regimes
  are detected where the numbers are, e.g. InfoNCE near its log(batch) ceiling (mine), kNN
  in the high-MI or high-dimension regime (ksg), a probe that did not converge;
* checks on any result: too few samples for the dimension; the share of the largest value
  the estimator can return (``ceiling`` extras); an interval that is wide, or an estimate
  that moves more than its interval when n halves (``subsample_shift``); the spread across
  seeds of trained estimators (DV/MINE bounds vary strongly between seeds); the permutation
  null (p-value, the share of the value that survives shuffling y);
* ``renyi`` only: the kernel widths used, the effective rank of the Gram matrices, and
  (with the data) the value at σ/2 and 2σ; across layers, whether the curve tracks H(Z_l)
  and whether the layer of the maximum moves with σ;
* across estimators run on the same states: disagreement beyond a factor of 1.5 among
  estimators of Shannon MI (renyi measures matrix-based Rényi dependence, a different
  quantity, and is left out of that comparison).

Effective rank of a Gram matrix K: with A = K / tr K and S_α(A) the matrix-based Rényi
entropy that renyi reports, r_α = exp(S_α(A)). For α = 1 this is the effective rank of
Roy & Vetterli (2007), exp(−Σ λ_i log λ_i); for α = 2 it is the participation ratio
1 / Σ λ_i². It runs from 1 (a constant kernel: σ far too wide) to n (K ≈ I: σ far too
narrow, every sample its own cluster, entropies near log n).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .result import MIResult, convert_unit

#: fewer samples than this many per dimension (d_x + d_y) is "too few".
SAMPLES_PER_DIM = 10
#: relative spread (sd / |mean|) across seeds above which a trained estimate is flagged.
SEED_SPREAD = 0.1
#: estimators disagree when the largest positive value exceeds the smallest by this factor.
DISAGREEMENT_FACTOR = 1.5
#: a σ/2 or 2σ value this many times away from the value at σ is "sensitive".
SIGMA_FACTOR = 1.5
#: share of the value surviving y-shuffles above which the null is flagged.
NULL_SHARE = 0.5
#: estimators whose value is not Shannon MI (left out of cross-estimator comparisons).
NON_SHANNON = frozenset({"renyi"})


@dataclass(frozen=True)
class TrustNote:
    """One line of a trust report.

    Attributes:
        level: "warn" (read the value with care) or "info" (context).
        check: short id, e.g. "few-samples", "renyi-sensitivity", "estimator".
        subject: what it is about, e.g. "renyi" or "ksg · layer 3".
        message: one or two plain sentences.
    """

    level: str
    check: str
    subject: str
    message: str


def _nats(value: float, unit: str) -> float:
    return float(value) / convert_unit(1.0, unit)


def _fmt(value: float, unit: str) -> str:
    return f"{value:.3g} {unit}"


def _subject(res: MIResult, layer: str | None) -> str:
    return res.estimator if layer is None else f"{res.estimator} · {layer}"


# -- one result ------------------------------------------------------------------------------
def check_result(res: MIResult, layer: str | None = None) -> list[TrustNote]:
    """Checks that need only the result itself (see the module docstring)."""
    who = _subject(res, layer)
    notes = [TrustNote("warn", "estimator", who, d) for d in res.diagnostics]
    dims = res.d_x + res.d_y
    if res.n < SAMPLES_PER_DIM * dims:
        notes.append(TrustNote(
            "warn", "few-samples", who,
            f"n = {res.n} samples for d_x + d_y = {dims} dimensions (fewer than "
            f"{SAMPLES_PER_DIM} per dimension): estimators of every family are biased here; "
            "compare values only at equal n and dimension, and against the shuffled-y null"))
    notes += _ceiling(res, who) + _interval(res, who) + _seeds(res, who) + _null(res, who)
    if res.estimator == "renyi":
        notes += _renyi(res, who)
    return notes


def _ceiling(res: MIResult, who: str) -> list[TrustNote]:
    ex = res.extras
    ceiling = ex.get("log_batch_ceiling") if ex.get("bound") == "infonce" else ex.get("ceiling")
    if not isinstance(ceiling, (int, float)) or ceiling <= 0:
        return []
    what = "log(batch size)" if "log_batch_ceiling" in ex else "the estimator's ceiling"
    return [TrustNote("info", "ceiling", who,
                      f"value = {res.value / ceiling:.0%} of the most this estimator can return "
                      f"here ({what} = {_fmt(ceiling, res.unit)})")]


def _interval(res: MIResult, who: str) -> list[TrustNote]:
    if res.ci is None:
        return []
    low, high = res.ci
    half = (high - low) / 2
    level = res.extras.get("ci_level", 0.95)
    notes = []
    if low <= 0 < res.value:
        notes.append(TrustNote("warn", "wide-ci", who,
                               f"the {level:.0%} interval [{low:.3g}, {high:.3g}] reaches 0: "
                               "the data do not separate this value from no information"))
    elif res.value > 0 and half > 0.5 * res.value:
        notes.append(TrustNote("warn", "wide-ci", who,
                               f"the {level:.0%} interval [{low:.3g}, {high:.3g}] is wide "
                               f"(±{half / res.value:.0%} of the value)"))
    shift = res.extras.get("subsample_shift")
    if shift is not None and abs(shift) > half:
        notes.append(TrustNote(
            "warn", "n-sensitive", who,
            f"the estimate moves by {shift:+.3g} {res.unit} when n is halved, more than the "
            "interval's half-width: it is biased at this n by a comparable amount, and the "
            "interval covers sampling noise only, not that bias"))
    return notes


def _seeds(res: MIResult, who: str) -> list[TrustNote]:
    ex = res.extras
    if ex.get("resample") == "seeds" and res.replicates:
        mean, sd = ex["seed_mean"], ex["seed_sd"]
        runs = len(res.replicates) + 1
        level = "warn" if sd > SEED_SPREAD * abs(mean) else "info"
        return [TrustNote(level, "seed-spread", who,
                          f"across {runs} seeds: mean {_fmt(mean, res.unit)}, sd "
                          f"{_fmt(sd, res.unit)} ({sd / abs(mean) if mean else math.inf:.0%} "
                          "of the mean)")]
    if ex.get("bound") in ("mine", "nwj"):
        return [TrustNote("info", "seed-spread", who,
                          "DV/NWJ bounds vary strongly between seeds; run with "
                          "resample='seeds' (CLI: --resample seeds --ci 0.95) to see the spread")]
    return []


def _null(res: MIResult, who: str) -> list[TrustNote]:
    ex = res.extras
    if "p_value" not in ex:
        return []
    p, mean, perms = ex["p_value"], ex["null_mean"], ex["permutations"]
    notes = []
    smallest = 1.0 / (perms + 1)
    if p > 0.05 and p <= smallest:
        notes.append(TrustNote("warn", "null", who,
                               f"{perms} permutations cannot give p below {smallest:.2g}; use "
                               "at least 19 (99 or more for a precise p-value)"))
    elif p > 0.05:
        notes.append(TrustNote("warn", "null", who,
                               f"not distinguishable from shuffled y: p = {p:.3g} over "
                               f"{perms} permutations"))
    if res.value > 0 and mean > NULL_SHARE * res.value:
        notes.append(TrustNote(
            "warn", "null", who,
            f"{mean / res.value:.0%} of the value survives shuffling y (null mean "
            f"{_fmt(mean, res.unit)}): most of it is estimator bias, not information about y; "
            f"read the excess over the null ({_fmt(ex['excess'], res.unit)})"))
    elif p <= 0.05:
        notes.append(TrustNote("info", "null", who,
                               f"above the shuffled-y null: p = {p:.3g}, excess "
                               f"{_fmt(ex['excess'], res.unit)} over a null mean of "
                               f"{_fmt(mean, res.unit)}"))
    return notes


def effective_rank(entropy: float, unit: str = "nats") -> float:
    """exp(S_α(A)) for a matrix entropy given in ``unit`` (see the module docstring)."""
    return math.exp(_nats(entropy, unit))


def _renyi(res: MIResult, who: str) -> list[TrustNote]:
    ex = res.extras
    notes = [TrustNote("info", "renyi-quantity", who,
                       "renyi measures matrix-based Rényi dependence of kernel Gram matrices, "
                       "not Shannon MI: compare its magnitudes with other estimators "
                       "qualitatively only")]
    widths = ", ".join(f"σ_{side} = {ex[f'sigma_{side}']:.3g}" for side in ("x", "y")
                       if ex.get(f"sigma_{side}") is not None)
    if widths:
        notes.append(TrustNote("info", "renyi-width", who,
                               f"kernel width used: {widths} (parameter sigma = "
                               f"{res.params.get('sigma')!r})"))
    ranks = {side: effective_rank(ex[key], res.unit)
             for side, key in (("x", "entropy_x"), ("y", "entropy_y"), ("joint", "joint_entropy"))
             if isinstance(ex.get(key), (int, float))}
    if ranks:
        alpha = res.params.get("alpha", 1.0)
        text = ", ".join(f"{side} {r:.1f}" for side, r in ranks.items())
        notes.append(TrustNote("info", "renyi-rank", who,
                               f"effective rank exp(S_{alpha:g}) of the Gram matrices (out of "
                               f"n = {res.n}): {text}"))
        rx = ranks.get("x")
        if rx is not None and rx > 0.5 * res.n:
            notes.append(TrustNote(
                "warn", "renyi-rank", who,
                f"the Gram matrix of x has effective rank {rx:.0f} of n = {res.n}: the kernel "
                "is narrow for this data (K ≈ I), entropies approach log n and the value "
                "reflects n more than the data; try a larger sigma or sigma=median"))
        elif rx is not None and rx < 2:
            notes.append(TrustNote(
                "warn", "renyi-rank", who,
                f"the Gram matrix of x has effective rank {rx:.2f}: the kernel is wide for "
                "this data (K nearly constant) and the value is close to 0 whatever the "
                "dependence; try a smaller sigma or sigma=median"))
    return notes


# -- many layers, many estimators -------------------------------------------------------------
def check_layers(results: Sequence[MIResult], layers: Sequence[str]) -> list[TrustNote]:
    """Checks across the layers of one estimator (renyi: does the curve track H(Z_l)?)."""
    if len(results) < 4 or results[0].estimator != "renyi":
        return []
    values = np.array([r.value for r in results])
    h_x = np.array([r.extras.get("entropy_x", np.nan) for r in results], dtype=float)
    if not np.all(np.isfinite(h_x)) or values.std() == 0 or h_x.std() == 0:
        return []
    corr = float(np.corrcoef(values, h_x)[0, 1])
    if corr < 0.9:
        return []
    return [TrustNote(
        "warn", "renyi-tracks-entropy", "renyi",
        f"across the {len(results)} layers the value tracks the entropy H(Z_l) of the "
        f"states (correlation {corr:.2f}): the curve may show how spread out the states are "
        "rather than how much they say about y; compare with the shuffled-y null (--null)")]


def check_agreement(by_estimator: Mapping[str, MIResult], subject: str = "") -> list[TrustNote]:
    """Disagreement between Shannon-MI estimators run on the same states."""
    shannon = {k: r for k, r in by_estimator.items() if r.estimator not in NON_SHANNON}
    if len(shannon) < 2:
        return []
    nats = {k: _nats(r.value, r.unit) for k, r in shannon.items()}
    low_key, high_key = min(nats, key=nats.get), max(nats, key=nats.get)
    low, high = nats[low_key], nats[high_key]
    if high <= 0 or (low > 0 and high / low <= DISAGREEMENT_FACTOR):
        return []
    ci_low, ci_high = shannon[low_key].ci, shannon[high_key].ci
    if ci_low is not None and ci_high is not None and ci_low[1] >= ci_high[0]:
        return []  # the intervals overlap
    listing = ", ".join(f"{k} {v:.3g}" for k, v in sorted(nats.items(), key=lambda kv: kv[1]))
    return [TrustNote(
        "warn", "disagreement", subject or "estimators",
        f"estimators disagree by more than a factor of {DISAGREEMENT_FACTOR:g} on the same "
        f"states (nats: {listing}); kNN and neural bounds tend to underestimate high MI and "
        "high dimension, probes give lower bounds: trust the ordering of layers more than "
        "any one magnitude")]


def renyi_sensitivity(
    xs: Sequence[Any], y: Any, results: Sequence[MIResult], factor: float = 2.0,
    layers: Sequence[str] | None = None,
) -> list[TrustNote]:
    """Re-estimate renyi at σ/``factor`` and σ·``factor`` (the widths actually used, on x and
    on continuous y) and report how the value, and the layer of the maximum, move.

    ``results[l]`` is the renyi result for ``xs[l]`` (n, d_l) against ``y``. Each result's
    ``extras["sigma_sensitivity"]`` gets {"sigma/f": value, "sigma": value, "sigma*f": value}.
    """
    from .api import estimate_layers

    layers = list(layers) if layers is not None else _default_layers(len(results))
    base = dict(results[0].params)
    y_kind = results[0].y_kind
    unit = results[0].unit
    curves: dict[str, list[float]] = {"sigma": [r.value for r in results]}
    widths = [(r.extras["sigma_x"], r.extras.get("sigma_y")) for r in results]
    # one batched call when every layer used the same widths (y-side work shared)
    groups = [list(range(len(xs)))] if len(set(widths)) == 1 else [[i] for i in range(len(xs))]
    for label, scale in ((f"sigma/{factor:g}", 1 / factor), (f"sigma*{factor:g}", factor)):
        curve = [0.0] * len(xs)
        for group in groups:
            sigma_x, sigma_y = widths[group[0]]
            params = dict(base, sigma=sigma_x * scale)
            if sigma_y is not None:
                params["y_sigma"] = sigma_y * scale
            out = estimate_layers([xs[i] for i in group], y, "renyi", unit=unit,
                                  y_kind=y_kind, **params)
            for i, res in zip(group, out, strict=True):
                curve[i] = res.value
        curves[label] = curve
    notes = []
    for i, res in enumerate(results):
        values = {k: c[i] for k, c in curves.items()}
        res.extras["sigma_sensitivity"] = values
        text = ", ".join(f"{k}: {v:.3g}" for k, v in values.items())
        positive = [v for v in values.values() if v > 0]
        sensitive = len(positive) < 3 or max(positive) / min(positive) > SIGMA_FACTOR
        notes.append(TrustNote(
            "warn" if sensitive else "info", "renyi-sensitivity", _subject(res, layers[i]),
            f"value against the kernel width ({res.unit}) — {text}"
            + (f": it changes by more than ×{SIGMA_FACTOR:g}, so its magnitude is a property "
               "of σ as much as of the data" if sensitive else "")))
    if len(results) > 1:
        peaks = {k: layers[int(np.argmax(c))] for k, c in curves.items()}
        if len(set(peaks.values())) > 1:
            text = ", ".join(f"{v} at {k}" for k, v in peaks.items())
            notes.append(TrustNote("warn", "renyi-sensitivity", "renyi",
                                   f"the layer of the maximum moves with the kernel width "
                                   f"({text}): a ridge location at one σ is not robust"))
    return notes


def _default_layers(count: int) -> list[str] | list[None]:
    return [None] if count == 1 else [f"layer {i}" for i in range(count)]


# -- the report -------------------------------------------------------------------------------
def trust_report(
    results: MIResult | Sequence[MIResult] | Mapping[str, Sequence[MIResult]],
    *,
    layers: Sequence[str] | None = None,
    xs: Sequence[Any] | None = None,
    y: Any = None,
    sensitivity: bool = True,
) -> list[TrustNote]:
    """Every check for a run.

    Args:
        results: one result; one estimator's results per layer; or {estimator label:
            results per layer}, all on the same states (same layers, same order).
        layers: layer names (default "layer 0", ...; none for a single result).
        xs, y: the data (xs one (n, d_l) array per layer); with them and ``sensitivity``,
            renyi results get the σ/2 and 2σ check (two more renyi runs).
    """
    if isinstance(results, MIResult):
        results = [results]
    if not isinstance(results, Mapping):
        results = {results[0].estimator: list(results)}
    count = len(next(iter(results.values())))
    names = list(layers) if layers is not None else _default_layers(count)
    notes: list[TrustNote] = []
    for runs in results.values():
        for res, name in zip(runs, names, strict=True):
            notes += check_result(res, name)
        notes += check_layers(runs, names)
        if sensitivity and xs is not None and runs[0].estimator == "renyi":
            notes += renyi_sensitivity(xs, y, runs, layers=names)
    for i, name in enumerate(names):
        notes += check_agreement({k: runs[i] for k, runs in results.items()}, name or "")
    return notes


def attach(results: Sequence[MIResult], notes: Sequence[TrustNote],
           layers: Sequence[str] | None = None) -> None:
    """Append the warnings of ``notes`` about each result to its ``diagnostics``."""
    names = list(layers) if layers is not None else _default_layers(len(results))
    for res, name in zip(results, names, strict=True):
        who = _subject(res, name)
        for note in notes:
            if note.level == "warn" and note.subject == who and note.check != "estimator" \
                    and note.message not in res.diagnostics:
                res.diagnostics.append(note.message)


def render(notes: Sequence[TrustNote], console: Any, max_per_check: int = 3,
           show_info: bool = True) -> None:
    """Print the report as a short rich section: warnings first, then context lines.

    Repeated checks (e.g. the same warning on 30 layers) are folded after
    ``max_per_check`` lines.
    """
    from rich.rule import Rule

    shown = [n for n in notes if show_info or n.level == "warn"]
    console.print(Rule("trust report", align="left", style="dim"))
    if not shown:
        console.print("no warnings")
        return
    for level, mark in (("warn", "[yellow]![/]"), ("info", "[dim]·[/]")):
        groups: dict[tuple[str, str], list[TrustNote]] = {}
        for note in shown:
            if note.level == level:
                key = (note.check, note.message if note.check == "estimator" else "")
                groups.setdefault(key, []).append(note)
        for group in groups.values():
            for note in group[:max_per_check]:
                console.print(f"{mark} [bold]{note.subject}[/]: {note.message}",
                              highlight=False, soft_wrap=True)
            if len(group) > max_per_check:
                rest = ", ".join(n.subject for n in group[max_per_check:])
                console.print(f"  … the same check on {len(group) - max_per_check} more: {rest}",
                              highlight=False, soft_wrap=True)


# -- the shuffle baseline of a probing run --------------------------------------------------
def probe_null_notes(rows: Sequence[Any], shuffles: int | None = None) -> list[TrustNote]:
    """Trust notes on the shuffle baseline of a probing run's predictive rows
    (:class:`mi_probe.probe_results.ResultRow`): how much survives shuffling y, whether the
    ridge moves when the null is subtracted, layers not above the null (only when
    ``shuffles``, the shuffles behind each p-value, allow p ≤ 0.05); or, without a
    baseline, a warning that the raw curve has none."""
    rows = [r for r in rows if r.quantity == "predictive" and r.layer != "final_norm"]
    if not rows:
        return []
    if all(r.null_mean is None for r in rows):
        return [TrustNote(
            "warn", "null", "probe",
            "raw values only, without a shuffled-y baseline: much of a layer's value can "
            "survive shuffling y (82-91 % for renyi on SmolLM2-135M), so the raw curve may "
            "track the spread of the states rather than information about y; rerun with "
            "--null 3 (or more)")]
    notes = []
    for key in dict.fromkeys((r.checkpoint, r.estimator) for r in rows):
        curve = sorted((r for r in rows if (r.checkpoint, r.estimator) == key
                        and r.null_mean is not None), key=lambda r: r.layer_index)
        if not curve:
            continue
        who = f"{key[1]} · {key[0]}"
        shares = sorted(f"{r.null_mean / r.value:.0%}" for r in curve if r.value > 0)
        if shares and max(r.null_mean / r.value for r in curve if r.value > 0) > NULL_SHARE:
            span = shares[0] if shares[0] == shares[-1] else f"{shares[0]}–{shares[-1]}"
            notes.append(TrustNote(
                "warn", "null-share", who,
                f"{span} of the value survives shuffling y across layers: read the excess "
                "over the null, not the raw curve"))
        raw = max(curve, key=lambda r: r.value)
        excess = max(curve, key=lambda r: r.excess)
        if raw.layer != excess.layer:
            notes.append(TrustNote(
                "warn", "null-ridge", who,
                f"the ridge moves from layer {raw.layer} (raw value) to layer "
                f"{excess.layer} (excess over the shuffled-y null)"))
        weak = [r.layer for r in curve if r.p_value is not None and r.p_value > 0.05]
        if weak and shuffles is not None and shuffles >= 19:
            notes.append(TrustNote("info", "null-p", who,
                                   f"not above the null at p ≤ 0.05: layers {', '.join(weak)}"))
    if shuffles is not None and shuffles < 19:
        notes.append(TrustNote("info", "null-p", "probe",
                               f"{shuffles} shuffles per value cannot give p below "
                               f"{1 / (shuffles + 1):.2g}; use --null 19 or more for "
                               "p-values"))
    return notes


def render_null_table(rows: Sequence[Any], console: Any) -> None:
    """Per estimator, for the last checkpoint: value, null mean ± 2 sd, excess and p by
    layer, with the raw ridge (▲) and the excess ridge (◆) marked. Prints nothing when the
    rows have no baseline."""
    from rich.table import Table

    rows = [r for r in rows if r.quantity == "predictive" and r.null_mean is not None]
    if not rows:
        return
    last = list(dict.fromkeys(r.checkpoint for r in rows))[-1]
    for est in dict.fromkeys(r.estimator for r in rows):
        curve = sorted((r for r in rows if r.checkpoint == last and r.estimator == est),
                       key=lambda r: r.layer_index)
        blocks = [r for r in curve if r.layer != "final_norm"]
        raw_top = max(blocks, key=lambda r: r.value).layer if blocks else None
        excess_top = max(blocks, key=lambda r: r.excess).layer if blocks else None
        table = Table(title=f"shuffled-y baseline — {est}, {last}, in {curve[0].unit}; "
                            "▲ ridge of the value, ◆ ridge of the excess",
                      title_justify="left", show_edge=False)
        for col in ("layer", "value", "null (mean ± 2 sd)", "excess", "null share", "p"):
            table.add_column(col, justify="left" if col == "layer" else "right")
        for r in curve:
            share = f"{r.null_mean / r.value:.0%}" if r.value > 0 < r.null_mean else ""
            table.add_row(
                r.layer.replace("_", " "),
                ("▲ " if r.layer == raw_top else "") + f"{r.value:.4f}",
                f"{r.null_mean:.4f} ± {2 * r.null_sd:.4f}",
                ("◆ " if r.layer == excess_top else "") + f"{r.excess:.4f}", share,
                f"{r.p_value:.2g}")
        console.print(table)
