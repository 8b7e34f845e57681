"""One TOML file -> validated settings (commented examples in deploy/configs/).

Unknown keys, wrong types and impossible values stop start-up with one message per problem that names
the file, the key (as a TOML path) and what was expected. CLI flags override the file for one run.
"""

from __future__ import annotations

import difflib
import math
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, PluginError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RuntimeSettings(_Section):
    mode: Literal["live", "replay"] = Field("replay", description="live: a camera, frames dropped to keep latency bounded; replay: every frame, in order, deterministic")
    drone_id: str = Field("drone-1", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    deadline_ms: float = Field(1000.0, gt=0, description="live mode: frames older than this at dequeue are dropped")
    queue_size: int = Field(4, ge=1, le=4096, description="frames buffered between source and inference")
    sink_queue_size: int = Field(64, ge=1, le=100_000)
    drain_timeout_s: float = Field(10.0, gt=0, description="bound on the graceful drain at shutdown")


class SourceSettings(_Section):
    uri: str = Field("", description="file://, dir://, test://, ... or a bare path")
    source_id: str = Field("cam0", description="names the camera in results and messages")
    options: dict[str, Any] = Field(default_factory=dict, description="extra options for the source plugin")


class ModelSettings(_Section):
    name: str = Field("fireseg-lite", description="model plugin (`firespotter plugins` lists them)")
    backend: str = Field("auto", description="onnxruntime, torch, tensorrt, numpy, ...; auto = the best available one that runs the model")
    precision: str = Field("fp32", description="fp32, fp16, int8, ... (what the model and backend offer)")
    device: str = Field("cpu", description="cpu, cuda, cuda:N")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="probability above which a pixel is fire")
    options: dict[str, Any] = Field(default_factory=dict, description="options for the model and its backend")


# The adapter `[adapt] name = "default"` (and `--adapt default`) selects. bnstats: it matched the gradient
# methods on 2,000-frame shifted streams at a fraction of their cost (docs/adaptation.md).
DEFAULT_ADAPTER = "bnstats"


class AdaptSettings(_Section):
    name: str | None = Field(None, description="adapter plugin name (bnstats, tent, ostta; \"default\" = "
                             f"{DEFAULT_ADAPTER}); none = no adaptation")
    options: dict[str, Any] = Field(default_factory=dict, description="options for the adapter (e.g. every = 4)")

    @field_validator("name")
    @classmethod
    def _default_name(cls, v: str | None) -> str | None:
        return DEFAULT_ADAPTER if v == "default" else v


class PostSettings(_Section):
    min_region_px: int = Field(4, ge=1, description="regions smaller than this are ignored")
    alert_min_area_px: int = Field(16, ge=1, description="total fire area for a FIRE alert")
    alert_min_peak: float = Field(0.6, ge=0.0, le=1.0, description="peak probability for a FIRE alert")
    max_regions: int = Field(64, ge=1)


class MetricsSettings(_Section):
    enabled: bool = Field(False, description="serve /metrics, /healthz and /readyz")
    address: str = Field("127.0.0.1", description="bind address; keep it on loopback unless a firewall guards it")
    port: int = Field(9108, ge=1, le=65535)


class DaemonSettings(_Section):
    """How `firespotter run` behaves under systemd (Type=notify, WatchdogSec)."""

    stall_s: float = Field(10.0, gt=0, description="no processed frame for this long (and no reconnect under way) "
                           "is a hang: watchdog pings stop and systemd restarts the service")
    reconnect_grace_s: float = Field(300.0, ge=0, description="a source that is reconnecting is not a hang for this "
                                     "long; past it, pings stop too")
    status_interval_s: float = Field(1.0, gt=0, description="how often STATUS=, metrics gauges and thermal are updated")
    start_timeout_s: float = Field(1800.0, gt=0, description="under systemd: how long the start-up timeout is "
                                   "extended (EXTEND_TIMEOUT_USEC) while the model loads, an engine builds or the "
                                   "camera comes up; after it, TimeoutStartSec applies")
    thermal_zones: str = Field("/sys/class/thermal", description="where thermal_zone*/temp are read (Jetson, Linux)")
    throttle_c: float = Field(85.0, gt=0, description="above this temperature frames are skipped (counted) so "
                              "latency does not grow while the board throttles")
    throttle_max_skip: int = Field(4, ge=1, le=64, description="at most 1 of this many frames is processed when hot")


