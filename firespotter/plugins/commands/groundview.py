"""The ground view: `firespotter listen --http ADDR` serves a live map of the fleet (DESIGN §8).

One page (groundview_static/index.html + app.js, Leaflet vendored beside it, no build step) fed by Server-Sent
Events from the same messages `firespotter listen` receives:

- the fleet fire map: the union of the recent fire polygons (FleetMap), coloured by age: the union is taken
  over nested age bands (last minute, 5 min, 15 min, ..., the whole window) drawn oldest first, so each place
  shows when a drone last saw fire there;
- each drone: position and heading (from the pose of its latest `fire` message: `state` heartbeats carry no
  pose), camera footprint (the frame's outline projected onto flat ground), track, source state, fps, outbox
  depth, alert, and the latest mask thumbnail; LOST once silent for `lost_after_s`;
- exports of the fire map as GeoJSON and KML, now or at any time of the last hour (the time slider);
- an offline background (a metric grid and a scale bar) or tiles: a URL template, a local XYZ folder or a
  raster MBTiles file, the last two served by this server.

Times: a detection is placed at its capture time (`t_capture_ns`), so a backlog drained after a link outage
lands where it belongs on the time slider; a capture time in the future (a drone's clock ahead) is replaced by
the receive time. Liveness (LOST) uses receive times only.

Served by the standard library (ThreadingHTTPServer): bound to 127.0.0.1 unless told otherwise; any other
address needs an access token (query `?token=`, then a cookie; or `Authorization: Bearer`). Without a token the
Host header must be a loopback name (DNS rebinding).
"""

from __future__ import annotations

import hmac
import http.cookies
import ipaddress
import json
import logging
import math
import queue
import re
import socket
import sqlite3
import struct
import threading
import time
import xml.etree.ElementTree as ET
import zlib
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from firespotter.plugins.commands.listen import (FleetMap, GroundStation, _Detection, _iso, _lonlat_ok, fire_rings,
                                                 pose_lonlat)
from firespotter.runtime import wire
from firespotter.runtime.errors import FirespotterError

log = logging.getLogger("firespotter.groundview")

STATIC = Path(__file__).with_name("groundview_static")
HISTORY_S = 3600.0  # the time slider's reach
AGE_EDGES_S = (60.0, 300.0, 900.0)  # fire age bands (plus the window itself)
BAND_COLOURS = ("#d7191c", "#f46d43", "#fdae61", "#a6761d", "#8c7b6b")  # newest -> oldest
TOKEN_RE = re.compile(r"[A-Za-z0-9._~-]{8,256}")
COOKIE = "firespotter_gv"
MAX_THUMB_B64 = 400_000
MAX_TRACK = 2000
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


# --- helpers ----------------------------------------------------------------------------------------------


def age_edges(window_s: float) -> list[float]:
    return sorted({e for e in AGE_EDGES_S if e < window_s} | {float(window_s)})


