"""Geo-referencing: pixel outlines -> lon/lat polygons on flat ground, and poses matched to frames by time.

Pure functions and small classes, no I/O (telemetry readers live in plugins/telemetry, the hook that attaches
poses in plugins/post/geo.py). Conventions:

- World frame: local NED (north, east, down) at the camera's ground point; the ground is flat, `alt_agl_m`
  below the camera.
- Attitude of the camera (`Pose.roll_deg/pitch_deg/yaw_deg`), aerospace Z-Y-X Euler angles: yaw from north,
  clockwise (90 = looking east); pitch up positive (0 = level, -90 = nadir); roll right-side-down positive.
  At yaw = pitch = roll = 0 the camera looks north, the image's right is east and its top is up.
  At pitch -90 (nadir) with yaw 0, the image's top points north and its right east.
- Camera: pinhole, pixel (u, v) with u right and v down, in pixel-edge coordinates (the top-left corner of the
  image is (0, 0), the bottom-right (width, height)); a pixel index i has its centre at i + 0.5.
- lon/lat on WGS84 through the local radii of curvature: exact to millimetres over the few hundred metres
  a drone camera sees.
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

import numpy as np

from .types import FireRegion, Pose

WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)

# camera axes (x right, y down, z optical) expressed in body axes (x forward, y right, z down)
_CAM_TO_BODY = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


# --- camera -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics at a given resolution (pixels)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_hfov(cls, width: int, height: int, hfov_deg: float) -> "Camera":
        if not 0 < hfov_deg < 180:
            raise ValueError(f"hfov_deg must be between 0 and 180, got {hfov_deg}")
        f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
        return cls(width, height, f, f, width / 2, height / 2)

    @property
    def hfov_deg(self) -> float:
        return math.degrees(2 * math.atan((self.width / 2) / self.fx))

    def scaled(self, width: int, height: int) -> "Camera":
        """The same lens at another resolution (frames resized after calibration)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        return Camera(width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy)

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None, *, width: int, height: int, hfov_deg: float | None = None) -> "Camera":
        """The `[camera]` table -> a Camera for frames of width x height.

        Keys: `fx`, `fy`, `cx`, `cy` (pixels, at `width` x `height` of the calibration, default the frame size);
        or `hfov_deg` (square pixels, principal point at the centre). Without either, the pose's hfov_deg.
        Mounting angles (`mount_roll_deg`, ...) are applied by the telemetry side, not here."""
        cfg = dict(cfg or {})
        cw, ch = int(cfg.get("width") or width), int(cfg.get("height") or height)
        if cfg.get("fx") is not None:
            fx = float(cfg["fx"])
            fy = float(cfg.get("fy") or fx)
            cam = cls(cw, ch, fx, fy, float(cfg.get("cx", cw / 2)), float(cfg.get("cy", ch / 2)))
        else:
            hfov = cfg.get("hfov_deg", hfov_deg)
            if hfov is None:
                raise ValueError("camera: give fx/fy (intrinsics) or hfov_deg")
            cam = cls.from_hfov(cw, ch, float(hfov))
        return cam.scaled(width, height)


