"""``mi-probe demo``: the paper's protocol, end to end, on a model trained from scratch.

No user data and nothing downloaded. In order, under one output folder:

1. ``data/``: the arithmetic shift task (:mod:`mi_probe.tasks.arithmetic`), ID (K = 13)
   and OOD (K from {5..25} minus 13), train and test files;
2. ``run/``: a tiny Llama (6 blocks, width 64) trained from scratch on the ID training
   data, with checkpoints along the way (:func:`mi_probe.train.train`);
3. ``probe/``: I(Z_l; Y) and I(ΔZ_l; Y) per layer for every checkpoint, matrix-based Rényi
   at the paper's settings (α = 1, Gaussian σ = 1, l2-normalised rows), on the ID test set
   (:func:`mi_probe.probe`);
4. ``rescale/``: on the last checkpoint, one β per block fitted on ID and on OOD training
   data with the weights frozen, scored on the ID and OOD test sets, plus early-exit
   (logit-lens) accuracy per layer (:func:`mi_probe.rescale_run.run_rescale`);
5. ``attention/``: the attention mass of the last prompt position on signal tokens, per
   layer and checkpoint (:mod:`mi_probe.attention`);
6. ``demo.json`` (settings, timings, the per-layer summary of the last checkpoint) and
   ``demo.png`` (four panels: MI by layer over training, early-exit accuracy ID/OOD, β
   fitted on ID/OOD, attention to signal tokens).

The task's step d is drawn from {1..4} (``max_d``): with every d up to K − 1 the next value
is independent of any single shown value and a model this small sat at chance for over a
thousand steps in most runs; with d ≤ 4 it reaches 100 % ID accuracy in a few hundred.

``QUICK`` shrinks every stage to a smoke test of the pipeline (about 10 CPU-seconds; the
model reaches ~30 % accuracy). The full demo takes about a minute of CPU time.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ParameterError

MARKER = "demo.json"
STAGES = ("data", "train", "probe", "rescale", "attention")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of every stage of the demo.

    Attributes:
        n_train, n_test: records per training / test file of the task.
        max_d: largest step d of the task (see :class:`ArithmeticTask`); 4 makes the task
            learnable by a tiny model within seconds (with every d up to K - 1 it sat at
            chance for 1000+ steps in most runs).
        model, layers, width, heads: the model trained from scratch.
        steps, save_every, batch_size, lr: its training run.
        probe_samples: samples per MI estimate (ID test set).
        fit_samples, fit_steps, fit_lr: β fits (examples per fit set, steps, learning rate).
        attention_samples: prompts for the attention profile.
        seed: one seed for everything.
        threads: torch CPU threads while the demo runs (None: leave as is). Models this
            small run fastest on one: on a busy 2-core machine two OpenMP threads made
            training several times slower.
    """

    n_train: int = 4000
    n_test: int = 512
    max_d: int | None = 4
    model: str = "tiny-llama"
    layers: int = 6
    width: int = 64
    heads: int = 4
    steps: int = 600
    save_every: int = 100
    batch_size: int = 32
    lr: float = 3e-3
    probe_samples: int = 512
    fit_samples: int = 1024
    fit_steps: int = 150
    fit_lr: float = 0.05
    attention_samples: int = 256
    seed: int = 0
    threads: int | None = 1


FULL = DemoSettings()
QUICK = DemoSettings(n_train=512, n_test=64, layers=4, width=32, heads=2, steps=150,
                     save_every=50, batch_size=16, probe_samples=64, fit_samples=64,
                     fit_steps=10, attention_samples=32)


@dataclass
class DemoCallbacks:
    """Progress hooks, all optional: ``stage(name, index, total)`` when a stage starts;
    the others are passed on to :func:`train`, :func:`probe` and :func:`run_rescale`."""

    stage: Callable[[str, int, int], None] | None = None
    train: Callable[[str, dict[str, Any]], None] | None = None
    probe: Callable[[Any], None] | None = None
    fit: Callable[[str, int, int, int, float], None] | None = None


