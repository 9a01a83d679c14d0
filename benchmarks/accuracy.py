"""Run the ground-truth suite for docs/accuracy.md and write its table, heatmap and JSON.

    python benchmarks/accuracy.py --n 1000,5000 --seeds 3 --out docs/accuracy
    python benchmarks/accuracy.py --estimator mine --seeds 1 --out docs/accuracy/mine

Like ``mi-probe bench``, plus: the example ``gaussian`` plugin is registered from
plugins/third_party when it is not installed, and ``--merge`` combines several result
files (e.g. a slow estimator run with fewer seeds) into one table and heatmap.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ensure_gaussian_plugin() -> None:
    """Register the example third-party ``gaussian`` estimator if it is not installed."""
    import mi_probe
    from mi_probe.registry import register_plugin

    if any(info.name == "gaussian" for info in mi_probe.estimators()):
        return
    sys.path.insert(0, str(ROOT / "plugins" / "third_party" / "mi-probe-gaussian"))
    import mi_probe_gaussian

    register_plugin(mi_probe_gaussian, name="gaussian")


def markdown_table(data: dict) -> str:
    """Markdown table of mean estimates (bold = solved) from results.json data."""
    cells = {(c["estimator"], c["task"], c["n"]): c for c in data["cells"]}
    ests, ns = data["config"]["estimators"], data["config"]["ns"]
    keys = [(e, n) for e in ests for n in ns if any(k[0] == e and k[2] == n for k in cells)]
    head = "| task | true MI | " + " | ".join(f"{e} n={n}" for e, n in keys) + " |"
    lines = [head, "|" + "---|" * (len(keys) + 2)]
    solved = dict.fromkeys(keys, 0)
    scored = dict.fromkeys(keys, 0)
    for task in data["tasks"]:
        row = [task["name"], f"{task['true_mi']:.3f}"]
        for key in keys:
            cell = cells.get((key[0], task["name"], key[1]))
            if cell is None or cell["status"] == "skipped":
                row.append("·" if cell is None else "–")  # not run / y kind not accepted
                continue
            scored[key] += 1
            if cell["status"] == "failed":
                row.append("error")
                continue
            solved[key] += cell["solved"]
            text = f"{cell['mean']:.3f}"
            row.append(f"**{text}**" if cell["solved"] else text)
        lines.append("| " + " | ".join(row) + " |")
    lines.append("| **solved** | | " + " | ".join(f"{solved[k]}/{scored[k]}" for k in keys)
                 + " |")
    return "\n".join(lines)


def merge(paths: list[Path]) -> dict:
    """One results dict from several results.json files over the same tasks."""
    parts = [json.loads(p.read_text()) for p in paths]
    out = parts[0]
    for part in parts[1:]:
        out["config"]["estimators"] += [e for e in part["config"]["estimators"]
                                        if e not in out["config"]["estimators"]]
        out["config"]["ns"] = sorted(set(out["config"]["ns"]) | set(part["config"]["ns"]))
        out["cells"] += part["cells"]
        out["records"] += part["records"]
        out["config"].setdefault("seeds_by_run", []).append(part["config"]["seeds"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-e", "--estimator", action="append", default=[])
    parser.add_argument("-t", "--task", action="append", default=[])
    parser.add_argument("--n", default="1000,5000")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--param", action="append", default=[])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "accuracy")
    parser.add_argument("--merge", type=Path, nargs="*", help="results.json files to combine")
    args = parser.parse_args()

    from mi_probe.bench import run_bench, select_tasks, split_params
    from mi_probe.bench.plot import plot_heatmap
    from mi_probe.bench.runner import BenchRun

    ensure_gaussian_plugin()
    if args.merge:
        data = merge(args.merge)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(data, indent=1))
        tasks = select_tasks([t["name"] for t in data["tasks"]])
        run = BenchRun.from_dict(data, tasks)
    else:
        import mi_probe

        specs = args.estimator or [i.name for i in mi_probe.estimators()]
        ns = [int(v) for v in args.n.split(",")]
        start = time.perf_counter()

        def progress(rec) -> None:
            status = rec.error or rec.skipped or f"{rec.value:.3f}"
            print(f"[{time.perf_counter() - start:7.1f}s] {rec.estimator} {rec.task} "
                  f"n={rec.n} seed={rec.seed}: {status} ({rec.seconds:.2f}s)", flush=True)

        run = run_bench(specs, select_tasks(args.task), ns, args.seeds,
                        split_params(args.param, specs), on_record=progress)
        run.save_json(args.out / "results.json")
        data = run.to_dict()
    plot_heatmap(run, args.out / "heatmap.png", dpi=70)
    (args.out / "table.md").write_text(markdown_table(data) + "\n")
    print(markdown_table(data))


if __name__ == "__main__":
    main()