class CameraSettings(_Section):
    """The camera model for geo-referencing: a horizontal field of view, or calibrated intrinsics."""

    hfov_deg: float | None = Field(None, gt=0, lt=180)
    fx: float | None = Field(None, gt=0)
    fy: float | None = Field(None, gt=0)
    cx: float | None = Field(None, description="principal point x (pixels)")
    cy: float | None = Field(None, description="principal point y (pixels)")
    width: int | None = Field(None, ge=1, description="image width the intrinsics were calibrated at")
    height: int | None = Field(None, ge=1)
    mount_roll_deg: float = Field(0.0, description="camera roll relative to the body, degrees")
    mount_pitch_deg: float = Field(-90.0, ge=-180, le=180, description="-90 = looking straight down (nadir)")
    mount_yaw_deg: float = Field(0.0, description="camera yaw relative to the body, degrees (0 = forward)")
    max_range_m: float | None = Field(None, gt=0, description="ignore ground points farther than this")

    @model_validator(mode="after")
    def _hfov_or_intrinsics(self):
        intrinsics = (self.fx, self.fy, self.cx, self.cy, self.width, self.height)
        if self.hfov_deg is None and any(v is None for v in intrinsics):
            raise ValueError("give hfov_deg, or all of fx, fy, cx, cy, width, height")
        return self


class TelemetrySettings(_Section):
    """Where camera poses come from: a telemetry reader by name. Built in: a DJI-style .SRT sidecar or a CSV
    (replay), MAVLink over UDP (live); plugins add readers (register_telemetry_readers), which may take keys of
    their own (passed on to the reader, which checks them).

    CSV columns (a header row, case-insensitive): time as `t_s` (seconds; video or wall time by `time_base`),
    `t_ns` (UTC nanoseconds) or `time` (ISO 8601, UTC); position `lat`, `lon` (or `latitude`, `lng`, `longitude`) and `alt_agl_m` (or
    `alt_agl`, `rel_alt`, `alt`, `height`); optional `roll_deg`, `pitch_deg`, `yaw_deg` (or `heading`; the camera's, or the
    vehicle's with `attitude = "body"`, then composed with the [camera] mount) and `hfov_deg` per row. Missing
    attitude columns: the mount alone (nadir by default). A row with a non-finite number is an error."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    source: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="a telemetry reader: srt, csv, mavlink, ...")
    path: Path | None = Field(None, description="srt and csv: the file")
    url: str = Field("udpin:0.0.0.0:14550", description="mavlink: the pymavlink connection string")
    time_base: Literal["video", "wall"] | None = Field(None, description="video: match by frame time in the video "
                                                       "(srt/csv default); wall: by the clock")
    offset_s: float = Field(0.0, description="telemetry time minus frame time")
    alt_offset_m: float = Field(0.0, description="added to the altitude (e.g. ground above take-off point)")
    max_gap_s: float = Field(2.0, gt=0, description="no pose across telemetry gaps longer than this")
    attitude: Literal["camera", "body"] = Field("camera", description="csv: whose roll/pitch/yaw the columns are")
    utc_offset_h: float | None = Field(None, description="srt: local time zone of the recorder")

    @model_validator(mode="after")
    def _path_exists(self):
        if self.path is not None and not self.path.is_file():
            raise ValueError(f"telemetry file {self.path} does not exist")
        return self


class OutboxOptions(BaseModel):
    """The `[outbox]` settings (also accepted per sink as `outbox_*` keys); the network sinks read them
    (firespotter.net.sink), the engine only validates them."""

    model_config = ConfigDict(extra="forbid")
    dir: Path | None = Field(None, description="folder of the outbox files; default $STATE_DIRECTORY or ~/.local/state/firespotter")
    max_messages: int = Field(10_000, ge=1)
    max_mb: float = Field(256.0, gt=0)
    synchronous: Literal["normal", "full"] = Field("normal", description="SQLite synchronous mode: full survives "
                                                   "a power cut with the last messages, normal is faster")


class PluginTable(BaseModel):
    """A [[processors]] or [[sinks]] table: `type` picks the plugin; the other keys are its options, validated
    by the plugin's own options model when the pipeline is assembled."""

    model_config = ConfigDict(extra="allow")
    type: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ProcessorSettings(PluginTable):
    """One [[processors]] table; processors run in the order of the tables."""