def finite(obj: Any) -> Any:
    """A copy of obj with every non-finite float replaced by None (JSON has no NaN; a browser's JSON.parse
    refuses it, and Python's json module accepts it from the network)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def to_json(obj: Any) -> bytes:
    return json.dumps(finite(obj), separators=(",", ":"), allow_nan=False).encode("utf-8")


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _parse_iso(s: str | None) -> float | None:
    if not s:
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def footprint(pose: dict[str, Any], frame: dict[str, Any], per_edge: int = 8) -> list[list[float]] | None:
    """The camera's view on flat ground: the frame's outline (per_edge points a side) projected through the
    pose, far points clipped at 20 x altitude as in geo-referencing. A closed (lon, lat) ring, or None."""
    import numpy as np

    from firespotter.runtime.geo import Camera, ne_to_lonlat, project_to_ground
    from firespotter.runtime.types import Pose

    try:
        vals = {k: _num(pose.get(k)) for k in ("lat", "lon", "alt_agl_m", "roll_deg", "pitch_deg", "yaw_deg", "hfov_deg")}
        w, h = int(frame["width"]), int(frame["height"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    if any(v is None for v in vals.values()) or w < 1 or h < 1 or vals["alt_agl_m"] <= 0:
        return None
    if not _lonlat_ok(vals["lon"], vals["lat"]) or not 0 < vals["hfov_deg"] < 180:
        return None
    s = np.linspace(0.0, 1.0, per_edge, endpoint=False)
    pts = np.concatenate([np.stack([s * w, np.zeros_like(s)], 1), np.stack([np.full_like(s, w), s * h], 1),
                          np.stack([(1 - s) * w, np.full_like(s, h)], 1), np.stack([np.zeros_like(s), (1 - s) * h], 1)])
    try:
        p = Pose(**vals)
        ne, _ = project_to_ground(pts, p, Camera.from_hfov(w, h, p.hfov_deg))
        ll = ne_to_lonlat(ne, p.lat, p.lon)
    except (ValueError, FloatingPointError):
        return None
    if not np.isfinite(ll).all():
        return None
    ring = [[round(float(a), 7), round(float(b), 7)] for a, b in ll]
    return ring + [ring[0]]


def _decimate(poly: Any, max_pts: int) -> list[list[int]]:
    pts = [p for p in poly if isinstance(p, list) and len(p) == 2]
    if len(pts) > max_pts:
        step = math.ceil(len(pts) / max_pts)
        pts = pts[::step]
    return pts


def thumbnail(msg: dict[str, Any], t: float) -> dict[str, Any]:
    """The page's per-drone thumbnail of a fire message: the mask PNG (checked: it must decode, or the page
    would show a broken image) as a data: URL, and the region outlines in frame pixels."""
    note = None
    src = None
    mask = msg.get("mask")
    if mask:
        if len(mask.get("data", "")) > MAX_THUMB_B64:
            note = "mask too large to show"
        else:
            try:
                wire.decode_mask(mask)
                src = "data:image/png;base64," + mask["data"]
            except wire.WireError as exc:
                note = f"mask unreadable ({exc})"[:120]
    elif msg.get("mask_dropped"):
        note = "mask dropped by the drone's outbox"
    else:
        note = "no mask sent"
    regions = [_decimate(r.get("polygon") or [], 120) for r in (msg.get("regions") or [])[:16]]
    return {"t": t, "seq": msg.get("seq"), "src": src, "note": note, "alert": msg.get("alert"),
            "frame": [msg["frame"]["width"], msg["frame"]["height"]], "regions": regions}


def clusters(dets: list[_Detection], cell_deg: float = 0.01) -> list[list[_Detection]]:
    """Detections grouped by place: those whose bounding boxes share a cell of a cell_deg grid (~1 km) are in
    one group. Each group is dissolved on its own grid, so fires far apart (a fleet spread over 50 km) keep the
    fleet map's fine cells instead of sharing one coarse raster."""
    parent = list(range(len(dets)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[tuple[int, int], int] = {}
    for i, d in enumerate(dets):
        lons = [p[0] for r in d.rings for p in r]
        lats = [p[1] for r in d.rings for p in r]
        x0, x1 = math.floor(min(lons) / cell_deg), math.floor(max(lons) / cell_deg)
        y0, y1 = math.floor(min(lats) / cell_deg), math.floor(max(lats) / cell_deg)
        if (x1 - x0 + 1) * (y1 - y0 + 1) > 400:  # a huge outline (a broken georef): it joins what it overlaps
            x1, y1 = min(x1, x0 + 19), min(y1, y0 + 19)
        for key in ((x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)):
            j = owner.setdefault(key, i)
            if j != i:
                parent[find(i)] = find(j)
    groups: dict[int, list[_Detection]] = {}
    for i, d in enumerate(dets):
        groups.setdefault(find(i), []).append(d)
    return list(groups.values())


def union_features(dets: list[_Detection], window_s: float, max_cells: int = 4096) -> list[dict[str, Any]]:
    """The fleet map's fire polygons (FleetMap's union, properties included) of these detections."""
    feats: list[dict[str, Any]] = []
    for group in clusters(dets):
        fm = FleetMap(window_s=window_s, max_cells=max_cells)
        fm.detections = group
        feats += [f for f in fm.geojson()["features"] if f["properties"]["kind"] == "fire"]
    return feats


def _detection_time(msg: dict[str, Any], now: float) -> float:
    t = msg.get("t_capture_ns")
    if isinstance(t, int) and not isinstance(t, bool):
        tc = t / 1e9
        if tc <= now + 1.0:
            return min(tc, now)
    return now


# --- tiles ------------------------------------------------------------------------------------------------


def _png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)  # 1x1 RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00\x00")) + chunk(b"IEND", b"")


EMPTY_TILE = _png_1x1()
_TILE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}


