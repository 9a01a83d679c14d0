"""The plugin manager: discovers plugins and holds what they register.

Discovery order: the ``mi_probe`` entry points of every installed distribution (the
built-ins come from mi-probe's own entry points), then plugins registered at run time
with :func:`register_plugin`. A plugin that fails to import or to register is reported
once as a warning naming it and its error; everything else keeps working.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, UnknownEstimatorError
from .estimator import Estimator

ENTRY_POINT_GROUP = "mi_probe"

# Used only when mi-probe runs from a source tree without installed metadata.
_BUILTIN_MODULES = {
    "renyi": "mi_probe.plugins.renyi",
    "ksg": "mi_probe.plugins.ksg",
    "mine": "mi_probe.plugins.mine",
    "linear-probe": "mi_probe.plugins.linear_probe",
    "adapters": "mi_probe.plugins.adapters",
    "bench-tasks": "mi_probe.bench.tasks",
}


class PluginWarning(UserWarning):
    """A plugin failed to load or register; the rest of mi-probe still works."""


@dataclass
class PluginInfo:
    """What ``mi-probe plugins`` shows for one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    estimators: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    bench_tasks: list[str] = field(default_factory=list)
    error: str | None = None


class Registry:
    """One plugin manager plus the estimators, adapters and tasks its plugins registered."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.estimators: dict[str, Estimator] = {}
        self.estimator_plugin: dict[str, str] = {}
        self.adapters: dict[str, type] = {}
        self.bench_tasks: dict[str, Any] = {}
        self.plugins: dict[str, PluginInfo] = {}

    # -- discovery -------------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Load every ``mi_probe`` entry point; warn about and skip broken ones."""
        eps = list(md.entry_points(group=ENTRY_POINT_GROUP))
        found = {ep.name for ep in eps}
        for ep in eps:
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                distribution=dist.metadata["Name"] if dist is not None else "?",
                version=dist.version if dist is not None else "?",
                module=ep.value,
            )
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any plugin failure is isolated
                self._fail(info, f"could not be imported: {type(exc).__name__}: {exc}")
                continue
            self.add_plugin(plugin, info)
        for name, module in _BUILTIN_MODULES.items():
            if name not in found:
                info = PluginInfo(name, "mi-probe", _own_version(), module)
                self.add_plugin(importlib.import_module(module), info)

    def add_plugin(self, plugin: Any, info: PluginInfo) -> None:
        """Register one plugin object and collect what its hooks register."""
        if info.name in self.plugins:
            self._fail(info, "a plugin with this name is already registered; skipped")
            return
        try:
            self.pm.register(plugin, name=info.name)
        except Exception as exc:  # noqa: BLE001
            self._fail(info, f"could not be registered: {type(exc).__name__}: {exc}")
            return
        self.plugins[info.name] = info
        calls: list[tuple[str, Callable[[Any], None], list[str]]] = [
            ("register_estimators", self._add_estimator, info.estimators),
            ("register_adapters", self._add_adapter, info.adapters),
            ("register_bench_tasks", self._add_task, info.bench_tasks),
        ]
        for hook_name, add, names in calls:
            impl = getattr(plugin, hook_name, None)
            if impl is None:
                continue
            try:
                impl(register=lambda obj, add=add, names=names: names.append(add(obj, info)))
            except Exception as exc:  # noqa: BLE001
                self.pm.unregister(plugin)
                for name in info.estimators:
                    self.estimators.pop(name, None)
                self._fail(info, f"failed in {hook_name}: {type(exc).__name__}: {exc}")
                return

    def _fail(self, info: PluginInfo, message: str) -> None:
        info.error = message
        self.plugins.setdefault(info.name, info)
        warnings.warn(
            f"mi-probe plugin {info.name!r} ({info.module}) {message}",
            PluginWarning,
            stacklevel=3,
        )

    def _add_estimator(self, cls: Any, info: PluginInfo) -> str:
        est = cls() if isinstance(cls, type) else cls
        if not isinstance(est, Estimator) or not est.name:
            raise PluginError(f"{cls!r} is not an Estimator subclass with a name")
        if est.name in self.estimators:
            raise PluginError(
                f"estimator {est.name!r} is already registered by plugin "
                f"{self.estimator_plugin[est.name]!r}"
            )
        self.estimators[est.name] = est
        self.estimator_plugin[est.name] = info.name
        return est.name

    def _add_adapter(self, cls: Any, info: PluginInfo) -> str:
        name = getattr(cls, "name", None) or cls.__name__
        self.adapters[name] = cls
        return name

    def _add_task(self, task: Any, info: PluginInfo) -> str:
        name = task.name
        self.bench_tasks[name] = task
        return name

    # -- look-ups ---------------------------------------------------------------------
    def get_estimator(self, name_or_obj: str | Estimator | type) -> Estimator:
        """The estimator registered as ``name``; instances and classes pass through."""
        if isinstance(name_or_obj, Estimator):
            return name_or_obj
        if isinstance(name_or_obj, type) and issubclass(name_or_obj, Estimator):
            return name_or_obj()
        est = self.estimators.get(name_or_obj)
        if est is None:
            known = ", ".join(sorted(self.estimators)) or "none"
            hint = ""
            broken = [p for p in self.plugins.values() if p.error]
            if broken:
                hint = "; plugins that failed to load: " + ", ".join(p.name for p in broken)
            raise UnknownEstimatorError(
                f"unknown estimator {name_or_obj!r}; registered estimators: {known}{hint}. "
                "Run `mi-probe estimators` to list them with their parameters."
            )
        return est


def _own_version() -> str:
    try:
        return md.version("mi-probe")
    except md.PackageNotFoundError:
        return "source"


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        reg = Registry()
        reg.load_entry_points()
        _REGISTRY = reg
    return _REGISTRY


def reset_registry() -> None:
    """Forget the registry so the next call rediscovers plugins (for tests)."""
    global _REGISTRY
    _REGISTRY = None


def register_plugin(plugin: Any, name: str | None = None) -> PluginInfo:
    """Register a plugin object at run time (e.g. a module of your own, or in tests)."""
    reg = get_registry()
    pname = name or getattr(plugin, "__name__", repr(plugin))
    info = PluginInfo(pname, "(runtime)", "-", getattr(plugin, "__name__", repr(plugin)))
    reg.add_plugin(plugin, info)
    return info


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered at run time and everything it registered."""
    reg = get_registry()
    info = reg.plugins.pop(name, None)
    if info is None:
        return
    plugin = reg.pm.get_plugin(name)
    if plugin is not None:
        reg.pm.unregister(plugin)
    for est in info.estimators:
        reg.estimators.pop(est, None)
        reg.estimator_plugin.pop(est, None)
    for ad in info.adapters:
        reg.adapters.pop(ad, None)
    for task in info.bench_tasks:
        reg.bench_tasks.pop(task, None)
