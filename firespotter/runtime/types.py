"""The data that flows through the pipeline.

Plain dataclasses: cheap to build per frame, no validation on the hot path. Images are H×W×3 uint8 RGB.
A Result is written by post-processing and the processors, then frozen (`Result.freeze`) before observers
and sinks, which share it across threads.
"""

from __future__ import annotations

import enum
from dataclasses import FrozenInstanceError, dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np


class SourceState(str, enum.Enum):
    """Where a source stands. Travels in every Result so "no fire" is never confused with "no picture"."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALLED = "stalled"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"


class AlertLevel(str, enum.Enum):
    NONE = "none"  # no fire region in the frame
    SUSPECT = "suspect"  # fire pixels, but too small or too faint to alert
    FIRE = "fire"  # at least one region passed the alert thresholds


@dataclass(frozen=True)
class Pose:
    """Camera pose from telemetry at (or interpolated to) the capture time."""

    lat: float
    lon: float
    alt_agl_m: float
    roll_deg: float = 0.0
    pitch_deg: float = -90.0  # nadir
    yaw_deg: float = 0.0
    hfov_deg: float = 80.0
    t_ns: int = 0


@dataclass
class Frame:
    image: np.ndarray  # H×W×3 uint8 RGB, C-contiguous
    seq: int  # per source; gapless when nothing is dropped
    t_capture_ns: int  # time.monotonic_ns() at capture
    t_wall_ns: int  # time.time_ns() at capture
    source_id: str
    pose: Pose | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. {"name": file stem}; small values only


@dataclass(frozen=True)
class InputSpec:
    """What a segmenter wants to see. size None = any size, the frame as it comes."""

    size: tuple[int, int] | None = None  # (height, width)
    channels: str = "RGB"


@dataclass
class Prediction:
    """What inference made of one frame; it travels from the inference thread (and the adapters) to
    post-processing, which turns it into a Result."""

    prob: np.ndarray  # H'×W' float32 fire probability in [0, 1]
    model_id: str
    precision: "PrecisionLabel"
    timings_ms: dict[str, float] = field(default_factory=dict)  # "infer", then "adapt" and "post" when they ran
    fire_score: float | None = None  # frame-level fire probability (segmenters with a frame head)
    frame: Frame | None = None  # the frame it was made from (set by the pipeline)


@dataclass(frozen=True)
class PrecisionLabel:
    """The three labels every runnable artifact carries (see docs/quantization.md)."""

    precision_exec: str = "fp32"  # fp32 | fp16 | bf16 | int8
    weight_bits: int = 32  # 32 | 16 | 8 | 4 | 2
    simulated: bool = False  # low-bit weights dequantized before a higher-precision kernel

    def as_dict(self) -> dict[str, Any]:
        return {"precision_exec": self.precision_exec, "weight_bits": self.weight_bits, "simulated": self.simulated}


@dataclass
class FireRegion:
    id: int
    polygon: np.ndarray  # K×2 int32 pixel (x, y) ring, frame coordinates
    area_px: int
    bbox: tuple[int, int, int, int]  # x, y, w, h
    centroid: tuple[float, float]  # x, y
    mean_prob: float
    peak_prob: float
    geo_polygon: list[tuple[float, float]] | None = None  # (lon, lat) ring when a pose is known
    area_m2: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "polygon": np.asarray(self.polygon).tolist(),
            "area_px": self.area_px,
            "bbox": list(self.bbox),
            "centroid": [round(self.centroid[0], 2), round(self.centroid[1], 2)],
            "mean_prob": round(self.mean_prob, 4),
            "peak_prob": round(self.peak_prob, 4),
            "geo_polygon": None if self.geo_polygon is None else [list(p) for p in self.geo_polygon],
            "area_m2": self.area_m2,
        }

    def freeze(self) -> "FireRegion":
        """This region, read-only (see Result.freeze)."""
        if isinstance(self, _FrozenFireRegion):
            return self
        self.polygon = _read_only(self.polygon)
        if self.geo_polygon is not None:
            self.geo_polygon = tuple(self.geo_polygon)
        self.__class__ = _FrozenFireRegion
        return self


@dataclass
class Result:
    """One processed frame. Carries the frame's metadata, not its image, unless a sink asked for it."""

    seq: int
    source_id: str
    t_capture_ns: int
    t_wall_ns: int
    mask: np.ndarray  # H×W uint8, 0 or 255, at frame size
    regions: list[FireRegion]
    alert: AlertLevel
    source_state: SourceState
    model_id: str
    precision: PrecisionLabel
    timings_ms: dict[str, float]
    drops: dict[str, int]  # counters so far: {"queue": n, "deadline": n}
    pose: Pose | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    image: np.ndarray | None = None
    t_publish_ns: int = 0  # set when handed to the sinks
    fire_score: float | None = None  # frame-level fire probability, from models with a classification head

    @property
    def fire_fraction(self) -> float:
        return float(np.count_nonzero(self.mask)) / self.mask.size if self.mask.size else 0.0

    def as_event(self) -> dict[str, Any]:
        """JSON-ready metadata (no pixels)."""
        return {
            "seq": self.seq,
            "source_id": self.source_id,
            "name": self.meta.get("name"),
            "t_wall_ns": self.t_wall_ns,
            "alert": self.alert.value,
            "source_state": self.source_state.value,
            "fire_fraction": round(self.fire_fraction, 6),
            "fire_score": None if self.fire_score is None else round(self.fire_score, 4),
            "regions": [r.as_dict() for r in self.regions],
            "model_id": self.model_id,
            **self.precision.as_dict(),
            "latency_ms": round((self.t_publish_ns - self.t_capture_ns) / 1e6, 3) if self.t_publish_ns else None,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "drops": dict(self.drops),
        }

    def freeze(self) -> "Result":
        """Make this result read-only; the pipeline calls it after the processors, before the hooks, observers
        and sinks, which share one Result across threads. Assigning a field raises FrozenInstanceError;
        regions become a tuple of read-only regions, dicts read-only mappings, arrays read-only views.
        Costs no per-frame work before it is called (the class is swapped, no flag is checked on every write).
        `dataclasses.replace(result)` gives a writable copy."""
        if isinstance(self, _FrozenResult):
            return self
        self.mask = _read_only(self.mask)
        if self.image is not None:
            self.image = _read_only(self.image)
        self.regions = tuple(r.freeze() for r in self.regions)
        self.timings_ms = MappingProxyType(self.timings_ms)
        self.drops = MappingProxyType(self.drops)
        self.meta = MappingProxyType(self.meta)
        self.__class__ = _FrozenResult
        return self

    @property
    def frozen(self) -> bool:
        return isinstance(self, _FrozenResult)


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view: the owner of the array (a source's buffer) keeps its own write access."""
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


def _frozen_variant(base: type) -> type:
    """A subclass of `base` whose fields cannot be assigned. Constructing it (dataclasses.replace, copy.copy)
    gives a writable `base` instead: a copy is the caller's to change."""

    def __new__(cls, *args: Any, **kwargs: Any):
        return base(*args, **kwargs) if (args or kwargs) else object.__new__(base)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign {name!r}: a {base.__name__} is read-only once frozen "
                                  "(change it in a processor, or copy it with dataclasses.replace)")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete {name!r}: a {base.__name__} is read-only once frozen")

    return type(f"Frozen{base.__name__}", (base,), {"__new__": __new__, "__setattr__": __setattr__,
                                                    "__delattr__": __delattr__, "__module__": __name__,
                                                    "__doc__": f"A frozen {base.__name__} (read-only)."})


_FrozenFireRegion = _frozen_variant(FireRegion)
_FrozenResult = _frozen_variant(Result)
