"""Plugin loading and lookup: pluggy, the `firespotter` entry-point group, and the environment switches.

Environment (read when a registry is built):
- FIRESPOTTER_PLUGINS: comma-separated allow-list of third-party entry-point names; only these load.
  Empty string = none. Built-ins (entry points of the firespotter distribution itself) always load.
- FIRESPOTTER_DISABLE_PLUGIN_AUTOLOAD: when set (non-empty, not "0"), third-party entry points load only
  if FIRESPOTTER_PLUGINS names them, like pytest's PYTEST_DISABLE_PLUGIN_AUTOLOAD with -p.
- FIRESPOTTER_TRACE_PLUGINS: when set, every hook call and its results are written to stderr.

A plugin that fails to import is recorded with its error (shown by `firespotter plugins`), never fatal.
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
import logging
import os
import sys
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .errors import PluginError
from .specs import (
    AdapterSpec,
    Availability,
    BackendSpec,
    CommandSpec,
    ModelSpec,
    PluginInfo,
    ProcessorSpec,
    SinkSpec,
    SourceSpec,
    TelemetryReaderSpec,
)

log = logging.getLogger("firespotter.plugins")

GROUP = "firespotter"
BUILTIN_DIST = "firespotter"

hookimpl = pluggy.HookimplMarker("firespotter")

KINDS = {
    "sources": ("register_sources", SourceSpec, "scheme"),
    "backends": ("register_backends", BackendSpec, "name"),
    "models": ("register_models", ModelSpec, "name"),
    "adapters": ("register_adapters", AdapterSpec, "name"),
    "processors": ("register_processors", ProcessorSpec, "name"),
    "telemetry_readers": ("register_telemetry_readers", TelemetryReaderSpec, "name"),
    "sinks": ("register_sinks", SinkSpec, "name"),
    "commands": ("register_commands", CommandSpec, "name"),
}


def _flag(name: str) -> bool:
    """A switch in the environment: unset, empty, 0, false, no or off (any case) mean no."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def _allow_list() -> set[str] | None:
    raw = os.environ.get("FIRESPOTTER_PLUGINS")
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


