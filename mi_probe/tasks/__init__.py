"""Synthetic tasks that mi-probe can generate, train on and probe (no user data needed)."""

from __future__ import annotations

from typing import Any

from .arithmetic import TASK_NAME as ARITHMETIC
from .arithmetic import ArithmeticTask, write_arithmetic


def task_vocabulary(record: dict[str, Any]) -> list[str]:
    """Every word a record's task can produce (empty for records of no known task).

    A word-level tokenizer built for training from scratch must know the words of the
    shifted (OOD) data too, although the training data holds only the ID ones.
    """
    if record.get("task") == ARITHMETIC:
        return ArithmeticTask.vocabulary(record.get("encoding", "letters"))
    return []


__all__ = ["ARITHMETIC", "ArithmeticTask", "task_vocabulary", "write_arithmetic"]
