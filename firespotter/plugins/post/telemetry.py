"""Telemetry readers: camera poses over time from DJI-style .SRT sidecars, CSV files and MAVLink over UDP.

Every reader exposes `pose_at(t_ns) -> Pose | None` (interpolated, see runtime.geo.PoseTrack) in its own time
base, and `pose_for(result_or_frame)` that picks the time the reader needs:

- time_base "video": seconds since the start of the recording (SRT subtitle times; a CSV `t_s` column).
  A frame's video time is `meta["pts_ns"]` when the source gives it, else `seq / fps`.
- time_base "wall":  UTC (SRT timestamps inside the subtitle, CSV `t_ns`/`time`, MAVLink receive time),
  matched to the frame's `t_wall_ns`.

The pose's attitude is the camera's: a gimbal's angles where telemetry has them (DJI `gb_yaw/gb_pitch/gb_roll`,
MAVLink GIMBAL_DEVICE_ATTITUDE_STATUS or MOUNT_ORIENTATION), else the vehicle's attitude composed with the
fixed mounting angles of `[camera]` (default: looking straight down).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.geo import PoseTrack, compose_attitude
from firespotter.runtime.types import Pose

log = logging.getLogger("firespotter.telemetry")


class TelemetryError(FirespotterError):
    """A telemetry file or link that cannot be used."""


@dataclass(frozen=True)
class Mount:
    """The camera's fixed mounting angles relative to the vehicle body (degrees). Default: nadir."""

    roll_deg: float = 0.0
    pitch_deg: float = -90.0
    yaw_deg: float = 0.0

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> "Mount":
        cfg = cfg or {}
        return cls(float(cfg.get("mount_roll_deg", 0.0)), float(cfg.get("mount_pitch_deg", -90.0)),
                   float(cfg.get("mount_yaw_deg", 0.0)))

    def camera_attitude(self, body_roll: float, body_pitch: float, body_yaw: float) -> tuple[float, float, float]:
        return compose_attitude((body_roll, body_pitch, body_yaw), (self.roll_deg, self.pitch_deg, self.yaw_deg))


class _TrackReader:
    time_base = "video"

    def __init__(self, track: PoseTrack, time_base: str, offset_s: float = 0.0):
        if time_base not in ("video", "wall"):
            raise TelemetryError(f"telemetry time_base {time_base!r}: expected video or wall")
        self.track = track
        self.time_base = time_base
        self.offset_ns = int(offset_s * 1e9)

    def pose_at(self, t_ns: int) -> Pose | None:
        return self.track.pose_at(int(t_ns) + self.offset_ns)

    def pose_for(self, item: Any, fps: float | None = None) -> Pose | None:
        """A Frame or Result -> its pose, by the reader's time base."""
        if self.time_base == "wall":
            return self.pose_at(item.t_wall_ns)
        meta = getattr(item, "meta", None) or {}
        if "pts_ns" in meta:
            return self.pose_at(int(meta["pts_ns"]))
        if not fps:
            raise TelemetryError("telemetry time_base video needs the source's frame rate (or pts_ns in frame meta)")
        return self.pose_at(int(round(item.seq * 1e9 / fps)))

    def __len__(self) -> int:
        return len(self.track)

    def close(self) -> None:
        pass


# --- SRT --------------------------------------------------------------------------------------------------

