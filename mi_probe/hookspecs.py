"""Hook specifications of mi-probe's plugin system (pluggy project name ``mi_probe``).

A plugin is a module (or object) with functions decorated by :data:`hookimpl`, exposed
through the ``mi_probe`` entry-point group of its distribution.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("mi_probe")
hookimpl = pluggy.HookimplMarker("mi_probe")


@hookspec
def register_estimators(register):
    """Call ``register(EstimatorSubclass)`` for each estimator this plugin provides."""


@hookspec
def register_adapters(register):
    """Call ``register(ModelAdapterSubclass)`` for each model adapter this plugin provides."""


@hookspec(firstresult=True)
def select_adapter(model, config):
    """Return a ModelAdapter instance for ``model`` if this plugin handles it, else None."""


@hookspec
def register_bench_tasks(register):
    """Call ``register(task)`` for each benchmark task with known MI this plugin provides."""