class SinkSettings(PluginTable):
    """One [[sinks]] table."""

    name: str | None = None


class Settings(_Section):
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    source: SourceSettings = Field(default_factory=SourceSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    adapt: AdaptSettings = Field(default_factory=AdaptSettings)
    post: PostSettings = Field(default_factory=PostSettings)
    processors: list[ProcessorSettings] = Field(default_factory=list)
    sinks: list[SinkSettings] = Field(default_factory=list)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    outbox: OutboxOptions = Field(default_factory=OutboxOptions)
    camera: CameraSettings | None = None
    telemetry: TelemetrySettings | None = None

    @model_validator(mode="after")
    def _telemetry_needs_a_camera(self):
        if self.telemetry is not None and self.camera is None:
            raise ValueError("[telemetry] needs a [camera] section (hfov_deg or intrinsics) to project fire outlines")
        return self

    @field_validator("sinks")
    @classmethod
    def _unique_sink_names(cls, sinks: list[SinkSettings]) -> list[SinkSettings]:
        seen: set[str] = set()
        for i, s in enumerate(sinks):
            name = s.name or s.type
            if name in seen:
                raise ValueError(f"two sinks are named {name!r}; give the second one a distinct `name`")
            seen.add(name)
        return sinks


def _toml_path(loc: tuple[Any, ...]) -> str:
    """('sinks', 0, 'dir') -> 'sinks[0].dir'; ('model', 'threshold') -> 'model.threshold'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _model_at(loc: tuple[Any, ...], root: type[BaseModel] | None = None) -> type[BaseModel] | None:
    model: Any = root or Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        model = args[0] if args and isinstance(args[0], type) and issubclass(args[0], BaseModel) else ann
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def describe_validation_error(exc: ValidationError, where: str, root: type[BaseModel] = Settings) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = _toml_path(loc)
        if err["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1], root)
            known = list(parent.model_fields) if parent else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else (f"; known keys: {', '.join(known)}" if known else "")
            lines.append(f"{where}: unknown key {key!r}{hint}")
        elif err["type"] == "missing":
            lines.append(f"{where}: {key}: required key is missing")
        else:
            got = err.get("input")
            got_s = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
            lines.append(f"{where}: {key}: {err['msg']} (got {got_s})")
    return "\n".join(lines)


def non_finite(obj: Any, path: str = "") -> list[str]:
    """TOML paths of every inf/nan number in obj (validated settings or options, dicts, lists): TOML has `inf`
    and `nan` literals, and pydantic turns the strings "inf"/"nan" into them; each would pass a `> 0` check."""
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [path or "<value>"]
    if isinstance(obj, BaseModel):
        items = [(k, getattr(obj, k)) for k in type(obj).model_fields] + list((obj.model_extra or {}).items())
    elif isinstance(obj, dict):
        items = list(obj.items())
    elif isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in non_finite(v, f"{path}[{i}]")]
    else:
        return []
    return [p for k, v in items for p in non_finite(v, f"{path}.{k}" if path else str(k))]


def reject_non_finite(obj: Any, where: str) -> None:
    """The one check of non-finite numbers for settings and every plugin's options (ConfigError naming the keys)."""
    bad = non_finite(obj)
    if bad:
        raise ConfigError("\n".join(f"{where}: {p}: must be a finite number (got inf or nan)" for p in bad))


def parse_settings(data: dict[str, Any], where: str = "<config>") -> Settings:
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, where)) from None
    reject_non_finite(settings, where)
    return settings