_SRT_TIME = re.compile(r"(\d+):(\d+):(\d+)[,.](\d+)\s*-->\s*(\d+):(\d+):(\d+)[,.](\d+)")
_NUM = r"(-?\d+(?:\.\d+)?)"
_FIELDS = {
    "lat": re.compile(r"\[\s*latitude\s*:\s*" + _NUM, re.I),
    "lon": re.compile(r"\[\s*long(?:t)?itude\s*:\s*" + _NUM, re.I),
    "rel_alt": re.compile(r"rel_alt\s*:\s*" + _NUM, re.I),
    "abs_alt": re.compile(r"abs_alt\s*:\s*" + _NUM, re.I),
    "gb_yaw": re.compile(r"gb_yaw\s*:\s*" + _NUM, re.I),
    "gb_pitch": re.compile(r"gb_pitch\s*:\s*" + _NUM, re.I),
    "gb_roll": re.compile(r"gb_roll\s*:\s*" + _NUM, re.I),
    "drone_yaw": re.compile(r"drone_yaw\s*:\s*" + _NUM, re.I),
    "drone_pitch": re.compile(r"drone_pitch\s*:\s*" + _NUM, re.I),
    "drone_roll": re.compile(r"drone_roll\s*:\s*" + _NUM, re.I),
    "focal_len": re.compile(r"focal_len\s*:\s*" + _NUM, re.I),
    "height": re.compile(r"(?:^|[\s,])H\s+" + _NUM + r"\s*m", re.I),
}
_GPS = re.compile(r"GPS\s*\(\s*" + _NUM + r"\s*,\s*" + _NUM + r"\s*(?:,\s*" + _NUM + r")?\s*\)", re.I)
_DATE = re.compile(r"(\d{4})[-./](\d{2})[-./](\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.,:](\d{1,6}))?")


@dataclass
class SrtSample:
    t_video_ns: int
    t_wall_ns: int | None
    lat: float
    lon: float
    alt_m: float
    gimbal: tuple[float, float, float] | None  # roll, pitch, yaw
    body: tuple[float, float, float] | None  # roll, pitch, yaw


def parse_srt(text: str) -> list[SrtSample]:
    """DJI-style subtitle telemetry -> samples. Understands the bracket format ([latitude: ..] [longitude: ..]
    [rel_alt: .. abs_alt: ..] [gb_yaw: .. gb_pitch: .. gb_roll: ..]) and the older GPS(lon, lat, alt) ... H 50.0m
    format. Blocks without a position are skipped."""
    samples = []
    for block in re.split(r"\r?\n\s*\r?\n", text.strip()):
        m = _SRT_TIME.search(block)
        if not m:
            continue
        h, mi, s, ms = (int(x) for x in m.groups()[:4])
        ms_scale = 10 ** (3 - len(m.group(4))) if len(m.group(4)) <= 3 else 10 ** -(len(m.group(4)) - 3)
        t_video = int(((h * 60 + mi) * 60 + s) * 1e9 + ms * ms_scale * 1e6)
        body = re.sub(r"<[^>]+>", " ", block[m.end():])
        got = {k: float(r.search(body).group(1)) for k, r in _FIELDS.items() if r.search(body)}
        lat, lon = got.get("lat"), got.get("lon")
        alt = got.get("rel_alt", got.get("height"))
        g = _GPS.search(body)
        if (lat is None or lon is None) and g:
            lon, lat = float(g.group(1)), float(g.group(2))
            if alt is None and g.group(3) is not None:
                alt = float(g.group(3))
        if lat is None or lon is None or alt is None or (lat == 0 and lon == 0):
            continue
        t_wall = None
        d = _DATE.search(body)
        if d:
            y, mo, da, hh, mm, ss = (int(x) for x in d.groups()[:6])
            frac = d.group(7) or "0"
            us = int(frac.ljust(6, "0")[:6])
            try:
                t_wall = int(datetime(y, mo, da, hh, mm, ss, us, tzinfo=timezone.utc).timestamp() * 1e6) * 1000
            except (ValueError, OverflowError):  # a date like 2024-13-45 (a glitched subtitle): no wall time
                t_wall = None
        gimbal = ((got.get("gb_roll", 0.0), got["gb_pitch"], got.get("gb_yaw", got.get("drone_yaw", 0.0)))
                  if "gb_pitch" in got else None)
        bodyatt = ((got.get("drone_roll", 0.0), got.get("drone_pitch", 0.0), got["drone_yaw"])
                   if "drone_yaw" in got else None)
        samples.append(SrtSample(t_video, t_wall, lat, lon, alt, gimbal, bodyatt))
    return samples