@dataclass
class TileSource:
    """A map background: a remote URL template (the browser fetches it) or local tiles this server serves."""

    kind: str  # "url" | "xyz" | "mbtiles"
    url: str  # the template the page uses
    attribution: str = ""
    min_zoom: int = 0
    max_zoom: int = 19
    csp_origin: str = ""
    path: Path | None = None
    ext: str = "png"
    _db: sqlite3.Connection | None = None
    _lock: threading.Lock | None = None

    def client_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "attribution": self.attribution, "minZoom": self.min_zoom,
                "maxNativeZoom": self.max_zoom}

    def get(self, z: int, x: int, y: int) -> tuple[bytes, str] | None:
        if self.kind == "xyz" and self.path is not None:
            f = self.path / str(z) / str(x) / f"{y}.{self.ext}"
            try:
                return f.read_bytes(), _TILE_TYPES[self.ext]
            except OSError:
                return None
        if self.kind == "mbtiles" and self._db is not None and self._lock is not None:
            if not 0 <= y < (1 << z):
                return None
            with self._lock:
                row = self._db.execute("SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                                       (z, x, (1 << z) - 1 - y)).fetchone()  # MBTiles rows are TMS (y up)
            return (bytes(row[0]), _TILE_TYPES.get(self.ext, "image/png")) if row else None
        return None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def open_tiles(spec: str, attribution: str = "") -> TileSource:
    """--tiles: a URL template with {z} {x} {y} (and optionally {s}), an XYZ folder, or a raster .mbtiles file."""
    if re.match(r"^https?://", spec, re.I):
        parts = urlsplit(spec)
        if not all(k in spec for k in ("{z}", "{x}", "{y}")):
            raise FirespotterError(f"--tiles {spec}: a tile URL needs {{z}}, {{x}} and {{y}}",
                                   "e.g. https://tile.example.org/{z}/{x}/{y}.png")
        host = parts.netloc.replace("{s}", "*")
        if not re.fullmatch(r"[A-Za-z0-9.*:\[\]-]+", host):
            raise FirespotterError(f"--tiles {spec}: unexpected host {parts.netloc!r}")
        return TileSource("url", spec, attribution, csp_origin=f"{parts.scheme.lower()}://{host}")
    path = Path(spec).expanduser()
    if not path.exists():
        raise FirespotterError(f"--tiles {spec}: no such file or folder",
                               "give a tile URL, an XYZ folder ({z}/{x}/{y}.png) or an .mbtiles file")
    if path.is_dir():
        zooms = sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) <= 30)
        ext = None
        for z in zooms:
            for xdir in (path / str(z)).iterdir():
                if xdir.is_dir():
                    for f in xdir.iterdir():
                        if f.suffix[1:].lower() in _TILE_TYPES:
                            ext = f.suffix[1:]
                            break
                if ext:
                    break
            if ext:
                break
        if not zooms or ext is None:
            raise FirespotterError(f"--tiles {spec}: no tiles in this folder", "expected {z}/{x}/{y}.png (or .jpg, .webp)")
        return TileSource("xyz", "tiles/{z}/{x}/{y}", attribution, min_zoom=zooms[0], max_zoom=zooms[-1],
                          path=path.resolve(), ext=ext)
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        db.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles LIMIT 1").fetchall()
        meta = {}
        try:
            meta = dict(db.execute("SELECT name, value FROM metadata").fetchall())
        except sqlite3.DatabaseError:
            pass
        zr = db.execute("SELECT MIN(zoom_level), MAX(zoom_level) FROM tiles").fetchone()
    except sqlite3.DatabaseError as exc:
        raise FirespotterError(f"--tiles {spec}: not an MBTiles file ({exc})") from None
    fmt = str(meta.get("format") or "png").lower()
    if fmt not in _TILE_TYPES:
        db.close()
        raise FirespotterError(f"--tiles {spec}: {fmt} tiles are not supported", "give raster tiles: png, jpg or webp")
    mn = int(meta.get("minzoom", zr[0] if zr[0] is not None else 0))
    mx = int(meta.get("maxzoom", zr[1] if zr[1] is not None else 19))
    return TileSource("mbtiles", "tiles/{z}/{x}/{y}", attribution or str(meta.get("attribution") or ""), min_zoom=mn,
                      max_zoom=mx, path=path.resolve(), ext=fmt, _db=db, _lock=threading.Lock())


# --- address and exposure ---------------------------------------------------------------------------------


def parse_http_addr(addr: str) -> tuple[str, int]:
    """--http: "PORT", "HOST:PORT" or "[V6]:PORT" -> (host, port); the host defaults to 127.0.0.1."""
    a = addr.strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", a) or re.fullmatch(r"([^:\s]*):(\d+)", a) or re.fullmatch(r"()(\d+)", a)
    if not m:
        raise FirespotterError(f"--http {addr!r}: expected PORT or HOST:PORT", "e.g. --http 8765 or --http 127.0.0.1:8765")
    host, port = m.group(1) or "127.0.0.1", int(m.group(2))
    if not 0 <= port <= 65535:
        raise FirespotterError(f"--http {addr!r}: port {port} is out of range")
    return host, port


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Anything wider than loopback serves the fleet's positions and fires to the network: it needs a token."""
    if token:
        if not TOKEN_RE.fullmatch(token):
            raise FirespotterError("--token: expected 8-256 characters of A-Z a-z 0-9 . _ ~ -",
                                   "e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))'")
        return
    if not is_loopback(host):
        raise FirespotterError(f"--http {host}: serving beyond this machine needs an access token",
                               "set FIRESPOTTER_LISTEN_TOKEN (or --token), or bind 127.0.0.1 and use an SSH tunnel")


# --- the live state ---------------------------------------------------------------------------------------


class _Client:
    def __init__(self, maxsize: int):
        self.q: queue.Queue[bytes] = queue.Queue(maxsize)
        self.evicted = False


