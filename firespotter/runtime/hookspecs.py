"""Every hook a firespotter plugin can implement: one documented stub each.

A plugin is a module (or object) with functions decorated by `firespotter.hookimpl`, listed under the
`firespotter` entry-point group. Registration hooks return a list of specs (see runtime/specs.py); the
engine looks components up by kind and name. Observer hooks see the pipeline's life and every result.

Every hook here has a test (tests/test_hooks.py) and an entry in docs/plugins.md; a meta-test enforces both.
"""

from __future__ import annotations

from typing import Any

import pluggy

from .specs import (AdapterSpec, BackendSpec, CommandSpec, ModelSpec, ProcessorSpec, SinkSpec, SourceSpec,
                    TelemetryReaderSpec)
from .types import Result

hookspec = pluggy.HookspecMarker("firespotter")


# --- registration: each returns a list of specs ---------------------------------------------------


@hookspec
def register_sources() -> list[SourceSpec]:
    """Return SourceSpec objects, one per URI scheme the plugin reads (e.g. ``dir``, ``rtsp``)."""


@hookspec
def register_backends() -> list[BackendSpec]:
    """Return BackendSpec objects: executors for model formats (e.g. ``onnxruntime`` runs ``onnx``)."""


@hookspec
def register_models() -> list[ModelSpec]:
    """Return ModelSpec objects: fire models by name, with the precisions they offer."""


@hookspec
def register_adapters() -> list[AdapterSpec]:
    """Return AdapterSpec objects: test-time adaptation methods (e.g. ``tent``)."""


@hookspec
def register_processors() -> list[ProcessorSpec]:
    """Return ProcessorSpec objects: steps between inference and the sinks (e.g. ``geo``), run in the order of
    the ``[[processors]]`` tables, one instance per pipeline, on the post-processing thread."""


@hookspec
def register_telemetry_readers() -> list[TelemetryReaderSpec]:
    """Return TelemetryReaderSpec objects: camera poses over time for the ``geo`` processor, picked by
    ``[telemetry] source = NAME`` (e.g. ``srt``, ``csv``, ``mavlink``)."""


@hookspec
def register_sinks() -> list[SinkSpec]:
    """Return SinkSpec objects: destinations for results (files, network transports, video)."""


@hookspec
def register_commands() -> list[CommandSpec]:
    """Return CommandSpec objects: extra ``firespotter`` sub-commands."""


# --- lifecycle and observers ------------------------------------------------------------------------


@hookspec(historic=True)
def on_pipeline_start(info: dict[str, Any]) -> None:
    """Called once when a pipeline starts, with its description (source, model, backend, precision, sinks,
    mode). Historic: a plugin registered later still receives the call, so late observers see the run."""


@hookspec
def on_result(result: Result) -> None:
    """Called for every Result after the processors (frozen, read-only), on the post-processing thread, before
    the sinks get it: the first of the pipeline's result observers (Pipeline.add_observer adds the others).
    Keep it cheap: it runs on the hot path. Exceptions are caught, counted and logged; they never stop
    the pipeline."""


@hookspec
def on_pipeline_stop(summary: dict[str, Any]) -> None:
    """Called once after the pipeline drained and every sink was flushed, with the run's summary."""


@hookspec(firstresult=True)
def resolve_source_uri(uri: str) -> str | None:
    """Rewrite a source string before its scheme is looked up, or return None to leave it alone. First
    non-None answer wins, so one plugin owns each rewrite (e.g. ``cam0`` -> ``v4l2:///dev/video0``)."""
