"""Ground-truth benchmark of MI estimators (``mi-probe bench``).

Tasks with known MI live in :mod:`.tasks`, scoring in :mod:`.scoring`, the runner in
:mod:`.runner` and the heatmap in :mod:`.plot`. Quick use::

    from mi_probe.bench import run_bench, select_tasks
    run = run_bench(["renyi"], select_tasks(["gauss-1x1"]), ns=[500], seeds=2)
    for cell in run.cells():
        print(cell.task, cell.mean, cell.true_mi, cell.solved)
"""

from .runner import (
    BenchCell,
    BenchRecord,
    BenchRun,
    available_tasks,
    run_bench,
    select_tasks,
    split_params,
)
from .scoring import SOLVED_FACTOR, is_solved, log_ratio
from .tasks import BenchTask, builtin_tasks

__all__ = [
    "SOLVED_FACTOR",
    "BenchCell",
    "BenchRecord",
    "BenchRun",
    "BenchTask",
    "available_tasks",
    "builtin_tasks",
    "is_solved",
    "log_ratio",
    "run_bench",
    "select_tasks",
    "split_params",
]