def set_key(data: dict[str, Any], assignment: str) -> None:
    """Apply one `--set KEY=VALUE` to a config's raw TOML data, in place. KEY is a dotted path whose parts may
    index a [[table]] list (`sinks[0].port`, `source.uri`); VALUE is read as a TOML value (`5`, `true`,
    `"text"`, `[1, 2]`), else taken as a plain string (`--set source.uri=test://`)."""
    import re

    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set source.uri=test://")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    parts: list[str | int] = []
    for part in key.split("."):
        m = re.fullmatch(r"([A-Za-z0-9_-]+)((?:\[\d+\])*)", part)
        if m is None:
            raise ConfigError(f"--set {key}: {part!r} is not a key (letters, digits, _ and -, optionally [N])")
        parts.append(m.group(1))
        parts += [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
    node: Any = data
    for here, nxt in zip(parts, parts[1:]):
        if isinstance(here, int):
            if not isinstance(node, list) or here >= len(node):
                raise ConfigError(f"--set {key}: there is no table [{here}] (the file has {len(node) if isinstance(node, list) else 0})")
            node = node[here]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {here!r} is inside a value, not a table")
            node = node.setdefault(here, [] if isinstance(nxt, int) else {})
    last = parts[-1]
    if isinstance(last, int) or not isinstance(node, dict):
        raise ConfigError(f"--set {key}: the key must name a value inside a table")
    node[last] = value


def load_settings(path: str | Path | None, environ: dict[str, str] | None = None,
                  overrides: list[str] | tuple[str, ...] = ()) -> Settings:
    """Read and validate a TOML config; None gives the defaults. `FIRESPOTTER_<TABLE>__<KEY>` variables in the
    environment override it (envconfig.py), so one file serves a fleet; `overrides` (`--set KEY=VALUE`, set_key)
    override both, for one run. Overrides are applied to the file's data before validation, so they are checked
    exactly as the file is."""
    if path is None:
        return _with_env({}, "<defaults>", environ, overrides)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist", "pass an existing TOML file with -c")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    return _with_env(data, str(path), environ, overrides)


def _with_env(data: dict[str, Any], where: str, environ: dict[str, str] | None,
              overrides: list[str] | tuple[str, ...] = ()) -> Settings:
    from .envconfig import apply

    data, applied = apply(data, list(Settings.model_fields), environ)
    for item in overrides:
        set_key(data, item)
    notes = list(applied) + (["--set"] if overrides else [])
    return parse_settings(data, f"{where} with {', '.join(notes)}" if notes else where)


def apply_overrides(settings: Settings, overrides: dict[str, Any], where: str = "command line") -> Settings:
    """Apply dotted-key overrides ({"model.name": "x"}) and validate the result; None values are skipped."""
    data = settings.model_dump()
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_settings(data, where)


def parse_flag(text: str) -> bool:
    """"true"/"yes"/"on"/"1" or "false"/"no"/"off"/"0" (any case) -> bool; anything else is a ValueError."""
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def option_flag(options: dict, key: str, default: bool = False, section: str = "model") -> bool:
    """A true/false entry of a plugin's free-form `options` table, accepting TOML booleans and the usual strings
    (environment overrides and CLI `--option k=v` arrive as strings)."""
    v = options.get(key, default)
    if isinstance(v, str):
        try:
            return False if v == "" else parse_flag(v)
        except ValueError:
            raise PluginError(f"[{section}] options.{key} must be true or false, not {v!r}") from None
    return bool(v)