class EventBus:
    """Fan-out of encoded SSE events to connected pages; a page that cannot keep up is dropped (its
    EventSource reconnects and starts again from a snapshot)."""

    def __init__(self, max_clients: int = 32, queue_size: int = 500):
        self.max_clients = max_clients
        self.queue_size = queue_size
        self.clients: set[_Client] = set()
        self.lock = threading.Lock()

    def subscribe(self) -> _Client | None:
        with self.lock:
            if len(self.clients) >= self.max_clients:
                return None
            c = _Client(self.queue_size)
            self.clients.add(c)
            return c

    def unsubscribe(self, c: _Client) -> None:
        with self.lock:
            self.clients.discard(c)

    def publish(self, event: str, data: Any) -> None:
        with self.lock:
            if not self.clients:
                return
            clients = list(self.clients)
        payload = sse(event, data)
        for c in clients:
            try:
                c.q.put_nowait(payload)
            except queue.Full:
                c.evicted = True
                self.unsubscribe(c)


def sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode("ascii") + b"\ndata: " + to_json(data) + b"\n\n"


class GroundView:
    """What the page shows, kept from the ground station's messages (an observer of GroundStation)."""

    def __init__(self, gs: GroundStation, *, station: str = "ground", window_s: float = 900.0, lost_after_s: float = 15.0,
                 history_s: float = HISTORY_S, tiles: TileSource | None = None, clock: Callable[[], float] = time.time):
        self.gs = gs
        self.station = station
        self.window_s = float(window_s)
        self.lost_after_s = float(lost_after_s)
        self.history_s = max(float(history_s), self.window_s)
        self.edges = age_edges(self.window_s)
        self.tiles = tiles
        self.clock = clock
        self.lock = threading.RLock()
        self.drones: dict[str, dict[str, Any]] = {}
        self.thumbs: dict[str, dict[str, Any]] = {}
        self.tracks: dict[str, deque[list[float]]] = {}
        self.history: list[_Detection] = []
        self.bus = EventBus()
        self.fires_dirty = True
        self._fires: dict[str, Any] | None = None
        self._fires_computed = 0.0
        self._cache: dict[tuple[int, int], dict[str, Any]] = {}
        gs.observers.append(self.on_message)

    # -- messages (called by GroundStation under its lock: quick, no I/O)

    def on_message(self, kind: str, msg: dict[str, Any], now: float, duplicate: bool) -> None:
        drone = msg["drone_id"]
        with self.lock:
            d = self.drones.get(drone)
            if d is None:
                d = self.drones[drone] = {"id": drone, "state": "?", "running": True, "lost": False, "fps": None,
                                          "frames": None, "no_frame_s": None, "outbox": None, "link": None,
                                          "alert": "none", "fires": 0, "regions": 0, "area_m2": None,
                                          "temperature_c": None, "model": None, "adapter": None, "source_id": None,
                                          "georef": None, "latency_ms": None, "pose": None, "pose_t": None,
                                          "footprint": None, "last_seen": now, "first_seen": now, "duplicates": 0}
            d["last_seen"] = now
            d["lost"] = False
            thumb = None
            if kind == "state":
                d["running"] = bool(msg["running"])
                d["state"] = msg["source_state"] if msg["running"] else "stopped"
                d["fps"] = _num(msg.get("fps"))
                d["frames"] = msg.get("frames")
                d["no_frame_s"] = _num(msg.get("no_frame_s"))
                ob = msg.get("outbox")
                d["outbox"] = {k: ob.get(k) for k in ("pending", "bytes", "oldest_age_s", "dropped", "masks_dropped",
                                                      "degraded")} if isinstance(ob, dict) else None
                lk = msg.get("link") or {}
                d["link"] = {"transport": lk.get("transport"), "connected": lk.get("connected"), "error": lk.get("error")}
                d["temperature_c"] = _num(msg.get("temperature_c"))
                d["model"] = (msg.get("model") or {}).get("id")
                ad = msg.get("adapter") or {}
                d["adapter"] = {"name": ad.get("name"), "state": ad.get("state")}
                if "alert" in msg:
                    d["alert"] = msg["alert"]
            elif duplicate:
                d["duplicates"] += 1
            else:
                t = _detection_time(msg, now)
                d["running"] = True
                d["state"] = msg["source_state"]
                d["alert"] = msg["alert"]
                d["regions"] = len(msg["regions"])
                d["area_m2"] = _num(msg.get("area_m2"))
                d["fires"] += 1 if msg["regions"] else 0
                d["source_id"] = msg.get("source_id")
                d["model"] = (msg.get("model") or {}).get("id")
                d["georef"] = msg.get("georef")
                d["latency_ms"] = _num(msg.get("latency_ms"))
                pos = pose_lonlat(msg)
                if pos is not None and (d["pose_t"] is None or t >= d["pose_t"]):
                    pose = msg["pose"]
                    d["pose"] = {"lon": pos[0], "lat": pos[1], "alt_agl_m": _num(pose.get("alt_agl_m")),
                                 "yaw_deg": _num(pose.get("yaw_deg")), "pitch_deg": _num(pose.get("pitch_deg")),
                                 "hfov_deg": _num(pose.get("hfov_deg"))}
                    d["pose_t"] = t
                    d["footprint"] = footprint(pose, msg["frame"])
                    self._track(drone, t, pos, d["pose"]["yaw_deg"])
                thumb = self.thumbs[drone] = thumbnail(msg, t)
                rings = fire_rings(msg)
                if rings and t >= now - self.history_s:
                    self.history.append(_Detection(t, drone, msg["id"], msg["seq"], msg["t_capture_ns"], rings))
                    self.fires_dirty = True
            event: dict[str, Any] = {"drone": dict(d)}
            if thumb is not None:
                event["thumb"] = thumb
            if d["pose"] is not None and kind == "fire" and not duplicate:
                event["track_point"] = self.tracks[drone][-1] if self.tracks.get(drone) else None
        self.bus.publish("drone", event)

    def _track(self, drone: str, t: float, pos: tuple[float, float], yaw: float | None) -> None:
        tr = self.tracks.setdefault(drone, deque(maxlen=MAX_TRACK))
        pt = [round(t, 3), round(pos[0], 7), round(pos[1], 7), yaw]
        if tr:
            last = tr[-1]
            moved = math.hypot((pos[0] - last[1]) * 111320 * math.cos(math.radians(pos[1])), (pos[1] - last[2]) * 110540)
            if moved < 2.0 and t - last[0] < 30.0:
                tr[-1] = pt if t >= last[0] else last  # stayed put: keep the newest
                return
            if t < last[0]:  # a late (backlogged) position: keep the track in time order
                items = sorted([*tr, pt], key=lambda p: p[0])
                tr.clear()
                tr.extend(items[-MAX_TRACK:])
                return
        tr.append(pt)

    # -- time passing (the server's ticker thread)

    def tick(self) -> None:
        now = self.clock()
        lost = []
        with self.lock:
            for d in self.drones.values():
                if not d["lost"] and d["running"] and now - d["last_seen"] > self.lost_after_s:
                    d["lost"] = True
                    lost.append(dict(d))
        for d in lost:
            log.warning("drone %s lost: nothing heard for %.0f s", d["id"], now - d["last_seen"])
            self.bus.publish("drone", {"drone": d})
        due = (self.fires_dirty and now - self._fires_computed >= 1.0) or now - self._fires_computed >= 10.0
        if due:
            self.fires_dirty = False
            fires = self.fires_at(now, live=True)
            with self.lock:
                self._fires, self._fires_computed = fires, now
            self.bus.publish("fires", fires)
        self.bus.publish("tick", {"now": now, "counters": self.counters()})

    def prune(self) -> None:
        horizon = self.clock() - self.history_s
        with self.lock:
            self.history = [d for d in self.history if d.t >= horizon]
            for tr in self.tracks.values():
                while tr and tr[0][0] < horizon:
                    tr.popleft()
            self._cache.clear()

    def counters(self) -> dict[str, Any]:
        gs = self.gs
        return {"messages": gs.messages, "fire_messages": gs.fire_messages, "duplicates": gs.duplicates,
                "malformed": gs.bad, "last_malformed": gs.last_bad, "drones": len(self.drones),
                "pages": len(self.bus.clients)}

    # -- views

    def config(self) -> dict[str, Any]:
        return {"station": self.station, "window_s": self.window_s, "history_s": self.history_s,
                "lost_after_s": self.lost_after_s, "edges_s": self.edges,
                "band_colours": list(BAND_COLOURS[: len(self.edges)]),
                "tiles": self.tiles.client_config() if self.tiles else None}

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        with self.lock:
            fires = self._fires if self._fires is not None and not self.fires_dirty else None
        if fires is None:
            fires = self.fires_at(now, live=True)
            with self.lock:
                self._fires, self._fires_computed = fires, now
                self.fires_dirty = False
        with self.lock:
            return {"now": now, "config": self.config(), "counters": self.counters(),
                    "drones": [dict(d) for d in sorted(self.drones.values(), key=lambda d: d["id"])],
                    "thumbs": dict(self.thumbs), "tracks": {k: list(v) for k, v in self.tracks.items()},
                    "fires": fires}

    def _detections(self, t: float, span: float) -> list[_Detection]:
        with self.lock:
            return [d for d in self.history if t - span <= d.t <= t]

    def fires_at(self, t: float, live: bool = False) -> dict[str, Any]:
        """The fire map at time t as nested age bands: band k is the union of the detections of the last
        edges[k] seconds before t (coarser grid than the exports: this is for the screen)."""
        key = (int(t // 5), len(self.history))
        if not live:
            with self.lock:
                hit = self._cache.get(key)
            if hit is not None:
                return hit
        dets = self._detections(t, self.window_s)
        bands = []
        for edge, colour in zip(reversed(self.edges), reversed(BAND_COLOURS[: len(self.edges)])):
            sub = [d for d in dets if t - d.t <= edge]
            if not sub:
                continue
            feats = union_features(sub, edge, max_cells=1024)
            for f in feats:
                f["properties"]["band_s"] = edge
            bands.append({"edge_s": edge, "colour": colour, "features": feats})
        out = {"t": t, "live": live, "detections": len(dets), "bands": bands}
        if not live:
            with self.lock:
                if len(self._cache) > 16:
                    self._cache.clear()
                self._cache[key] = out
        return out

    def positions_at(self, t: float) -> dict[str, tuple[float, float, float, float | None]]:
        """drone -> (lon, lat, pose time, yaw) as of time t (its last known position then, within the history)."""
        out = {}
        with self.lock:
            for drone, tr in self.tracks.items():
                for p in reversed(tr):
                    if p[0] <= t:
                        out[drone] = (p[1], p[2], p[0], p[3])
                        break
        return out

    def firemap(self, t: float | None = None) -> dict[str, Any]:
        """The fire map at t (default now) as a GeoJSON FeatureCollection (RFC 7946): the union of the fire
        polygons of the window before t, at the fleet map's full resolution, and each drone's position."""
        now = self.clock()
        t = now if t is None else t
        fc = FleetMap(window_s=self.window_s).geojson()  # the collection's frame and properties
        fc["features"] = union_features(self._detections(t, self.window_s), self.window_s)
        fc["properties"].pop("cell_m", None)
        for f in fc["features"]:
            last = _parse_iso(f["properties"].get("last_seen"))
            f["properties"]["age_s"] = None if last is None else round(max(0.0, t - last), 1)
        with self.lock:
            states = {k: (v["state"], v["lost"]) for k, v in self.drones.items()}
        for drone, (lon, lat, tp, yaw) in sorted(self.positions_at(t).items()):
            state, lost = states.get(drone, ("?", False))
            fc["features"].append({
                "type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
                "properties": {"kind": "drone", "drone_id": drone, "position_time": _iso(tp), "heading_deg": yaw,
                               **({"state": "lost" if lost else state} if t >= now - 1 else {})}})
        fc["properties"].update({"generator": "firespotter listen --http", "station": self.station, "as_of": _iso(t),
                                 "updated": _iso(now)})
        return finite(fc)

    def firemap_kml(self, t: float | None = None) -> bytes:
        return kml(self.firemap(t), self.edges)


# --- KML --------------------------------------------------------------------------------------------------

KML_NS = "http://www.opengis.net/kml/2.2"


def _kml_colour(hex_rgb: str, alpha: int) -> str:
    r, g, b = hex_rgb[1:3], hex_rgb[3:5], hex_rgb[5:7]
    return f"{alpha:02x}{b}{g}{r}"  # KML: aabbggrr


def _kml_ring(parent: ET.Element, tag: str, ring: list[list[float]]) -> None:
    b = ET.SubElement(parent, f"{{{KML_NS}}}{tag}")
    lr = ET.SubElement(b, f"{{{KML_NS}}}LinearRing")
    ET.SubElement(lr, f"{{{KML_NS}}}coordinates").text = " ".join(f"{p[0]:.7f},{p[1]:.7f},0" for p in ring)


def kml(fc: dict[str, Any], edges: list[float]) -> bytes:
    """A GeoJSON fire map (GroundView.firemap) -> KML 2.2: one Placemark per fire polygon (holes kept, styled
    by age, TimeSpan first..last seen, ExtendedData) and one per drone."""
    ET.register_namespace("", KML_NS)

    def el(parent: ET.Element, tag: str, text: Any = None, **attrs: str) -> ET.Element:
        e = ET.SubElement(parent, f"{{{KML_NS}}}{tag}", attrs)
        if text is not None:
            e.text = str(text)
        return e

    props = fc.get("properties", {})
    root = ET.Element(f"{{{KML_NS}}}kml")
    doc = el(root, "Document")
    el(doc, "name", f"firespotter fire map {props.get('station', '')} {props.get('as_of', '')}".strip())
    el(doc, "description", f"Union of the fire polygons seen by the drone fleet in the {props.get('window_s', '')} s "
                           f"before {props.get('as_of', '')} (UTC), generated by firespotter.")
    colours = BAND_COLOURS[: len(edges)]
    for edge, colour in zip(edges, colours):
        st = el(doc, "Style", id=f"age-{int(edge)}")
        ls = el(st, "LineStyle")
        el(ls, "color", _kml_colour(colour, 0xFF))
        el(ls, "width", 2)
        ps = el(st, "PolyStyle")
        el(ps, "color", _kml_colour(colour, 0x99))
    fires = el(doc, "Folder")
    el(fires, "name", "Fire perimeters")
    drones = el(doc, "Folder")
    el(drones, "name", "Drones")
    n = 0
    for f in fc.get("features", []):
        p = f.get("properties", {})
        g = f.get("geometry") or {}
        if p.get("kind") == "fire" and g.get("type") == "Polygon":
            n += 1
            pm = el(fires, "Placemark")
            area = p.get("area_m2")
            el(pm, "name", f"Fire {n}" + (f" ({area:,.0f} m²)" if isinstance(area, (int, float)) else ""))
            el(pm, "description", f"seen by {', '.join(p.get('drones') or []) or '?'}; first {p.get('first_seen')}, "
                                  f"last {p.get('last_seen')} (UTC); {p.get('detections')} detections")
            if p.get("first_seen") and p.get("last_seen"):
                ts = el(pm, "TimeSpan")
                el(ts, "begin", p["first_seen"])
                el(ts, "end", p["last_seen"])
            age = p.get("age_s")
            edge = next((e for e in edges if age is not None and age <= e), edges[-1])
            el(pm, "styleUrl", f"#age-{int(edge)}")
            ext = el(pm, "ExtendedData")
            for k in ("area_m2", "age_s", "first_seen", "last_seen", "detections"):
                data = el(ext, "Data", name=k)
                el(data, "value", "" if p.get(k) is None else p.get(k))
            data = el(ext, "Data", name="drones")
            el(data, "value", ",".join(p.get("drones") or []))
            poly = el(pm, "Polygon")
            el(poly, "tessellate", 1)
            rings = g.get("coordinates") or []
            if rings:
                _kml_ring(poly, "outerBoundaryIs", rings[0])
                for hole in rings[1:]:
                    _kml_ring(poly, "innerBoundaryIs", hole)
        elif p.get("kind") == "drone" and g.get("type") == "Point":
            pm = el(drones, "Placemark")
            el(pm, "name", p.get("drone_id"))
            el(pm, "description", f"position at {p.get('position_time')} (UTC)"
                                  + (f", {p['state']}" if p.get("state") else ""))
            pt = el(pm, "Point")
            lon, lat = g["coordinates"][:2]
            el(pt, "coordinates", f"{lon:.7f},{lat:.7f},0")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


# --- HTTP -------------------------------------------------------------------------------------------------

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".png": "image/png", ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8",
          "": "text/plain; charset=utf-8"}
_UNAUTHORIZED = (b"<!doctype html><meta charset=utf-8><title>firespotter ground view</title>"
                 b"<p>This ground station needs its access token: open <code>/?token=...</code>.</p>")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64
    gv: "GroundViewServer"


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server_version = "firespotter-groundview"
    sys_version = ""
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        except Exception as exc:
            log.warning("ground view: %s: %s: %s", self.path[:200], exc.__class__.__name__, exc)
            try:
                self._send(500, b"internal error\n", "text/plain; charset=utf-8")
            except OSError:
                pass

    # -- plumbing

    def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any, code: int = 200) -> None:
        self._send(code, to_json(obj), "application/json", {"Cache-Control": "no-store"})

    def _token(self, q: dict[str, list[str]]) -> str | None:
        if q.get("token"):
            return q["token"][0]
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        raw = self.headers.get("Cookie")
        if raw:
            try:
                c = http.cookies.SimpleCookie(raw)
            except http.cookies.CookieError:
                return None
            if COOKIE in c:
                return c[COOKIE].value
        return None

    def _host_ok(self, gv: "GroundViewServer") -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        m = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(:\d+)?", host)
        name = m.group(1) if m else host
        return name in LOOPBACK_NAMES or name == gv.host.lower() or name == f"[{gv.host.lower()}]"

    def _t(self, q: dict[str, list[str]], view: GroundView) -> float | None:
        raw = (q.get("t") or [""])[0]
        if raw in ("", "live", "now"):
            return None
        try:
            t = float(raw)
        except ValueError:
            raise _BadRequest(f"t={raw[:40]!r}: expected UNIX seconds or 'live'") from None
        if not math.isfinite(t):
            raise _BadRequest("t: not a number")
        now = view.clock()
        return min(max(t, now - view.history_s), now)

    # -- routes

    def _route(self) -> None:
        gv: GroundViewServer = self.server.gv
        view = gv.view
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        path = url.path
        if path == "/healthz":
            return self._send(200, b"ok\n", "text/plain; charset=utf-8")
        if gv.token is None and not self._host_ok(gv):
            return self._send(403, b"unexpected Host header\n", "text/plain; charset=utf-8")
        if gv.token is not None:
            tok = self._token(q)
            if not tok or not hmac.compare_digest(tok.encode(), gv.token.encode()):
                return self._send(401, _UNAUTHORIZED, "text/html; charset=utf-8", {"WWW-Authenticate": "Bearer"})
            if q.get("token") and path in ("/", "/index.html"):  # into a cookie, out of the address bar
                return self._send(303, b"", "text/plain", {
                    "Location": "./", "Set-Cookie": f"{COOKIE}={gv.token}; Path=/; HttpOnly; SameSite=Strict"})
        try:
            if path in ("/", "/index.html"):
                return self._static("index.html", page=True)
            if path.startswith("/static/"):
                return self._static(path[len("/static/"):])
            if path == "/events":
                return self._events(gv)
            if path == "/api/state":
                return self._json(view.snapshot())
            if path == "/api/fires":
                t = self._t(q, view)
                return self._json(view.fires_at(view.clock() if t is None else t, live=t is None))
            if path in ("/export/firemap.geojson", "/export/firemap.kml"):
                t = self._t(q, view)
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(view.clock() if t is None else t))
                if path.endswith(".kml"):
                    body, ctype, ext = view.firemap_kml(t), "application/vnd.google-earth.kml+xml", "kml"
                else:
                    body, ctype, ext = to_json(view.firemap(t)), "application/geo+json", "geojson"
                return self._send(200, body, ctype, {"Cache-Control": "no-store", "Content-Disposition":
                                                     f'attachment; filename="firemap-{view.station}-{stamp}.{ext}"'})
            m = re.fullmatch(r"/tiles/(\d{1,2})/(\d{1,9})/(\d{1,9})(?:\.\w+)?", path)
            if m and view.tiles is not None and view.tiles.kind != "url":
                tile = view.tiles.get(int(m.group(1)), int(m.group(2)), int(m.group(3)))
                body, ctype = tile if tile else (EMPTY_TILE, "image/png")
                return self._send(200, body, ctype, {"Cache-Control": "max-age=3600"})
        except _BadRequest as exc:
            return self._send(400, f"{exc}\n".encode(), "text/plain; charset=utf-8")
        return self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def _static(self, rel: str, page: bool = False) -> None:
        root = STATIC.resolve()
        f = (root / rel).resolve()
        if root not in f.parents or not f.is_file():
            return self._send(404, b"not found\n", "text/plain; charset=utf-8")
        headers = {"Cache-Control": "no-cache"}
        if page:
            headers["Content-Security-Policy"] = self.server.gv.csp
            headers["X-Frame-Options"] = "DENY"
        self._send(200, f.read_bytes(), _TYPES.get(f.suffix.lower(), "application/octet-stream"), headers)

    def _events(self, gv: "GroundViewServer") -> None:
        client = gv.view.bus.subscribe()
        if client is None:
            return self._send(503, b"too many pages open\n", "text/plain; charset=utf-8", {"Retry-After": "5"})
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")
            self.end_headers()
            self.wfile.write(b"retry: 2000\n\n" + sse("snapshot", gv.view.snapshot()))  # after subscribing: no gap
            last = time.monotonic()
            while not gv.stopping.is_set() and not client.evicted:
                try:
                    item = client.q.get(timeout=0.5)
                except queue.Empty:
                    if time.monotonic() - last > 15.0:
                        self.wfile.write(b": keepalive\n\n")
                        last = time.monotonic()
                    continue
                self.wfile.write(item)
                last = time.monotonic()
        finally:
            gv.view.bus.unsubscribe(client)
            self.close_connection = True