# --- rotations --------------------------------------------------------------------------------------------


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Body -> NED rotation, R = Rz(yaw) Ry(pitch) Rx(roll)."""
    y, p, r = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    cy, sy, cp, sp, cr, sr = math.cos(y), math.sin(y), math.cos(p), math.sin(p), math.cos(r), math.sin(r)
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


def euler_from_rotation(r: np.ndarray) -> tuple[float, float, float]:
    """Inverse of rotation(): (yaw, pitch, roll) in degrees; at +-90 pitch roll is folded into yaw."""
    sp = -float(r[2, 0])
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, sp))))
    if abs(sp) > 1 - 1e-9:
        yaw = math.degrees(math.atan2(-r[0, 1], r[1, 1]))
        roll = 0.0
    else:
        yaw = math.degrees(math.atan2(r[1, 0], r[0, 0]))
        roll = math.degrees(math.atan2(r[2, 1], r[2, 2]))
    return yaw, pitch, roll


def compose_attitude(body_rpy: tuple[float, float, float], mount_rpy: tuple[float, float, float]) -> tuple[float, float, float]:
    """Camera attitude (roll, pitch, yaw) from the vehicle's attitude and the camera's fixed mounting
    angles relative to the body (both (roll, pitch, yaw) degrees). A nadir camera on a level drone:
    compose_attitude((0, 0, yaw), (0, -90, 0)) -> (0, -90, yaw)."""
    rb = rotation(body_rpy[2], body_rpy[1], body_rpy[0])
    rm = rotation(mount_rpy[2], mount_rpy[1], mount_rpy[0])
    yaw, pitch, roll = euler_from_rotation(rb @ rm)
    return roll, pitch, yaw


def camera_rotation(pose: Pose) -> np.ndarray:
    """Camera axes (x right, y down, z optical) -> NED."""
    return rotation(pose.yaw_deg, pose.pitch_deg, pose.roll_deg) @ _CAM_TO_BODY


# --- projection -------------------------------------------------------------------------------------------


def project_to_ground(points_px: np.ndarray, pose: Pose, camera: Camera, max_range_m: float | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel points (N×2, pixel-edge coordinates) -> (N×2 north/east metres from the point below the camera,
    N bools: the ray hit the ground within max_range_m). Rays at or above the horizon, or hitting farther
    than max_range_m (default 20 × altitude), are clipped to max_range_m along their horizontal direction."""
    if pose.alt_agl_m <= 0:
        raise ValueError(f"altitude above ground must be positive, got {pose.alt_agl_m}")
    max_range = max_range_m if max_range_m is not None else 20.0 * pose.alt_agl_m
    pts = np.asarray(points_px, np.float64).reshape(-1, 2)
    rays = np.stack([(pts[:, 0] - camera.cx) / camera.fx, (pts[:, 1] - camera.cy) / camera.fy, np.ones(len(pts))], 1)
    d = rays @ camera_rotation(pose).T  # N×3 NED directions
    horiz = np.hypot(d[:, 0], d[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d[:, 2] > 1e-12, pose.alt_agl_m / d[:, 2], np.inf)
        reach = t * horiz
    ok = np.isfinite(t) & (reach <= max_range)
    ne = np.empty((len(pts), 2))
    ne[ok] = d[ok, :2] * t[ok, None]
    bad = ~ok
    if bad.any():
        scale = np.where(horiz[bad] > 1e-12, max_range / np.maximum(horiz[bad], 1e-12), 0.0)
        ne[bad] = d[bad, :2] * scale[:, None]
    return ne, ok


def radii(lat_deg: float) -> tuple[float, float]:
    """WGS84 meridian (M) and prime-vertical (N) radii of curvature at a latitude, metres."""
    s = math.sin(math.radians(lat_deg))
    w = 1 - WGS84_E2 * s * s
    return WGS84_A * (1 - WGS84_E2) / w**1.5, WGS84_A / math.sqrt(w)


def ne_to_lonlat(ne: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    """North/east metres around (lat0, lon0) -> N×2 (lon, lat) degrees."""
    m, n = radii(lat0)
    ne = np.asarray(ne, np.float64).reshape(-1, 2)
    lat = lat0 + np.degrees(ne[:, 0] / m)
    lon = lon0 + np.degrees(ne[:, 1] / (n * math.cos(math.radians(lat0))))
    return np.stack([lon, lat], 1)


def lonlat_to_ne(lonlat: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    m, n = radii(lat0)
    ll = np.asarray(lonlat, np.float64).reshape(-1, 2)
    north = np.radians(ll[:, 1] - lat0) * m
    east = np.radians(ll[:, 0] - lon0) * n * math.cos(math.radians(lat0))
    return np.stack([north, east], 1)


def polygon_area(xy: np.ndarray) -> float:
    """Shoelace area of a ring (any consistent 2-D metric coordinates)."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    if len(xy) < 3:
        return 0.0
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def project_polygon(points_px: np.ndarray, pose: Pose, camera: Camera, max_range_m: float | None = None
                    ) -> tuple[list[tuple[float, float]], float, bool]:
    """Pixel ring -> ((lon, lat) ring, area m², every vertex hit the ground within range)."""
    ne, ok = project_to_ground(points_px, pose, camera, max_range_m)
    lonlat = ne_to_lonlat(ne, pose.lat, pose.lon)
    return [(float(a), float(b)) for a, b in lonlat], polygon_area(ne), bool(ok.all())


def georeference(regions: Sequence[FireRegion], pose: Pose | None, camera: Camera,
                 max_range_m: float | None = None) -> list[FireRegion]:
    """Regions with `geo_polygon` ((lon, lat) ring) and `area_m2` filled in from the pose; the input is not
    modified. Without a pose the regions come back unchanged (pixel regions still publish, without geo).
    A region whose outline reaches above the horizon is clipped at max_range_m (default 20 × altitude)."""
    if pose is None:
        return list(regions)
    out = []
    for r in regions:
        poly = np.asarray(r.polygon, np.float64).reshape(-1, 2) + 0.5  # pixel index -> pixel centre
        if len(poly) < 3:  # a 1-2 pixel region: its bounding box
            x, y, w, h = r.bbox
            poly = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64)
        ring, area, _ = project_polygon(poly, pose, camera, max_range_m)
        out.append(replace(r, geo_polygon=ring, area_m2=round(area, 3)))
    return out


# --- poses over time -------------------------------------------------------------------------------------


def _lerp_angle(a: float, b: float, f: float) -> float:
    d = (b - a + 180.0) % 360.0 - 180.0
    return (a + f * d + 180.0) % 360.0 - 180.0


def interpolate_pose(p0: Pose, p1: Pose, t_ns: int) -> Pose:
    span = p1.t_ns - p0.t_ns
    f = 0.0 if span <= 0 else min(1.0, max(0.0, (t_ns - p0.t_ns) / span))
    lerp = lambda a, b: a + f * (b - a)  # noqa: E731
    return Pose(lat=lerp(p0.lat, p1.lat), lon=lerp(p0.lon, p1.lon), alt_agl_m=lerp(p0.alt_agl_m, p1.alt_agl_m),
                roll_deg=_lerp_angle(p0.roll_deg, p1.roll_deg, f), pitch_deg=lerp(p0.pitch_deg, p1.pitch_deg),
                yaw_deg=_lerp_angle(p0.yaw_deg, p1.yaw_deg, f), hfov_deg=lerp(p0.hfov_deg, p1.hfov_deg), t_ns=int(t_ns))


class PoseTrack:
    """Time-ordered poses; `pose_at(t_ns)` interpolates between the two samples around t (angles the short
    way round). None when t is outside the track by more than `max_extrapolate_s` or falls in a gap between
    samples longer than `max_gap_s`: no pose is better than a wrong one. Thread-safe; `add` appends live
    samples (bounded by `maxlen`)."""

    def __init__(self, poses: Iterable[Pose] = (), *, max_gap_s: float = 2.0, max_extrapolate_s: float = 0.5,
                 maxlen: int | None = None):
        self._poses = sorted(poses, key=lambda p: p.t_ns)
        self._t = [p.t_ns for p in self._poses]
        self.max_gap_ns = int(max_gap_s * 1e9)
        self.max_extra_ns = int(max_extrapolate_s * 1e9)
        self.maxlen = maxlen
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._poses)

    def add(self, pose: Pose) -> None:
        with self._lock:
            i = bisect.bisect_right(self._t, pose.t_ns)
            self._t.insert(i, pose.t_ns)
            self._poses.insert(i, pose)
            if self.maxlen and len(self._poses) > self.maxlen:
                drop = len(self._poses) - self.maxlen
                del self._t[:drop], self._poses[:drop]

    def pose_at(self, t_ns: int) -> Pose | None:
        with self._lock:
            if not self._t:
                return None
            i = bisect.bisect_left(self._t, t_ns)
            if i < len(self._t) and self._t[i] == t_ns:
                return replace(self._poses[i], t_ns=int(t_ns))
            if i == 0:
                return replace(self._poses[0], t_ns=int(t_ns)) if self._t[0] - t_ns <= self.max_extra_ns else None
            if i == len(self._t):
                return replace(self._poses[-1], t_ns=int(t_ns)) if t_ns - self._t[-1] <= self.max_extra_ns else None
            p0, p1 = self._poses[i - 1], self._poses[i]
        if p1.t_ns - p0.t_ns > self.max_gap_ns:
            return None
        return interpolate_pose(p0, p1, t_ns)
