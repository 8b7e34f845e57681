"""The `geo` processor: attaches a pose to every result and lon/lat polygons + area_m2 to its regions.

Its camera and telemetry come from the config's `[camera]` and `[telemetry]` sections (which imply this
processor) or from its own `[[processors]]` table:

    camera    = {"hfov_deg": 82.1, "mount_pitch_deg": -90.0, ...}   # or fx, fy, cx, cy, width, height
    telemetry = {"source": "srt", "path": "FLIGHT.SRT"}             # a telemetry reader: srt, csv, mavlink
                                                                    # (telemetry.py) or a plugin's

On each result (post thread, before the sinks): the frame's own pose if the source set one, else the telemetry
reader's pose at the frame's time; with a pose, every region gets `geo_polygon` and `area_m2` (flat ground at
the altitude above ground). Without a pose the result goes on unchanged: sinks publish its pixel regions and
say `georef: "no_pose"`. One instance per pipeline; it keeps nothing at module level.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from firespotter.runtime.config import TelemetrySettings
from firespotter.runtime.errors import ConfigError
from firespotter.runtime.geo import Camera, georeference
from firespotter.runtime.options import validated_options
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.protocols import ProcessorBase
from firespotter.runtime.specs import ProcessorSpec, TelemetryReaderSpec, module_available

log = logging.getLogger("firespotter.geo")


class GeoReferencer(ProcessorBase):
    """camera: the [camera] table; telemetry: a reader with pose_for(result, fps) (or None: frames' own poses)."""

    def __init__(self, camera: dict[str, Any] | None, telemetry: Any = None, fps: float | None = None,
                 max_range_m: float | None = None):
        self.camera_cfg = dict(camera or {})
        self.telemetry = telemetry
        self.fps = fps
        self.max_range_m = max_range_m if max_range_m is not None else self.camera_cfg.get("max_range_m")
        self._cameras: dict[tuple[int, int, float], Camera] = {}
        self.with_pose = 0
        self.without_pose = 0
        self.errors = 0

    def camera_for(self, width: int, height: int, hfov_deg: float) -> Camera:
        key = (width, height, hfov_deg)
        cam = self._cameras.get(key)
        if cam is None:
            cam = self._cameras[key] = Camera.from_config(self.camera_cfg, width=width, height=height, hfov_deg=hfov_deg)
        return cam

    def process(self, result: Any) -> None:
        pose = result.pose
        if pose is None and self.telemetry is not None:
            try:
                pose = self.telemetry.pose_for(result, self.fps)
            except Exception as exc:
                self.errors += 1
                if self.errors <= 3:
                    log.warning("telemetry: no pose for frame %d: %s", result.seq, exc)
                pose = None
        if pose is None:
            self.without_pose += 1
            return
        if "hfov_deg" in self.camera_cfg and pose.hfov_deg != float(self.camera_cfg["hfov_deg"]):
            pose = replace(pose, hfov_deg=float(self.camera_cfg["hfov_deg"]))
        result.pose = pose
        self.with_pose += 1
        if result.regions:
            h, w = result.mask.shape[:2]
            result.regions = georeference(result.regions, pose, self.camera_for(w, h, pose.hfov_deg), self.max_range_m)

    def stats(self) -> dict[str, Any]:
        return {"with_pose": self.with_pose, "without_pose": self.without_pose, "telemetry_errors": self.errors}

    def close(self) -> None:
        if self.telemetry is not None:
            try:
                self.telemetry.close()
            except Exception as exc:
                log.debug("telemetry close: %s", exc)
            self.telemetry = None


class GeoOptions(BaseModel):
    """A `[[processors]] type = "geo"` table; each key defaults to the config's section of the same name."""

    model_config = ConfigDict(extra="forbid")
    camera: dict[str, Any] | None = Field(None, description="default: [camera]")
    telemetry: dict[str, Any] | None = Field(None, description="default: [telemetry]")


def make_geo(options: GeoOptions, *, info: dict[str, Any], registry: Any = None) -> GeoReferencer:
    """registry: where the [telemetry] table's reader (`source = NAME`) is looked up; needed only with one."""
    camera = options.camera if options.camera is not None else info.get("camera")
    telemetry_cfg = options.telemetry if options.telemetry is not None else info.get("telemetry")
    telemetry = None
    if telemetry_cfg:
        cfg = dict(telemetry_cfg)
        name = str(cfg.pop("source", ""))
        if registry is None:
            raise ConfigError("telemetry: the geo processor needs the plugin registry to find its telemetry reader")
        spec = registry.get("telemetry_readers", name)
        # The reader's own keys (those [telemetry] does not declare) are checked by its options model.
        own = {k: cfg.pop(k) for k in list(cfg) if k not in TelemetrySettings.model_fields}
        checked = validated_options(spec, own, kind="telemetry reader", table=f"telemetry ({name})")
        extra = checked.model_dump() if spec.options_model is not None else {}
        telemetry = spec.factory({**cfg, **extra}, camera=camera)
        log.info("telemetry: %s with %d poses", name, len(telemetry))
    return GeoReferencer(camera, telemetry, fps=info.get("source_fps"))


@hookimpl
def register_processors():
    return [ProcessorSpec("geo", make_geo, "pose and lon/lat fire outlines from [camera] and [telemetry]",
                          options_model=GeoOptions)]


def _reader(kind: str):
    """The factory of the built-in reader `kind`: (cfg, *, camera) -> reader."""

    def open_reader(cfg: dict[str, Any], *, camera: dict[str, Any] | None = None):
        from .telemetry import open_telemetry  # loaded only when a reader is opened, not at every CLI start

        return open_telemetry({**cfg, "source": kind}, camera)

    return open_reader


@hookimpl
def register_telemetry_readers():
    return [TelemetryReaderSpec("srt", _reader("srt"), "a DJI-style .SRT subtitle sidecar (path)"),
            TelemetryReaderSpec("csv", _reader("csv"), "a CSV of time, position and attitude (path)"),
            TelemetryReaderSpec("mavlink", _reader("mavlink"), "live MAVLink over UDP (url)",
                                available=module_available("pymavlink.mavutil", extra="mavlink"))]