class SrtTelemetry(_TrackReader):
    """Poses from a DJI-style .SRT sidecar. time_base "video" (default) uses the subtitle times; "wall" the
    timestamps inside (local time of the drone, treated as UTC unless `utc_offset_h` says otherwise)."""

    def __init__(self, path: str | os.PathLike, *, hfov_deg: float = 80.0, mount: Mount = Mount(),
                 time_base: str = "video", offset_s: float = 0.0, alt_offset_m: float = 0.0, utc_offset_h: float = 0.0,
                 max_gap_s: float = 2.0):
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig", errors="replace")
        except OSError as exc:
            raise TelemetryError(f"telemetry: cannot read {path}: {exc.strerror or exc}") from None
        samples = parse_srt(text)
        if not samples:
            raise TelemetryError(f"telemetry: {path} has no subtitle block with a position (latitude/longitude or GPS(...))")
        poses = []
        for s in samples:
            if time_base == "wall":
                if s.t_wall_ns is None:
                    raise TelemetryError(f"telemetry: {path} has no timestamps; use time_base = \"video\"")
                t = s.t_wall_ns - int(utc_offset_h * 3600e9)
            else:
                t = s.t_video_ns
            if s.gimbal is not None:
                roll, pitch, yaw = s.gimbal
            elif s.body is not None:
                roll, pitch, yaw = mount.camera_attitude(*s.body)
            else:
                roll, pitch, yaw = mount.camera_attitude(0.0, 0.0, 0.0)
            poses.append(Pose(lat=s.lat, lon=s.lon, alt_agl_m=s.alt_m + alt_offset_m, roll_deg=roll, pitch_deg=pitch,
                              yaw_deg=yaw, hfov_deg=hfov_deg, t_ns=t))
        super().__init__(PoseTrack(poses, max_gap_s=max_gap_s), time_base, offset_s)
        self.path = path


# --- CSV --------------------------------------------------------------------------------------------------

_ALIASES = {
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "longitude"),
    "alt": ("alt_agl_m", "alt_agl", "rel_alt", "alt", "height"),
    "roll": ("roll_deg", "roll"),
    "pitch": ("pitch_deg", "pitch"),
    "yaw": ("yaw_deg", "yaw", "heading"),
    "hfov": ("hfov_deg", "hfov"),
}


class CsvTelemetry(_TrackReader):
    """Poses from a CSV with a header. Time: `t_s` (seconds; video or wall by time_base), `t_ns` (UTC ns) or
    `time` (ISO 8601, UTC). Position: lat, lon, alt_agl_m (aliases: latitude, longitude, rel_alt, alt).
    Attitude: roll_deg, pitch_deg, yaw_deg, the camera's when `attitude = "camera"` (default), else the
    vehicle's, composed with the mount. Missing attitude columns: the mount alone (nadir by default)."""

    def __init__(self, path: str | os.PathLike, *, hfov_deg: float = 80.0, mount: Mount = Mount(),
                 time_base: str = "video", offset_s: float = 0.0, attitude: str = "camera", alt_offset_m: float = 0.0,
                 max_gap_s: float = 2.0):
        path = Path(path)
        if attitude not in ("camera", "body"):
            raise TelemetryError(f"telemetry attitude {attitude!r}: expected camera or body")
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
        except OSError as exc:
            raise TelemetryError(f"telemetry: cannot read {path}: {exc.strerror or exc}") from None
        if not rows:
            raise TelemetryError(f"telemetry: {path} has no rows")
        cols = {c.strip().lower(): c for c in rows[0].keys() if c}

        def col(key: str) -> str | None:
            return next((cols[a] for a in _ALIASES[key] if a in cols), None)

        need = {k: col(k) for k in ("lat", "lon", "alt")}
        missing = [k for k, v in need.items() if v is None]
        tcol = next((cols[c] for c in ("t_ns", "t_s", "time", "timestamp") if c in cols), None)
        if missing or tcol is None:
            what = missing + ([] if tcol else ["t_s|t_ns|time"])
            raise TelemetryError(f"telemetry: {path} lacks column(s) {', '.join(what)}; has {', '.join(cols)}")
        poses = []
        for i, row in enumerate(rows, start=2):
            try:
                t = self._time(row[tcol], tcol.strip().lower())
                vals = {k: float(row[c]) for k, c in need.items()}
                att = [float(row[col(k)]) if col(k) and row[col(k)] not in ("", None) else None for k in ("roll", "pitch", "yaw")]
                hfov = float(row[col("hfov")]) if col("hfov") and row[col("hfov")] else hfov_deg
                bad = [k for k, v in (*vals.items(), *zip(("roll", "pitch", "yaw"), att), ("hfov", hfov))
                       if v is not None and not math.isfinite(v)]
                if bad:  # "nan" parses as a float; a NaN pose would silently drop geo-referencing
                    raise ValueError(f"{', '.join(bad)} not a finite number")
            except (ValueError, TypeError, OverflowError) as exc:
                raise TelemetryError(f"telemetry: {path}:{i}: {exc}") from None
            if attitude == "camera" and att[1] is not None:
                roll, pitch, yaw = att[0] or 0.0, att[1], att[2] or 0.0
            else:
                roll, pitch, yaw = mount.camera_attitude(att[0] or 0.0, att[1] or 0.0, att[2] or 0.0)
            poses.append(Pose(lat=vals["lat"], lon=vals["lon"], alt_agl_m=vals["alt"] + alt_offset_m, roll_deg=roll,
                              pitch_deg=pitch, yaw_deg=yaw, hfov_deg=hfov, t_ns=t))
        super().__init__(PoseTrack(poses, max_gap_s=max_gap_s), time_base, offset_s)
        self.path = path

    @staticmethod
    def _time(value: str, name: str) -> int:
        value = value.strip()
        if name == "t_ns":
            return int(value)
        if name == "t_s":
            return int(round(float(value) * 1e9))
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return int(round(dt.timestamp() * 1e6)) * 1000


