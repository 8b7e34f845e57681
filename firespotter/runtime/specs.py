"""What registration hooks return: a name, a factory and an availability check that explains itself.

A spec is cheap to build; nothing heavy is imported until its factory runs, so `firespotter plugins`
can list everything even where a component cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def always_available() -> Availability:
    return Availability(True)


def module_available(module: str, extra: str | None = None) -> Callable[[], Availability]:
    """An availability check that looks `module` up and names the extra that provides it.

    It finds the module without importing it: every CLI start checks every plugin, and importing torch or
    onnxruntime there costs seconds and hundreds of MB in processes that never use them (the listener, the
    daemon with another backend). A broken install surfaces when the plugin is used, with its own error."""

    def check() -> Availability:
        import importlib.util

        try:
            found = importlib.util.find_spec(module) is not None
            reason = "not installed"
        except Exception as exc:  # a parent package that fails to import, a broken install
            found, reason = False, f"{exc.__class__.__name__}: {exc}"
        if not found:
            fix = f"pip install 'firespotter[{extra}]'" if extra else f"install {module}"
            return Availability(False, f"cannot import {module} ({reason}); {fix}")
        return Availability(True)

    return check


# Every spec but CommandSpec has `options_model`: a pydantic model class that validates the plugin's table in the
# config when the pipeline is assembled (runtime/options.py, one place for every kind); the factory gets an
# instance of it. None: the plugin takes no options (a non-empty table is an error) and its factory gets `{}`.


@dataclass(frozen=True)
class SourceSpec:
    """Frames from a URI scheme. factory(uri, *, source_id, live, options) -> Source: `uri` a parsed SourceURI,
    `live` whether the run is live (pace to the camera) or a replay, `options` the [source] options table
    validated by `options_model`."""

    scheme: str
    factory: Callable[..., Any]
    description: str = ""
    priority: int = 0  # when several plugins read one scheme, the available one with the highest priority wins
    available: Callable[[], Availability] = always_available
    options_model: Any = None


@dataclass(frozen=True)
class BackendSpec:
    """Runs models given in one of `formats`. factory(model, *, precision, device, options) -> Segmenter:
    `model` the Model instance, `precision` and `device` from the [model] table, `options` the [model]
    backend_options table validated by `options_model`."""

    name: str
    factory: Callable[..., Any]
    formats: tuple[str, ...]
    description: str = ""
    priority: int = 0  # higher wins when the user asks for backend "auto"
    available: Callable[[], Availability] = always_available
    # Precisions the backend builds itself from any model it runs (e.g. int8 through the artifact cache),
    # accepted on top of the model's own `precisions`. Called only when a model lacks the precision asked for.
    built_precisions: Callable[[], tuple[str, ...]] = tuple
    options_model: Any = None


@dataclass(frozen=True)
class ModelSpec:
    """A fire model. factory(options) -> Model (see protocols.Model): `options` the [model] options table
    validated by `options_model` (the model's own options only; the backend's are in backend_options)."""

    name: str
    factory: Callable[..., Any]
    description: str = ""
    precisions: tuple[str, ...] = ("fp32",)
    available: Callable[[], Availability] = always_available
    options_model: Any = None


@dataclass(frozen=True)
class AdapterSpec:
    """Test-time adaptation. factory(segmenter, options) -> Adapter: `segmenter` the bound model (its
    `adaptable()` capability says what may be updated), `options` the [adapt] options table validated by
    `options_model`."""

    name: str
    factory: Callable[..., Any]
    description: str = ""
    available: Callable[[], Availability] = always_available
    options_model: Any = None


@dataclass(frozen=True)
class _OptionedSpec:
    """The fields of a plugin kind whose own config table is validated by an options model."""

    name: str
    factory: Callable[..., Any]
    description: str = ""
    options_model: Any = None  # a pydantic model class, or None for "no options"
    available: Callable[[], Availability] = always_available


@dataclass(frozen=True)
class ProcessorSpec(_OptionedSpec):
    """A step between inference and the sinks ([[processors]], run in order on the post-processing thread).
    factory(options, *, info, registry) -> Processor, one per pipeline: `options` the table validated by
    `options_model`, `info` the pipeline's description (source fps, [camera], ...), `registry` the plugin
    registry (to look up other plugins, e.g. telemetry readers)."""


@dataclass(frozen=True)
class TelemetryReaderSpec:
    """Camera poses over time for the `geo` processor, picked by `[telemetry] source = NAME`.
    factory(cfg, *, camera) -> TelemetryReader: `cfg` is the [telemetry] table as a dict without `source`,
    `camera` the [camera] table as a dict (hfov, mounting angles). `options_model` validates the keys of the
    reader's own (those the [telemetry] section does not declare); their validated values are in `cfg`."""

    name: str
    factory: Callable[..., Any]
    description: str = ""
    available: Callable[[], Availability] = always_available
    options_model: Any = None


@dataclass(frozen=True)
class SinkSpec(_OptionedSpec):
    """Where results go. factory(options, *, name) -> Sink: `options` the [[sinks]] table validated by
    `options_model`, `name` the sink's name."""


@dataclass(frozen=True)
class CommandSpec:
    """An extra CLI command. callback is a typer-style function (its signature defines the options) or a
    typer.Typer app, which becomes a command group."""

    name: str
    callback: Callable[..., Any]
    help: str = ""
    available: Callable[[], Availability] = always_available

    @property
    def description(self) -> str:
        """What `firespotter plugins` shows, as for the other kinds: the help text."""
        return self.help


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, for `firespotter plugins`."""

    name: str
    module: str
    dist: str
    version: str
    builtin: bool
    error: str | None = None
    provides: dict[str, list[str]] = field(default_factory=dict)