class _BadRequest(Exception):
    pass


class GroundViewServer:
    """The HTTP side: binds at construction (a clear error for a port in use), serves on start()."""

    def __init__(self, view: GroundView, host: str = "127.0.0.1", port: int = 8765, token: str | None = None):
        self.view = view
        self.host = host
        self.token = token or None
        check_exposure(host, self.token)
        cls = _HTTPServer6 if ":" in host else _HTTPServer
        try:
            self.httpd = cls((host, port), _Handler)
        except OSError as exc:
            raise FirespotterError(f"--http {host}:{port}: cannot listen ({exc.strerror or exc})",
                                   "another program uses the port? pick another with --http PORT") from None
        self.httpd.gv = self
        self.port = int(self.httpd.server_address[1])
        self.stopping = threading.Event()
        img = "'self' data:" + (f" {view.tiles.csp_origin}" if view.tiles and view.tiles.csp_origin else "")
        self.csp = (f"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src {img}; "
                    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "GroundViewServer":
        self._threads = [threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.25},
                                          name="groundview-http", daemon=True),
                         threading.Thread(target=self._ticker, name="groundview-tick", daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def _ticker(self) -> None:
        last_prune = time.monotonic()
        while not self.stopping.wait(0.5):
            try:
                self.view.tick()
                if time.monotonic() - last_prune > 10.0:
                    self.view.prune()
                    last_prune = time.monotonic()
            except Exception as exc:  # never let the page go stale over one bad state
                log.warning("ground view tick: %s: %s", exc.__class__.__name__, exc)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stopping.set()
        if self._threads:  # shutdown() waits for serve_forever: only when it runs
            try:
                self.httpd.shutdown()
            except Exception as exc:
                log.debug("shutdown: %s", exc)
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=3.0)
        if self.view.tiles is not None:
            self.view.tiles.close()