# --- MAVLink ----------------------------------------------------------------------------------------------


def _quat_to_euler(q: Iterable[float]) -> tuple[float, float, float]:
    """MAVLink quaternion (w, x, y, z) -> (roll, pitch, yaw) degrees."""
    w, x, y, z = q
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return math.degrees(roll), math.degrees(pitch), math.degrees(yaw)


class MavlinkTelemetry(_TrackReader):
    """Live poses from a MAVLink stream (pymavlink), e.g. `udpin:0.0.0.0:14550` (the autopilot or a router
    sends to us). GLOBAL_POSITION_INT gives lat/lon and the altitude above home (`relative_alt`, plus
    `alt_offset_m`); ATTITUDE the vehicle's attitude; GIMBAL_DEVICE_ATTITUDE_STATUS or MOUNT_ORIENTATION the
    camera's when a gimbal reports (fresher than `gimbal_timeout_s`). Samples are stamped with the wall clock at
    receipt and matched to frames' t_wall_ns (time_base "wall")."""

    def __init__(self, url: str = "udpin:0.0.0.0:14550", *, hfov_deg: float = 80.0, mount: Mount = Mount(),
                 offset_s: float = 0.0, alt_offset_m: float = 0.0, history_s: float = 30.0, gimbal_timeout_s: float = 2.0,
                 max_gap_s: float = 2.0):
        os.environ.setdefault("MAVLINK20", "1")
        try:
            from pymavlink import mavutil
        except ImportError as exc:
            raise TelemetryError(f"telemetry mavlink: {exc}", "pip install 'firespotter[mavlink]'") from None
        try:
            self.conn = mavutil.mavlink_connection(url, dialect="common", autoreconnect=True)
        except Exception as exc:
            raise TelemetryError(f"telemetry mavlink: cannot open {url}: {exc}") from None
        super().__init__(PoseTrack(max_gap_s=max_gap_s, max_extrapolate_s=1.0, maxlen=int(history_s * 50)), "wall", offset_s)
        self.url = url
        self.hfov_deg = hfov_deg
        self.mount = mount
        self.alt_offset_m = alt_offset_m
        self.gimbal_timeout_ns = int(gimbal_timeout_s * 1e9)
        self._pos: tuple[float, float, float] | None = None
        self._body = (0.0, 0.0, 0.0)
        self._have_body = False
        self._gimbal: tuple[float, float, float, bool, int] | None = None  # roll, pitch, yaw, yaw_is_earth, t
        self.messages = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry-mavlink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        types = ["GLOBAL_POSITION_INT", "ATTITUDE", "GIMBAL_DEVICE_ATTITUDE_STATUS", "MOUNT_ORIENTATION"]
        while not self._stop.is_set():
            try:
                msg = self.conn.recv_match(type=types, blocking=True, timeout=0.2)
            except Exception as exc:  # a link error: keep trying
                log.debug("mavlink telemetry: %s", exc)
                self._stop.wait(0.2)
                continue
            if msg is not None:
                self.handle(msg, time.time_ns())

    def handle(self, msg: Any, t_ns: int) -> None:
        kind = msg.get_type()
        self.messages += 1
        if kind == "GLOBAL_POSITION_INT":
            self._pos = (msg.lat / 1e7, msg.lon / 1e7, msg.relative_alt / 1000.0)
        elif kind == "ATTITUDE":
            self._body = (math.degrees(msg.roll), math.degrees(msg.pitch), math.degrees(msg.yaw))
            self._have_body = True
        elif kind == "GIMBAL_DEVICE_ATTITUDE_STATUS":
            roll, pitch, yaw = _quat_to_euler(msg.q)
            earth = bool(msg.flags & 64) or (bool(msg.flags & 16) and not msg.flags & 32)
            self._gimbal = (roll, pitch, yaw, earth, t_ns)
        elif kind == "MOUNT_ORIENTATION":
            self._gimbal = (msg.roll, msg.pitch, msg.yaw_absolute if msg.yaw_absolute == msg.yaw_absolute else msg.yaw,
                            msg.yaw_absolute == msg.yaw_absolute, t_ns)
        else:
            return
        if self._pos is None or not (self._have_body or self._gimbal):
            return
        lat, lon, alt = self._pos
        g = self._gimbal
        if g is not None and t_ns - g[4] <= self.gimbal_timeout_ns:
            roll, pitch = g[0], g[1]
            yaw = g[2] if g[3] else g[2] + self._body[2]
            yaw = (yaw + 180.0) % 360.0 - 180.0
        else:
            roll, pitch, yaw = self.mount.camera_attitude(*self._body)
        self.track.add(Pose(lat=lat, lon=lon, alt_agl_m=alt + self.alt_offset_m, roll_deg=roll, pitch_deg=pitch,
                            yaw_deg=yaw, hfov_deg=self.hfov_deg, t_ns=t_ns))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        try:
            self.conn.close()
        except Exception:
            pass