@dataclass
class DemoResult:
    """Everything the demo produced (the same is on disk under ``out``).

    Attributes:
        out: the demo folder.
        settings: the sizes used.
        train: the training run (:class:`mi_probe.train.TrainResult`).
        probe: MI per checkpoint and layer (:class:`mi_probe.probe_results.ProbeResults`).
        rescale: the betas.json document (β per fit, evaluations, early exit).
        attention: attention profiles, one per checkpoint.
        layers: the per-layer summary of the last checkpoint (see :func:`layer_summary`).
        figures: PNG files written.
        seconds: wall time per stage.
    """

    out: Path
    settings: DemoSettings
    train: Any
    probe: Any
    rescale: dict[str, Any]
    attention: list[Any]
    layers: list[dict[str, Any]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def prepare_out(out: Path) -> None:
    """Make ``out`` ready: create it, or clear an earlier demo there; refuse other folders."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ParameterError(
                f"{out} exists and is not a demo folder (no {MARKER}); give another --out"
            )
        for name in STAGES:
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (MARKER, "demo.png"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"status": "running"}) + "\n")


def run_demo(out: str | Path, settings: DemoSettings = FULL, device: str = "auto",
             callbacks: DemoCallbacks | None = None) -> DemoResult:
    """Run the whole protocol (see the module doc) and return its results."""
    import torch

    threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        return _run_demo(Path(out), settings, device, callbacks or DemoCallbacks())
    finally:
        torch.set_num_threads(threads)


def _run_demo(out: Path, s: DemoSettings, device: str, cb: DemoCallbacks) -> DemoResult:
    from .adapters import find_adapter
    from .attention import attention_profile, plot_profiles, signal_mask, write_csv
    from .checkpoints import discover_checkpoints, load_checkpoint
    from .devices import resolve_device
    from .probe import probe
    from .probe_data import load_probe_data
    from .rescale_run import run_rescale
    from .rescale_train import FitConfig
    from .tasks import ArithmeticTask, write_arithmetic
    from .train import TrainConfig, train

    torch_device = resolve_device(device)
    dev = str(torch_device)
    prepare_out(out)
    timer = _StageTimer(cb.stage)

    timer.start("data")
    data = write_arithmetic(out / "data", ArithmeticTask(max_d=s.max_d), s.n_train, s.n_test,
                            s.seed)

    timer.start("train")
    cfg = TrainConfig(steps=s.steps, save_every=s.save_every, batch_size=s.batch_size, lr=s.lr,
                      seed=s.seed, device=dev, layers=s.layers, width=s.width, heads=s.heads)
    trained = train(s.model, data["id_train"], out / "run", cfg, eval_data=data["id_test"],
                    callback=cb.train)

    timer.start("probe")
    probed = probe(out / "run", out / "probe", progress=cb.probe, data=str(data["id_test"]),
                   samples=s.probe_samples, seed=s.seed, estimators=("renyi",), device=dev,
                   batch_size=64, command=["mi-probe", "demo"])

    timer.start("rescale")
    last = discover_checkpoints(out / "run")[-1]
    loaded = load_checkpoint(last, device=dev, need_tokenizer=True)
    fit_cfg = FitConfig(lr=s.fit_lr, steps=s.fit_steps, batch_size=32,
                        eval_every=max(1, s.fit_steps // 5))
    betas = run_rescale(loaded, find_adapter(loaded.model),
                        {"id": data["id_train"], "ood": data["ood_train"]},
                        {"id": data["id_test"], "ood": data["ood_test"]},
                        seeds=(s.seed,), config=fit_cfg, device=torch_device, samples=s.fit_samples,
                        data_seed=s.seed, out=out / "rescale", command=["mi-probe", "demo"],
                        progress=cb.fit)

    timer.start("attention")
    profiles = []
    for ref in discover_checkpoints(out / "run"):
        ck = loaded if ref.path == last.path else load_checkpoint(ref, device=dev,
                                                                   need_tokenizer=True)
        examples = load_probe_data(data["id_test"], ck.tokenizer, samples=s.attention_samples,
                                   seed=s.seed).examples
        profile = attention_profile(ck.model, examples, [signal_mask(e) for e in examples],
                                    device=dev)
        profile.checkpoint, profile.step = ref.name, ref.step
        profiles.append(profile)
    (out / "attention").mkdir(exist_ok=True)
    write_csv(profiles, out / "attention" / "attention.csv")
    attention_png = plot_profiles(profiles, out / "attention" / "attention.png")
    timer.finish()

    result = DemoResult(out, s, trained, probed, betas, profiles, seconds=timer.seconds)
    result.layers = layer_summary(result)
    result.figures = [plot_demo(result, out / "demo.png"), attention_png,
                      *sorted((out / "probe").rglob("*.png")),
                      *sorted((out / "rescale").glob("*.png"))]
    _write_summary(result, dev)
    return result


class _StageTimer:
    """Wall time per stage; tells ``on_stage(name, index, total)`` when one starts."""

    def __init__(self, on_stage: Callable[[str, int, int], None] | None) -> None:
        self.on_stage = on_stage
        self.seconds: dict[str, float] = {}
        self.current: tuple[str, float] | None = None

    def start(self, name: str) -> None:
        self.finish()
        self.current = (name, time.perf_counter())
        if self.on_stage is not None:
            self.on_stage(name, STAGES.index(name) + 1, len(STAGES))

    def finish(self) -> None:
        if self.current is not None:
            name, began = self.current
            self.seconds[name] = time.perf_counter() - began
            self.current = None


def layer_summary(result: DemoResult) -> list[dict[str, Any]]:
    """Per layer l = 0..L of the last checkpoint: I(Z_l; Y), early-exit accuracy ID/OOD,
    β_l fitted on ID/OOD and the attention mass on signal tokens (None where undefined:
    layer 0 has no block, hence no β and no attention)."""
    probed, doc = result.probe, result.rescale
    last = probed.checkpoints[-1]
    mi = probed.values(last, "renyi")
    ee = doc.get("early_exit", {})
    att = result.attention[-1]
    rows = []
    for layer in range(doc["num_layers"] + 1):
        block = layer - 1
        rows.append({
            "layer": layer,
            "mi": mi.get(str(layer)),
            "early_exit_id": ee["id"]["accuracy"][layer] if "id" in ee else None,
            "early_exit_ood": ee["ood"]["accuracy"][layer] if "ood" in ee else None,
            "beta_id": doc["fits"]["id"]["beta_mean"][block] if layer else None,
            "beta_ood": doc["fits"]["ood"]["beta_mean"][block] if layer else None,
            "attention_signal": float(att.signal[block]) if layer else None,
        })
    return rows


def _write_summary(result: DemoResult, device: str) -> None:
    from . import __version__

    fits = {name: {ev: {k: r[k]["accuracy"] for k in ("before", "after")}
                   for ev, r in fit["eval"].items()}
            for name, fit in result.rescale["fits"].items()}
    summary = {
        "status": "complete",
        "mi_probe": __version__,
        "device": device,
        "settings": asdict(result.settings),
        "seconds": result.seconds,
        "final_eval": result.train.last_eval(),
        "ridge": [asdict(r) for r in result.probe.ridge],
        "layers": result.layers,
        "accuracy_before_after_beta": fits,
        "figures": [str(p.relative_to(result.out)) for p in result.figures],
    }
    tmp = result.out / (MARKER + ".tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    tmp.replace(result.out / MARKER)


def plot_demo(result: DemoResult, path: str | Path) -> Path:
    """Four panels: MI by layer per checkpoint; early-exit accuracy ID/OOD; β ID/OOD;
    attention mass on signal tokens by layer (last checkpoint, with the uniform baseline)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 2, figsize=(9.0, 6.4), dpi=90)
    ax = axes[0, 0]
    probed = result.probe
    ckpts = probed.checkpoints
    cmap = plt.get_cmap("viridis")
    for i, ck in enumerate(ckpts):
        vals = probed.values(ck, "renyi")
        step = next(r.step for r in probed.rows if r.checkpoint == ck)
        ax.plot([int(k) for k in vals], list(vals.values()), marker="o", ms=3,
                color=cmap(i / max(1, len(ckpts) - 1)), label=f"step {step}")
    ax.set(title="I(Z_l; Y) by layer over training (Rényi, nats)", xlabel="layer")
    ax.legend(fontsize=6, ncol=2)
    rows = result.layers
    layers = np.array([r["layer"] for r in rows])
    ax = axes[0, 1]
    for key, label in (("early_exit_id", "ID (K = 13)"), ("early_exit_ood", "OOD")):
        ax.plot(layers, [r[key] for r in rows], marker="o", ms=3, label=label)
    ax.set(title="early-exit accuracy (last checkpoint)", xlabel="layer", ylim=(0, 1.05))
    ax.legend(fontsize=7)
    ax = axes[1, 0]
    for key, label in (("beta_id", "fitted on ID"), ("beta_ood", "fitted on OOD")):
        ax.plot(layers[1:], [r[key] for r in rows[1:]], marker="o", ms=3, label=label)
    ax.axhline(1.0, ls=":", color="grey")
    ax.set(title="residual scale β per block", xlabel="block")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    att = result.attention[-1]
    ax.plot(layers[1:], att.signal, marker="o", ms=3, label="signal tokens")
    ax.plot(layers[1:], att.self_, marker="o", ms=3, ls="--", label="itself")
    ax.axhline(att.uniform_signal, ls=":", color="grey", label="uniform (signal)")
    ax.set(title="attention of the last prompt position", xlabel="layer")
    ax.legend(fontsize=7)
    from matplotlib.ticker import MaxNLocator

    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
