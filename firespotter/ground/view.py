"""What the ground view's page shows, kept from the ground station's messages (GroundView observes
GroundStation):

- the fleet fire map as nested age bands (last minute, 5 min, 15 min, ..., the whole window), so each place
  shows when a drone last saw fire there;
- each drone: position and heading (from the pose of its latest `fire` message: `state` heartbeats carry no
  pose), camera footprint, track, source state, fps, outbox depth, alert and the latest mask thumbnail; LOST
  once silent for `lost_after_s`;
- the fire map at any time of the last hour (the time slider, the exports).

Times: a detection is placed at its capture time (`t_capture_ns`), so a backlog drained after a link outage
lands where it belongs on the time slider; a capture time in the future (a drone's clock ahead) is replaced by
the receive time. Liveness (LOST) uses receive times only.
"""

from __future__ import annotations

import base64
import logging
import math
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any, Callable

from firespotter.net import wire

from .events import EventBus
from .export import BAND_COLOURS, finite, kml
from .fleet import Detection, FleetMap, fire_rings, iso_utc, lonlat_ok, pose_lonlat, union_features
from .station import GroundStation
from .tiles import TileSource

log = logging.getLogger("firespotter.groundview")

HISTORY_S = 3600.0  # the time slider's reach
AGE_EDGES_S = (60.0, 300.0, 900.0)  # fire age bands (plus the window itself)
# Bounds on what valid messages can make the view keep (and /api/state send): 300 drones stay under 5 MB.
MAX_THUMB_B64 = 48_000  # a 256 px mask PNG is 1-5 kB, a 512 px one up to ~16 kB; larger ones are named, not shown
MAX_THUMB_SIDE = 1024  # the page's <img> decodes it: no decompression bomb reaches the browser
MAX_TRACK = 300
MAX_DRONES = 256
RETENTION_S = 3600.0  # a drone silent this long is forgotten (with its thumbnail and track)
MAX_HISTORY = 5000  # detections on the time slider
MAX_HISTORY_POINTS = 500_000
MAX_BUSY = 0.2  # share of a core the fire-map recomputation may take
MAX_FIRE_POINTS = 40_000  # outline points of the page's fire map (~1 MB of JSON)
SNAPSHOT_TRACK = 100  # track points per drone in a snapshot
SNAPSHOT_THUMBS_B64 = 1_500_000  # thumbnail (mask + alert snapshot) bytes per snapshot, newest first
MAX_SNAPSHOT_B64 = 600_000  # base64 characters of an alert snapshot (JPEG) the page is given


def _points(features: list[dict[str, Any]]) -> int:
    return sum(len(ring) for f in features for ring in f["geometry"]["coordinates"])


def age_edges(window_s: float) -> list[float]:
    return sorted({e for e in AGE_EDGES_S if e < window_s} | {float(window_s)})


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
    if not lonlat_ok(vals["lon"], vals["lat"]) or not 0 < vals["hfov_deg"] < 180:
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
                wire.decode_mask(mask, frame=msg.get("frame"), max_pixels=MAX_THUMB_SIDE * MAX_THUMB_SIDE)
                src = "data:image/png;base64," + mask["data"]
            except wire.WireError as exc:
                note = f"mask unreadable ({exc})"[:120]
    elif msg.get("mask_dropped"):
        note = "mask dropped by the drone's outbox"
    else:
        note = "no mask sent"
    regions = [_decimate(r.get("polygon") or [], 60) for r in (msg.get("regions") or [])[:8]]
    snap = msg.get("snapshot") or {}
    data = snap.get("data") or ""
    snapshot = None
    if data and len(data) <= MAX_SNAPSHOT_B64:
        try:  # the JPEG's own header must say the size the message says (<= 4096 a side): no bomb for the page
            if wire.jpeg_size(base64.b64decode(data[:87_380], validate=True)) == (snap["width"], snap["height"]):
                snapshot = "data:image/jpeg;base64," + data
            else:
                note = (note + "; " if note else "") + "snapshot size does not match its JPEG"
        except (ValueError, wire.WireError) as exc:
            note = (note + "; " if note else "") + f"snapshot unreadable ({exc})"[:120]
    return {"t": t, "seq": msg.get("seq"), "src": src, "note": note, "alert": msg.get("alert"),
            "frame": [msg["frame"]["width"], msg["frame"]["height"]], "regions": regions,
            "snapshot": snapshot, "snapshot_crop": snap.get("crop") if snapshot else None}


def _detection_time(msg: dict[str, Any], now: float) -> float:
    t = msg.get("t_capture_ns")
    if isinstance(t, int) and not isinstance(t, bool):
        tc = t / 1e9
        if tc <= now + 1.0:
            return min(tc, now)
    return now