_KEYS = {"srt": {"path", "time_base", "utc_offset_h"}, "csv": {"path", "time_base", "attitude"}, "mavlink": {"url"}}
_COMMON = {"offset_s", "alt_offset_m", "max_gap_s"}
# Keys [telemetry] always carries (with their defaults) whichever reader it names: ignored when not this one's.
_SETTINGS = {"path", "url", "time_base", "attitude", "utc_offset_h"}


def open_telemetry(cfg: dict[str, Any], camera: dict[str, Any] | None = None):
    """The `[telemetry]` table -> a reader. Keys: source = "srt" | "csv" | "mavlink"; path (srt, csv) or url
    (mavlink); time_base, offset_s, alt_offset_m, max_gap_s; csv: attitude; srt: utc_offset_h.
    hfov and mounting angles come from `[camera]`."""
    cfg = dict(cfg or {})
    camera = dict(camera or {})
    kind = cfg.pop("source", None)
    unknown = sorted(set(cfg) - _SETTINGS - _COMMON - _KEYS.get(kind, set()))
    if unknown:
        raise TelemetryError(f"telemetry: a {kind} reader takes no {', '.join(unknown)}")
    mount = Mount.from_config(camera)
    hfov = float(camera.get("hfov_deg", 80.0))
    common = {k: cfg[k] for k in ("offset_s", "alt_offset_m", "max_gap_s") if k in cfg}
    if kind in ("srt", "csv"):
        if "path" not in cfg:
            raise TelemetryError(f"telemetry.path: a {kind} source needs a path")
        cls = SrtTelemetry if kind == "srt" else CsvTelemetry
        extra = {k: cfg[k] for k in (("utc_offset_h",) if kind == "srt" else ("attitude",)) if k in cfg}
        return cls(cfg["path"], hfov_deg=hfov, mount=mount, time_base=cfg.get("time_base", "video"), **common, **extra)
    if kind == "mavlink":
        return MavlinkTelemetry(cfg.get("url", "udpin:0.0.0.0:14550"), hfov_deg=hfov, mount=mount, **common)
    raise TelemetryError(f"telemetry.source {kind!r}: expected srt, csv or mavlink")

