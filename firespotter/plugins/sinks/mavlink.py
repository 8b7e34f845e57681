"""mavlink: fire alerts to a ground control station: STATUSTEXT (shown by every GCS) and FIRE_DETECTION
(the firespotter dialect, id 43000; see mavlink_dialect/), plus a HEARTBEAT each second so the GCS lists the
component. With `map_pins` each fire site also goes out as a CAMERA_IMAGE_CAPTURED at the fire's centre, which
stock QGroundControl draws on its map as a camera-trigger pin (docs/wire-format.md, "Pins on a stock ground
station": why that message and not ADS-B).

MAVLink has no acknowledgement for these messages, so this sink keeps no outbox: it is the fast alert path
next to the zenoh/mqtt sinks, which store and forward. The same fire gate applies (at most one message every
`min_interval_ms` unless the fire changes materially). A link that fails (e.g. `Network is unreachable` while
the radio is down) is reopened with backoff; messages that could not be sent meanwhile are counted as dropped.

    [[sinks]]
    type = "mavlink"
    url = "udpout:192.168.1.10:14550"   # the GCS; or tcp:HOST:PORT, /dev/ttyTHS1,57600 (a radio)
    source_system = 1                   # the vehicle's system id
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from firespotter.net import wire
from firespotter.net.gate import FireGate
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import SinkSpec, module_available

log = logging.getLogger("firespotter.sinks.mavlink")

SEVERITY = {"emergency": 0, "alert": 1, "critical": 2, "error": 3, "warning": 4, "notice": 5, "info": 6}
ALERT = {"none": 0, "suspect": 1, "fire": 2}
SOURCE_STATE = {"connecting": 0, "streaming": 1, "stalled": 2, "reconnecting": 3, "ended": 4, "failed": 5}
GEOREF = {"no_pose": 0, "no_camera": 0, "ok": 1, "failed": 2}
UNKNOWN = 2**31 - 1


class MavlinkOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field("udpout:127.0.0.1:14550", description="pymavlink connection string of the GCS link")
    drone_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    source_system: int = Field(1, ge=1, le=255)
    source_component: int = Field(191, ge=1, le=255, description="191 = MAV_COMP_ID_ONBOARD_COMPUTER")
    dialect: str = Field("common", description="pymavlink dialect for STATUSTEXT/HEARTBEAT (common, ardupilotmega)")
    min_interval_ms: float = Field(1000.0, ge=0)
    change_frac: float = Field(0.2, ge=0)
    min_alert: Literal["suspect", "fire"] = Field("fire", description="lowest alert level that is sent")
    statustext: bool = Field(True, description="send a STATUSTEXT line the GCS shows to the pilot")
    severity: Literal["emergency", "alert", "critical", "error", "warning", "notice", "info"] = Field(
        "alert", description="STATUSTEXT severity (MAV_SEVERITY)")
    fire_detection: bool = Field(True, description="send the firespotter FIRE_DETECTION message (position, area, confidence)")
    heartbeat_s: float = Field(1.0, ge=0, description="0 = no heartbeat")
    map_pins: bool = Field(True, description="a CAMERA_IMAGE_CAPTURED pin at each geo-referenced fire site")
    pin_spacing_m: float = Field(25.0, ge=0, description="no new pin within this distance of one already sent")
    max_backoff_s: float = Field(30.0, gt=0)


def statustext_for(msg: dict[str, Any]) -> str:
    """At most 50 characters, the most useful first: 'FIRE uav-01 3 reg 1234m2 46.12345,7.12345'."""
    drone = msg["drone_id"][:12]
    if not msg["regions"]:
        return f"FIRE OVER {drone}"[:50]
    word = "FIRE" if msg["alert"] == "fire" else "FIRE?"
    parts = [word, drone, f"{len(msg['regions'])}reg"]
    if msg["area_m2"] is not None:
        parts.append(f"{msg['area_m2']:.0f}m2")
        lat, lon = _centroid(msg)
        if lat is not None:
            parts.append(f"{lat:.5f},{lon:.5f}")
    else:
        parts.append(f"{sum(r['area_px'] for r in msg['regions'])}px nopose")
    return " ".join(parts)[:50]


def _centroid(msg: dict[str, Any]) -> tuple[float | None, float | None]:
    """Area-weighted centroid of the geo polygons (vertex mean per polygon; fine at fire scale)."""
    tot = lat = lon = 0.0
    for r in msg["regions"]:
        if not r["geo"]:
            continue
        ring = r["geo"]["coordinates"][0][:-1]
        w = r["area_m2"] or 1e-6
        lon += w * sum(p[0] for p in ring) / len(ring)
        lat += w * sum(p[1] for p in ring) / len(ring)
        tot += w
    return (lat / tot, lon / tot) if tot else (None, None)


def fire_detection_fields(msg: dict[str, Any]) -> dict[str, Any]:
    """A wire v1 fire message -> FIRE_DETECTION fields."""
    lat, lon = _centroid(msg)
    pts = [p for r in msg["regions"] if r["geo"] for p in r["geo"]["coordinates"][0]]
    e7 = lambda v: int(round(v * 1e7))  # noqa: E731
    return {
        "time_usec": msg["t_capture_ns"] // 1000,
        "seq": msg["seq"] & 0xFFFFFFFF,
        "lat": UNKNOWN if lat is None else e7(lat),
        "lon": UNKNOWN if lon is None else e7(lon),
        "lat_min": e7(min(p[1] for p in pts)) if pts else UNKNOWN,
        "lat_max": e7(max(p[1] for p in pts)) if pts else UNKNOWN,
        "lon_min": e7(min(p[0] for p in pts)) if pts else UNKNOWN,
        "lon_max": e7(max(p[0] for p in pts)) if pts else UNKNOWN,
        "area_m2": float("nan") if msg["area_m2"] is None else float(msg["area_m2"]),
        "area_px": min(sum(r["area_px"] for r in msg["regions"]), 2**32 - 1),
        "latency_ms": min(int(msg["latency_ms"]), 65535),
        "regions": min(len(msg["regions"]), 255),
        "alert": ALERT[msg["alert"]],
        "source_state": SOURCE_STATE[msg["source_state"]],
        "georef": GEOREF[msg["georef"]],
        "confidence": int(round(100 * max((r["confidence"]["peak"] for r in msg["regions"]), default=0.0))),
        "msg_id": list(bytes.fromhex(msg["id"])),
        "drone_id": msg["drone_id"][:16].encode("ascii"),
    }


class MavlinkSink:
    needs_image = False

    def __init__(self, options: MavlinkOptions, name: str = "mavlink"):
        self.name = name
        self.options = options
        self.drone_id = options.drone_id or "drone-1"
        self.gate = FireGate(options.min_interval_ms, options.change_frac, options.min_alert)
        self.conn = None
        self.sent = {"STATUSTEXT": 0, "FIRE_DETECTION": 0, "HEARTBEAT": 0, "CAMERA_IMAGE_CAPTURED": 0}
        self._pins: list[tuple[float, float]] = []  # (lat, lon) of pins sent this run, newest last
        self._t0 = time.monotonic()
        self.dropped = 0
        self.link_error: str | None = None
        self._retry_at = 0.0
        self._backoff = 0.5
        self._lock = threading.Lock()
        self._hb_stop = threading.Event()
        self._hb: threading.Thread | None = None
        self._started = False

    def start(self, info: dict[str, Any] | None = None) -> None:
        if self._started:
            return
        self._started = True
        info = info or {}
        if not self.options.drone_id and info.get("drone_id"):
            self.drone_id = str(info["drone_id"])
        self._connect()
        if self.options.heartbeat_s > 0:
            self._hb = threading.Thread(target=self._heartbeat, name=f"mavlink-hb-{self.name}", daemon=True)
            self._hb.start()

    def _connect(self) -> bool:
        os.environ.setdefault("MAVLINK20", "1")
        from pymavlink import mavutil

        from .mavlink_dialect import register

        try:
            conn = mavutil.mavlink_connection(self.options.url, dialect=self.options.dialect,
                                              source_system=self.options.source_system,
                                              source_component=self.options.source_component, autoreconnect=True)
            register(conn.mav)
        except Exception as exc:
            self._link_failed(f"cannot open {self.options.url}: {exc}")
            return False
        self.conn = conn
        if self.link_error:
            log.info("mavlink sink %s: link %s open again", self.name, self.options.url)
        self.link_error = None
        self._backoff = 0.5
        return True

    def _link_failed(self, why: str) -> None:
        first = self.link_error is None
        self.link_error = why
        self._retry_at = time.monotonic() + self._backoff
        if first:
            log.error("mavlink sink %s: %s; retrying with backoff (alerts meanwhile are dropped, the outbox sinks keep theirs)",
                      self.name, why)
        self._backoff = min(self._backoff * 2, self.options.max_backoff_s)
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _send(self, kind: str, build) -> bool:
        with self._lock:
            if self.conn is None:
                if time.monotonic() < self._retry_at or not self._connect():
                    self.dropped += 1
                    return False
            try:
                self.conn.mav.send(build(self.conn.mav))
            except OSError as exc:
                self._link_failed(f"send to {self.options.url} failed: {exc}")
                self.dropped += 1
                return False
            self.sent[kind] += 1
            return True

    def send(self, result) -> None:
        if not self._started:
            self.start({})
        if not self.gate.admit(result):
            return
        msg = wire.fire_message(result, self.drone_id, mask_max_side=0)  # geo polygons: the `geo` processor's
        if self.options.statustext:
            text = statustext_for(msg).encode("ascii", "replace")
            sev = SEVERITY[self.options.severity] if msg["regions"] else SEVERITY["notice"]
            self._send("STATUSTEXT", lambda mav: mav.statustext_encode(sev, text))
        if self.options.fire_detection:
            from .mavlink_dialect import MAVLink_fire_detection_message

            fields = fire_detection_fields(msg)
            self._send("FIRE_DETECTION", lambda mav: MAVLink_fire_detection_message(**fields))
        if self.options.map_pins:
            for fields in self._new_pins(msg):
                self._send("CAMERA_IMAGE_CAPTURED", lambda mav, f=fields: mav.camera_image_captured_encode(**f))

    def _new_pins(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        """CAMERA_IMAGE_CAPTURED fields for each fire site farther than pin_spacing_m from every pin sent so far:
        a GCS keeps these pins for the flight, so a fire seen for minutes must not bury the map."""
        from firespotter.runtime.geo import lonlat_to_ne

        out = []
        for k, r in enumerate(msg["regions"]):
            if not r["geo"]:
                continue
            ring = r["geo"]["coordinates"][0][:-1]
            lon, lat = sum(p[0] for p in ring) / len(ring), sum(p[1] for p in ring) / len(ring)
            if self._pins:
                ne = lonlat_to_ne([(p[1], p[0]) for p in self._pins], lat, lon)
                if float(min((n * n + e * e) ** 0.5 for n, e in ne)) < self.options.pin_spacing_m:
                    continue
            self._pins = (self._pins + [(lat, lon)])[-512:]
            area = f" {r['area_m2']:.0f}m2" if r["area_m2"] is not None else ""
            out.append({
                "time_boot_ms": int((time.monotonic() - self._t0) * 1000) & 0xFFFFFFFF,
                "time_utc": msg["t_capture_ns"] // 1000, "camera_id": 0,
                "lat": int(round(lat * 1e7)), "lon": int(round(lon * 1e7)),
                "alt": 0, "relative_alt": 0,  # on the ground; its height above the sea is not known onboard
                "q": [1.0, 0.0, 0.0, 0.0], "image_index": len(self._pins) - 1,
                "capture_result": 1,  # QGroundControl draws only successful captures
                "file_url": f"FIRE {msg['drone_id'][:16]} #{k + 1}{area} peak {r['confidence']['peak']:.2f}".encode()[:205],
            })
        return out

    def _heartbeat(self) -> None:
        from pymavlink import mavutil

        m = mavutil.mavlink
        while not self._hb_stop.wait(self.options.heartbeat_s):
            self._send("HEARTBEAT", lambda mav: mav.heartbeat_encode(
                m.MAV_TYPE_ONBOARD_CONTROLLER, m.MAV_AUTOPILOT_INVALID, 0, 0, m.MAV_STATE_ACTIVE))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._hb_stop.set()
        if self._hb is not None:
            self._hb.join(2.0)
        with self._lock:
            if self.conn is not None:
                try:
                    self.conn.close()
                except Exception:
                    pass
                self.conn = None


def make_mavlink_sink(options: MavlinkOptions, name: str = "mavlink") -> MavlinkSink:
    return MavlinkSink(options, name)


@hookimpl
def register_sinks():
    return [SinkSpec("mavlink", make_mavlink_sink, "STATUSTEXT + FIRE_DETECTION alerts to a GCS (no outbox)",
                     options_model=MavlinkOptions, available=module_available("pymavlink.mavutil", extra="mavlink"))]