class Registry:
    """The plugin manager plus lookup of components by kind and name."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.plugins: dict[str, PluginInfo] = {}
        self._specs: dict[str, dict[str, tuple[Any, str]]] | None = None

    # --- loading ------------------------------------------------------------------------------------

    def load_entry_points(self) -> None:
        allow = _allow_list()
        autoload = not _flag("FIRESPOTTER_DISABLE_PLUGIN_AUTOLOAD")
        for ep in sorted(md.entry_points(group=GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            builtin = dist.lower() == BUILTIN_DIST
            if ep.name in self.plugins:
                continue  # the same distribution seen twice on sys.path
            if not builtin:
                if allow is not None and ep.name not in allow:
                    continue
                if allow is None and not autoload:
                    continue
            info = PluginInfo(ep.name, ep.value, dist, version, builtin)
            try:
                self.pm.register(ep.load(), name=ep.name)
            except Exception as exc:
                info.error = f"{exc.__class__.__name__}: {exc}"
                log.warning("plugin %s (%s) failed to load: %s", ep.name, ep.value, info.error)
            self.plugins[ep.name] = info
        if allow:
            for name in sorted(allow - set(self.plugins)):
                log.warning("FIRESPOTTER_PLUGINS names %r but no installed plugin has that name", name)

    def register(self, plugin: Any, name: str, *, builtin: bool = False) -> None:
        """Register a plugin object directly (tests, embedding applications)."""
        self.pm.register(plugin, name=name)
        self.plugins[name] = PluginInfo(name, getattr(plugin, "__name__", repr(plugin)), "(direct)", "-", builtin)
        self._specs = None

    # --- lookup -------------------------------------------------------------------------------------

    def _collect(self) -> dict[str, dict[str, list[tuple[Any, str]]]]:
        """kind -> name -> [(spec, plugin name), ...], highest priority first (several plugins may offer one
        name, e.g. `file` through GStreamer and through OpenCV; the best available one is used)."""
        if self._specs is not None:
            return self._specs
        specs: dict[str, dict[str, list[tuple[Any, str]]]] = {k: {} for k in KINDS}
        for info in self.plugins.values():
            info.provides = {}
        for kind, (hook_name, spec_type, key) in KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                plugin_name = impl.plugin_name
                others = [p for p in self.pm.get_plugins() if p is not impl.plugin]
                try:
                    # Called through pluggy (not impl.function) so FIRESPOTTER_TRACE_PLUGINS sees it.
                    results = self.pm.subset_hook_caller(hook_name, remove_plugins=others)()
                    returned = [spec for result in results for spec in (result or [])]
                except Exception as exc:
                    log.warning("plugin %s: %s() raised %s; its %s are ignored", plugin_name, hook_name, exc, kind)
                    continue
                for spec in returned:
                    if not isinstance(spec, spec_type):
                        log.warning("plugin %s: %s() returned %r, not a %s; ignored",
                                    plugin_name, hook_name, spec, spec_type.__name__)
                        continue
                    name = getattr(spec, key)
                    offers = specs[kind].setdefault(name, [])
                    priority = getattr(spec, "priority", 0)
                    clash = [other for s2, other in offers if getattr(s2, "priority", 0) == priority]
                    if clash:
                        log.warning("%s %r is provided by both %s and %s with the same priority; using %s",
                                    kind[:-1], name, clash[0], plugin_name, clash[0])
                        continue
                    offers.append((spec, plugin_name))
                    offers.sort(key=lambda o: -getattr(o[0], "priority", 0))
                    if plugin_name in self.plugins:
                        self.plugins[plugin_name].provides.setdefault(kind, []).append(name)
        self._specs = specs
        return specs

    def _choose(self, offers: list[tuple[Any, str]]) -> tuple[Any, str]:
        """The highest-priority offer that is available here, else the highest-priority one (to explain why)."""
        if len(offers) > 1:
            for offer in offers:
                if offer[0].available():
                    return offer
        return offers[0]

    def specs(self, kind: str) -> dict[str, Any]:
        return {name: self._choose(offers)[0] for name, offers in self._collect()[kind].items()}

    def provider(self, kind: str, name: str) -> str:
        return self._choose(self._collect()[kind][name])[1]

    def alternatives(self, kind: str, name: str) -> list[tuple[Any, str]]:
        """Every (spec, plugin) offering `name`, best first."""
        return list(self._collect()[kind].get(name, []))

    def get(self, kind: str, name: str) -> Any:
        """The spec of `kind` named `name`, or a PluginError that lists what exists and suggests a fix."""
        specs = self.specs(kind)
        if name in specs:
            spec = specs[name]
            avail: Availability = spec.available()
            if not avail:
                raise PluginError(f"{kind[:-1]} {name!r} is installed but not available here: {avail.reason}")
            return spec
        singular = {"sources": "URI scheme"}.get(kind, kind[:-1])
        known = ", ".join(sorted(specs)) or "none"
        close = difflib.get_close_matches(name, list(specs), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "run `firespotter plugins` to see what is installed"
        raise PluginError(f"unknown {singular} {name!r}; known: {known}", hint)

    def hook(self):
        return self.pm.hook


def _trace_hook_calls(pm: pluggy.PluginManager) -> None:
    """Every hook call on stderr: its implementations (plugin names), then its duration and result or error."""
    import time

    started: list[float] = []

    def before(hook_name, hook_impls, kwargs):
        started.append(time.perf_counter())
        names = ", ".join(impl.plugin_name for impl in hook_impls) or "no implementation"
        sys.stderr.write(f"[firespotter trace] {hook_name}({', '.join(kwargs)}) -> {names}\n")

    def after(outcome, hook_name, hook_impls, kwargs):
        ms = (time.perf_counter() - started.pop()) * 1e3 if started else 0.0
        exc = outcome.exception
        result = f"raised {exc.__class__.__name__}: {exc}" if exc else f"returned {outcome.get_result()!r:.200}"
        sys.stderr.write(f"[firespotter trace] {hook_name} {result} in {ms:.3f} ms\n")

    pm.add_hookcall_monitoring(before, after)


def new_registry(*, load_entry_points: bool = True, plugins: Iterable[tuple[str, Any]] = ()) -> Registry:
    pm = pluggy.PluginManager("firespotter")
    pm.add_hookspecs(hookspecs)
    if _flag("FIRESPOTTER_TRACE_PLUGINS"):
        _trace_hook_calls(pm)
    registry = Registry(pm)
    if load_entry_points:
        registry.load_entry_points()
    for name, plugin in plugins:
        registry.register(plugin, name)
    return registry


_default: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _default
    if _default is None:
        _default = new_registry()
    return _default
