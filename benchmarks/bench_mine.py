"""mine's critic: the factored first layer against a plain concat critic, per training step.

Both critics compute the same function T(x, y) = MLP([x, y]) on all B² pairs of a batch
(the score matrix every bound needs). The plain one (the baseline here) builds the B²
concatenated rows [x_i, y_j] and runs the MLP on them, so its first layer costs
B²·(d_x + d_y)·h; labels enter as one-hot rows of width K. mi-probe's critic applies the
first layer once per sample (x-part and y-part; for labels an embedding row, which equals
a one-hot input times the weight matrix) and adds the two parts for each pair, so only the
later layers see B² rows. The script copies the weights from one to the other, checks that
the score matrices agree, and times a training step (forward, backward, Adam) of each.

    OMP_NUM_THREADS=1 python benchmarks/bench_mine.py              # B=128, d=576, h=64
    OMP_NUM_THREADS=1 python benchmarks/bench_mine.py --batch 64 --steps 5

Writes benchmarks/results/mine.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
from mi_probe.plugins.mine import bound_terms, make_critic
from results_io import RESULTS, write_record


def plain_critic(d_in: int, hidden: int, layers: int) -> torch.nn.Sequential:
    """The baseline: an MLP on concatenated [x_i, y_j] rows."""
    mods: list[torch.nn.Module] = [torch.nn.Linear(d_in, hidden), torch.nn.ReLU()]
    for _ in range(layers - 1):
        mods += [torch.nn.Linear(hidden, hidden), torch.nn.ReLU()]
    mods.append(torch.nn.Linear(hidden, 1))
    return torch.nn.Sequential(*mods)


def plain_pairs(net: torch.nn.Sequential, x: torch.Tensor, y_in: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    rows = torch.cat([x[:, None, :].expand(b, b, -1), y_in[None, :, :].expand(b, b, -1)], -1)
    return net(rows).squeeze(-1)


def copy_weights(factored, plain, d_x: int, discrete: bool) -> None:
    """Give the plain critic exactly the factored critic's function."""
    with torch.no_grad():
        first = plain[0]
        first.weight[:, :d_x] = factored.fx.weight
        first.bias.copy_(factored.fx.bias)
        first.weight[:, d_x:] = factored.fy.weight.T if discrete else factored.fy.weight
        for p_dst, p_src in zip(list(plain.parameters())[2:], factored.body.parameters(),
                                strict=True):
            p_dst.copy_(p_src)


def time_steps(step, steps: int, repeats: int) -> float:
    """Best-of-``repeats`` seconds per step."""
    step()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def run_case(name: str, d_x: int, y_width: int, discrete: bool, args) -> dict:
    torch.manual_seed(0)
    b, h, layers = args.batch, args.hidden, args.layers
    x = torch.randn(b, d_x)
    y = torch.randint(0, y_width, (b,)) if discrete else torch.randn(b, y_width)
    y_plain = torch.nn.functional.one_hot(y, y_width).float() if discrete else y
    fact = make_critic(d_x, y_width, discrete, h, layers)
    plain = plain_critic(d_x + y_width, h, layers)
    copy_weights(fact, plain, d_x, discrete)
    with torch.no_grad():
        diff = float((fact.pairs(x, y) - plain_pairs(plain, x, y_plain)).abs().max())

    def stepper(net, scores):
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step():
            joint, lme, _ = bound_terms(scores(), "mine")
            opt.zero_grad()
            (lme - joint).backward()
            opt.step()

        return step

    t_fact = time_steps(stepper(fact, lambda: fact.pairs(x, y)), args.steps, args.repeats)
    t_plain = time_steps(stepper(plain, lambda: plain_pairs(plain, x, y_plain)),
                         args.steps, args.repeats)
    row = {"case": name, "d_x": d_x, "y_width": y_width, "discrete_y": discrete,
           "batch": b, "hidden": h, "layers": layers, "max_abs_score_diff": diff,
           "plain_s_per_step": t_plain, "mi_probe_s_per_step": t_fact,
           "speedup": t_plain / t_fact}
    print(f"{name:<28} plain {t_plain * 1e3:8.1f} ms/step   mi-probe {t_fact * 1e3:7.1f} "
          f"ms/step   ×{t_plain / t_fact:5.1f}   max |Δscore| {diff:.1e}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d", type=int, default=576, help="width of x (and of continuous y)")
    ap.add_argument("--classes", type=int, default=1000, help="labels for the discrete case")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path,
                    default=RESULTS / "mine.json")
    args = ap.parse_args()
    rows = [
        run_case(f"x {args.d}-d, y {args.d}-d", args.d, args.d, False, args),
        run_case(f"x {args.d}-d, y {args.classes} labels", args.d, args.classes, True, args),
        run_case("x 1-d, y 1-d", 1, 1, False, args),
    ]
    out = {"benchmark": "mine critic step", "torch": torch.__version__,
           "threads": torch.get_num_threads(), "machine": platform.processor() or
           platform.machine(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "rows": rows}
    write_record(out, args.out)


if __name__ == "__main__":
    main()