class GroundView:
    """What the page shows, kept from the ground station's messages (an observer of GroundStation)."""

    def __init__(self, gs: GroundStation, *, station: str = "ground", window_s: float = 900.0, lost_after_s: float = 15.0,
                 history_s: float = HISTORY_S, tiles: TileSource | None = None, clock: Callable[[], float] = time.time,
                 max_drones: int = MAX_DRONES, retention_s: float = RETENTION_S):
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
        self.history: list[Detection] = []
        self.max_drones = max_drones
        self.retention_s = max(float(retention_s), self.lost_after_s)
        self.evicted = 0
        self._history_points = 0
        self._fires_cost = 0.0  # seconds the last live fire map took
        self.bus = EventBus()
        self.fires_dirty = True
        self._fires: dict[str, Any] | None = None
        self._fires_computed = 0.0
        self._cache: dict[tuple[int, int], dict[str, Any]] = {}
        self._availability_seen: dict[str, str] = {}
        gs.observers.append(self.on_message)

    # -- messages (called by GroundStation under its lock: quick, no I/O)

    def on_message(self, kind: str, msg: dict[str, Any], now: float, duplicate: bool) -> None:
        drone = msg["drone_id"]
        if kind == "availability":
            self._availability(drone, bool(msg["online"]), now)
            return
        with self.lock:
            d = self.drones.get(drone)
            if d is None:
                self._evict(now)
                d = self.drones[drone] = {"id": drone, "state": "?", "running": True, "lost": False, "fps": None,
                                          "frames": None, "no_frame_s": None, "outbox": None, "link": None,
                                          "alert": "none", "fires": 0, "regions": 0, "area_m2": None,
                                          "temperature_c": None, "model": None, "adapter": None, "source_id": None,
                                          "georef": None, "latency_ms": None, "pose": None, "pose_t": None,
                                          "footprint": None, "last_seen": now, "first_seen": now, "duplicates": 0,
                                          "availability": self._availability_seen.pop(drone, None)}
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
                    self.history.append(Detection(t, drone, msg["id"], msg["seq"], msg["t_capture_ns"], rings))
                    self._history_points += sum(len(r) for r in rings)
                    self._bound_history()
                    self.fires_dirty = True
            event: dict[str, Any] = {"drone": dict(d)}
            if thumb is not None:
                event["thumb"] = thumb
            if d["pose"] is not None and kind == "fire" and not duplicate:
                event["track_point"] = self.tracks[drone][-1] if self.tracks.get(drone) else None
        self.bus.publish("drone", event)

    def _bound_history(self) -> None:
        """The oldest detections go first when the slider holds too many (or too many points)."""
        if len(self.history) <= MAX_HISTORY and self._history_points <= MAX_HISTORY_POINTS:
            return
        self.history.sort(key=lambda d: d.t)
        drop = 0
        while len(self.history) - drop > MAX_HISTORY or (self._history_points > MAX_HISTORY_POINTS
                                                         and len(self.history) - drop > 1):
            self._history_points -= sum(len(r) for r in self.history[drop].rings)
            drop += 1
        del self.history[:drop]
        self._cache.clear()

    def _evict(self, now: float) -> None:
        """Forget drones silent beyond retention_s, then the longest silent while over max_drones (called under
        the lock before a new drone is added)."""
        old = [k for k, d in self.drones.items() if now - d["last_seen"] > self.retention_s]
        if len(self.drones) - len(old) >= self.max_drones:
            rest = sorted((d for k, d in self.drones.items() if k not in old), key=lambda d: d["last_seen"])
            old += [d["id"] for d in rest[: len(rest) - self.max_drones + 1]]
        for k in old:
            self.drones.pop(k, None)
            self.thumbs.pop(k, None)
            self.tracks.pop(k, None)
            self.evicted += 1

    def _availability(self, drone: str, online: bool, now: float) -> None:
        """`offline` (a last will, a liveliness token gone) from a drone that did not say it stopped: LOST now.
        `online` is not news about the picture: it only clears LOST, the next state message says the rest."""
        with self.lock:
            d = self.drones.get(drone)
            if d is None:  # the view learns drones from their messages: keep it for when the first one comes
                if len(self._availability_seen) < 10_000:
                    self._availability_seen[drone] = "online" if online else "offline"
                return
            d["availability"] = "online" if online else "offline"
            if online:
                d["lost"] = False
                d["last_seen"] = now
            elif d["running"]:
                d["lost"] = True
            event = {"drone": dict(d)}
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
        # Bounded work per tick: after a map that took c seconds, wait c / MAX_BUSY before the next one.
        gap = max(1.0, self._fires_cost / MAX_BUSY)
        due = (self.fires_dirty and now - self._fires_computed >= gap) or now - self._fires_computed >= max(10.0, gap)
        if due:
            self.fires_dirty = False
            t0 = time.monotonic()
            fires = self.fires_at(now, live=True)
            self._fires_cost = time.monotonic() - t0
            with self.lock:
                self._fires, self._fires_computed = fires, now
            self.bus.publish("fires", fires)
        self.bus.publish("tick", {"now": now, "counters": self.counters()})

    def prune(self) -> None:
        now = self.clock()
        horizon = now - self.history_s
        with self.lock:
            self.history = [d for d in self.history if d.t >= horizon]
            self._history_points = sum(sum(len(r) for r in d.rings) for d in self.history)
            for tr in self.tracks.values():
                while tr and tr[0][0] < horizon:
                    tr.popleft()
            for k in [k for k, d in self.drones.items() if now - d["last_seen"] > self.retention_s]:
                self.drones.pop(k, None)
                self.thumbs.pop(k, None)
                self.tracks.pop(k, None)
                self.evicted += 1
            self._cache.clear()

    def counters(self) -> dict[str, Any]:
        gs = self.gs
        return {"messages": gs.messages, "fire_messages": gs.fire_messages, "duplicates": gs.duplicates,
                "malformed": gs.bad, "last_malformed": gs.last_bad, "drones": len(self.drones),
                "pages": len(self.bus.clients), "authenticated": gs.verifier is not None, "rejected": gs.rejected,
                "evicted": self.evicted, "view_dropped": gs.view_dropped, "link": dict(gs.link)}

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
                    "thumbs": self._thumbs_within_budget(),
                    "tracks": {k: list(v)[-SNAPSHOT_TRACK:] for k, v in self.tracks.items()},
                    "fires": fires}

    def _thumbs_within_budget(self) -> dict[str, Any]:
        """The newest thumbnails up to SNAPSHOT_THUMBS_B64 bytes of images: the snapshot's size stays bounded
        however many drones there are (later thumbnails arrive through events)."""
        out, budget = {}, SNAPSHOT_THUMBS_B64
        for k, th in sorted(self.thumbs.items(), key=lambda kv: -kv[1]["t"]):
            size = len(th["src"] or "") + len(th.get("snapshot") or "")
            if size > budget:
                th = {**th, "src": None, "snapshot": None, "note": "thumbnail on the next fire message"}
            else:
                budget -= size
            out[k] = th
        return out

    def _detections(self, t: float, span: float) -> list[Detection]:
        with self.lock:
            return [d for d in self.history if t - span <= d.t <= t]

    def fires_at(self, t: float, live: bool = False) -> dict[str, Any]:
        """The fire map at time t as nested age bands: band k is the union of the detections of the last
        edges[k] seconds before t."""
        key = (int(t // 5), len(self.history))
        if not live:
            with self.lock:
                hit = self._cache.get(key)
            if hit is not None:
                return hit
        dets = self._detections(t, self.window_s)
        bands = []
        prev: tuple[int, list[dict[str, Any]]] | None = None
        for edge, colour in zip(reversed(self.edges), reversed(BAND_COLOURS[: len(self.edges)])):
            sub = [d for d in dets if t - d.t <= edge]
            if not sub:
                continue
            if prev is not None and prev[0] == len(sub):  # nested bands: same count, same detections, same union
                feats = [{**f, "properties": dict(f["properties"])} for f in prev[1]]
            else:
                feats = union_features(sub, edge)
            prev = (len(sub), feats)
            for f in feats:
                f["properties"]["band_s"] = edge
            bands.append({"edge_s": edge, "colour": colour, "features": feats})
        # A bounded map for the page: over MAX_FIRE_POINTS, the oldest bands are left out (the newest stay).
        truncated = False
        while len(bands) > 1 and sum(_points(b["features"]) for b in bands) > MAX_FIRE_POINTS:
            bands.pop(0)
            truncated = True
        out = {"t": t, "live": live, "detections": len(dets), "bands": bands, "truncated": truncated}
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
        for f in fc["features"]:
            last = _parse_iso(f["properties"].get("last_seen"))
            f["properties"]["age_s"] = None if last is None else round(max(0.0, t - last), 1)
        with self.lock:
            states = {k: (v["state"], v["lost"]) for k, v in self.drones.items()}
        for drone, (lon, lat, tp, yaw) in sorted(self.positions_at(t).items()):
            state, lost = states.get(drone, ("?", False))
            fc["features"].append({
                "type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
                "properties": {"kind": "drone", "drone_id": drone, "position_time": iso_utc(tp), "heading_deg": yaw,
                               **({"state": "lost" if lost else state} if t >= now - 1 else {})}})
        fc["properties"].update({"generator": "firespotter listen --http", "station": self.station, "as_of": iso_utc(t),
                                 "updated": iso_utc(now)})
        return finite(fc)

    def firemap_kml(self, t: float | None = None) -> bytes:
        return kml(self.firemap(t), self.edges)
