"""The data that flows through the pipeline (DESIGN §3).

Plain dataclasses: cheap to build per frame, no validation on the hot path. Images are H×W×3 uint8 RGB.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
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
    prob: np.ndarray  # H'×W' float32 fire probability in [0, 1]
    model_id: str
    precision: "PrecisionLabel"
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PrecisionLabel:
    """The three labels every runnable artifact carries (DESIGN §7)."""

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
