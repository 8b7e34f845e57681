"""`firespotter listen`: the ground-station side of the drone network (DESIGN §8).

Subscribes to every drone (`firespotter/*/fire|state`), acknowledges each `fire` message (an `ack` on
`firespotter/<drone>/ack`: this is what lets a Zenoh drone empty its outbox; over MQTT the broker's PUBACK
already does, the ack is informative), drops duplicates by id, prints a live table (drone, state, fires,
last seen) and keeps a fleet fire map: the union of the recent geo polygons of every drone, written as
GeoJSON to --geojson PATH (atomically, at most once a second) whenever it changes.

With --http ADDR it also serves the ground view (groundview.py): a live map page of the fleet (fires coloured by
age, drones with heading, camera footprint, state, fps, outbox and mask thumbnail), GeoJSON/KML exports and a
time slider over the last hour, fed by the same messages.

A malformed message is logged and counted, never fatal.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from firespotter.runtime import wire
from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import CommandSpec

log = logging.getLogger("firespotter.listen")


# --- fleet fire map -------------------------------------------------------------------------------------


@dataclass
class _Detection:
    t: float  # receive time (time.time())
    drone_id: str
    msg_id: str
    seq: int
    t_capture_ns: int
    rings: list[list[tuple[float, float]]]  # (lon, lat) rings


class FleetMap:
    """Recent geo-referenced fire polygons of every drone, dissolved into their union.

    The union is computed on a local metric grid (cell `cell_m`, coarser when the fires spread over more than
    `max_cells` cells a side): polygons are rasterized, merged, and traced back to lon/lat outlines (with
    holes). Each union polygon says which drones saw it, when, and its area."""

    def __init__(self, window_s: float = 900.0, cell_m: float = 0.5, max_cells: int = 4096):
        self.window_s = window_s
        self.cell_m = cell_m
        self.max_cells = max_cells
        self.detections: list[_Detection] = []
        self.drone_positions: dict[str, tuple[float, float, float]] = {}  # drone -> (lon, lat, t)

    def add(self, msg: dict[str, Any], t: float | None = None) -> bool:
        t = time.time() if t is None else t
        pos = pose_lonlat(msg)
        if pos is not None:
            self.drone_positions[msg["drone_id"]] = (pos[0], pos[1], t)
        rings = fire_rings(msg)
        if not rings:
            return False
        self.detections.append(_Detection(t, msg["drone_id"], msg["id"], msg["seq"], msg["t_capture_ns"], rings))
        return True

    def prune(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        keep = [d for d in self.detections if now - d.t <= self.window_s]
        changed = len(keep) != len(self.detections)
        self.detections = keep
        return changed

    def geojson(self) -> dict[str, Any]:
        import cv2
        import numpy as np

        from firespotter.runtime.geo import lonlat_to_ne, ne_to_lonlat

        features: list[dict[str, Any]] = []
        for drone, (lon, lat, t) in sorted(self.drone_positions.items()):
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(lon, 7), round(lat, 7)]},
                             "properties": {"kind": "drone", "drone_id": drone, "last_seen": _iso(t)}})
        dets = self.detections
        if dets:
            all_pts = np.array([p for d in dets for ring in d.rings for p in ring], np.float64)
            lat0, lon0 = float(all_pts[:, 1].mean()), float(all_pts[:, 0].mean())
            rings_ne = [[lonlat_to_ne(np.array(ring), lat0, lon0) for ring in d.rings] for d in dets]
            flat = np.concatenate([r for rs in rings_ne for r in rs])
            lo = flat.min(0) - 2 * self.cell_m
            extent = float((flat.max(0) - lo).max()) + 2 * self.cell_m
            cell = max(self.cell_m, extent / self.max_cells)
            n_rows = int(math.ceil((flat[:, 0].max() - lo[0]) / cell)) + 3
            n_cols = int(math.ceil((flat[:, 1].max() - lo[1]) / cell)) + 3
            grid = np.zeros((n_rows, n_cols), np.uint8)
            shift = 4  # sub-cell precision of fillPoly

            def to_px(ne):  # north grows up the map: row = (north - lo) / cell, flipped later only in meaning
                cols = (ne[:, 1] - lo[1]) / cell
                rows = (ne[:, 0] - lo[0]) / cell
                return np.round(np.stack([cols, rows], 1) * (1 << shift)).astype(np.int32)

            for rs in rings_ne:
                cv2.fillPoly(grid, [to_px(r) for r in rs], 255, lineType=cv2.LINE_8, shift=shift)
            n_labels, labels = cv2.connectedComponents(grid, connectivity=8)
            info: dict[int, dict[str, Any]] = {}
            for d, rs in zip(dets, rings_ne):
                for r in rs:
                    px = to_px(r[:1])[0] >> shift
                    c, rr = int(np.clip(px[0], 0, n_cols - 1)), int(np.clip(px[1], 0, n_rows - 1))
                    lab = int(labels[rr, c])
                    if lab == 0:  # a sliver thinner than a cell: take any labelled cell of its box
                        box = to_px(r) >> shift
                        c0, r0 = np.clip(box.min(0), 0, [n_cols - 1, n_rows - 1])
                        c1, r1 = np.clip(box.max(0), 0, [n_cols - 1, n_rows - 1])
                        sub = labels[r0 : r1 + 1, c0 : c1 + 1]
                        lab = int(sub.max()) if sub.size else 0
                    if lab:
                        e = info.setdefault(lab, {"drones": set(), "first": d.t, "last": d.t, "n": 0, "ids": set()})
                        e["drones"].add(d.drone_id)
                        e["first"], e["last"] = min(e["first"], d.t), max(e["last"], d.t)
                        e["ids"].add(d.msg_id)
            for lab in range(1, n_labels):
                comp = np.where(labels == lab, 255, 0).astype(np.uint8)
                contours, hier = cv2.findContours(comp, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
                if not contours:
                    continue
                outer_i = [i for i in range(len(contours)) if hier[0][i][3] < 0]
                if not outer_i:
                    continue
                outer = max(outer_i, key=lambda i: cv2.contourArea(contours[i]))

                def ring_lonlat(cnt):
                    pts = cnt.reshape(-1, 2).astype(np.float64) + 0.5
                    ne = np.stack([pts[:, 1] * cell + lo[0], pts[:, 0] * cell + lo[1]], 1)
                    ll = ne_to_lonlat(ne, lat0, lon0)
                    ring = [[round(float(a), 7), round(float(b), 7)] for a, b in ll]
                    if len(ring) < 3:  # a single cell or a line of cells: its box
                        c, r_ = pts.min(0) - 0.5, pts.max(0) + 0.5
                        box = np.array([[c[1], c[0]], [c[1], r_[0]], [r_[1], r_[0]], [r_[1], c[0]]]) * cell + lo
                        ring = [[round(float(a), 7), round(float(b), 7)] for a, b in ne_to_lonlat(box, lat0, lon0)]
                    return ring + [ring[0]]

                coords = [ring_lonlat(contours[outer])]
                coords += [ring_lonlat(contours[i]) for i in range(len(contours)) if hier[0][i][3] == outer]
                e = info.get(lab, {"drones": set(), "first": None, "last": None, "ids": set()})
                features.append({
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": coords},
                    "properties": {
                        "kind": "fire",
                        "drones": sorted(e["drones"]),
                        "area_m2": round(float(np.count_nonzero(comp)) * cell * cell, 1),
                        "detections": len(e["ids"]),
                        "first_seen": _iso(e["first"]) if e["first"] else None,
                        "last_seen": _iso(e["last"]) if e["last"] else None,
                    },
                })
        return {"type": "FeatureCollection", "features": features,
                "properties": {"generator": "firespotter listen", "window_s": self.window_s, "updated": _iso(time.time()),
                               "cell_m": round(cell, 3) if dets else self.cell_m}}


def _lonlat_ok(lon: Any, lat: Any) -> bool:
    return (isinstance(lon, (int, float)) and isinstance(lat, (int, float)) and math.isfinite(lon)
            and math.isfinite(lat) and -180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0)


def fire_rings(msg: dict[str, Any]) -> list[list[tuple[float, float]]]:
    """The outer (lon, lat) rings of a fire message's geo-referenced regions. The wire schema checks shapes,
    not ranges: a ring with a non-finite or out-of-range coordinate (a drone's broken georef, NaN sent as a
    JSON extension) is left out rather than poisoning the fleet map."""
    rings = []
    for r in msg.get("regions") or ():
        geo = r.get("geo") if isinstance(r, dict) else None
        if not geo:
            continue
        ring = [(p[0], p[1]) for p in geo["coordinates"][0]]
        if len(ring) >= 3 and all(_lonlat_ok(lon, lat) for lon, lat in ring):
            rings.append(ring)
    return rings


def pose_lonlat(msg: dict[str, Any]) -> tuple[float, float] | None:
    """(lon, lat) of a fire message's pose, None without one (or with a non-finite one)."""
    pose = msg.get("pose")
    if not pose or not _lonlat_ok(pose.get("lon"), pose.get("lat")):
        return None
    return float(pose["lon"]), float(pose["lat"])


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


# --- the ground station ---------------------------------------------------------------------------------


@dataclass
class DroneStatus:
    drone_id: str
    state: str = "?"
    fps: float = 0.0
    fires: int = 0  # fire messages with regions
    regions: int = 0  # regions in the latest fire message
    area_m2: float | None = None
    alert: str = "none"
    last_seen: float = 0.0
    link: str = ""
    outbox_pending: int | None = None
    duplicates: int = 0


class GroundStation:
    """Transport-independent: feed it (topic, payload); it returns the acks to publish."""

    def __init__(self, station: str = "ground", fleet: FleetMap | None = None, dedup: int = 100_000):
        self.station = station
        self.fleet = fleet or FleetMap()
        self.drones: dict[str, DroneStatus] = {}
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.dedup = dedup
        self.messages = 0
        self.fire_messages = 0
        self.duplicates = 0
        self.bad = 0
        self.last_bad: str | None = None
        self.map_dirty = False
        self.lock = threading.Lock()
        # observers(kind, msg, receive_time, duplicate), called under self.lock after each valid fire/state
        # message (the ground view's live page); one that raises is logged, never costs the drone its ack
        self.observers: list[Callable[[str, dict[str, Any], float, bool], None]] = []

    def handle(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """-> [(topic, payload)] to publish (acks). Never raises for bad input."""
        try:
            return self._handle(str(topic), payload)
        except Exception as exc:  # wire errors and anything unforeseen in a message: count, log, go on
            with self.lock:
                self.bad += 1
                self.last_bad = f"{topic}: {exc.__class__.__name__}: {exc}"
                n = self.bad
            if n <= 10 or n % 100 == 0:
                log.warning("ignored a malformed message on %s (%d so far): %s", topic, n, exc)
            return []

    def _handle(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        where = wire.parse_topic(topic)
        if where is None:
            raise wire.WireError(f"not a firespotter topic: {topic!r}")
        drone, kind = where
        if kind == "ack":
            return []  # our own acks (or another station's)
        msg = wire.loads(payload)
        if msg["kind"] != kind or msg["drone_id"] != drone:
            raise wire.WireError(f"a {msg['kind']} message from {msg['drone_id']} on topic {topic}")
        now = time.time()
        with self.lock:
            self.messages += 1
            st = self.drones.setdefault(drone, DroneStatus(drone))
            st.last_seen = now
            if kind == "state":
                st.state = msg["source_state"] if msg["running"] else "stopped"
                st.fps = msg["fps"]
                st.link = "up" if msg["link"]["connected"] else "down"
                st.outbox_pending = (msg.get("outbox") or {}).get("pending")
                self._notify(kind, msg, now, False)
                return []
            # fire
            ack = [(wire.topic(drone, "ack"), wire.dumps(wire.ack_message(drone, [msg], self.station)))]
            if msg["id"] in self.seen:
                self.duplicates += 1
                st.duplicates += 1
                self._notify(kind, msg, now, True)
                return ack  # ack again: the first ack may have been lost
            self.seen[msg["id"]] = None
            if len(self.seen) > self.dedup:
                self.seen.popitem(last=False)
            self.fire_messages += 1
            st.state = msg["source_state"]
            st.alert = msg["alert"]
            st.regions = len(msg["regions"])
            st.area_m2 = msg["area_m2"]
            if msg["regions"]:
                st.fires += 1
            if self.fleet.add(msg, now):
                self.map_dirty = True
            self._notify(kind, msg, now, False)
            return ack

    def _notify(self, kind: str, msg: dict[str, Any], now: float, duplicate: bool) -> None:
        for observer in self.observers:
            try:
                observer(kind, msg, now, duplicate)
            except Exception as exc:
                log.warning("ground view: %s message from %s: %s: %s", kind, msg.get("drone_id"),
                            exc.__class__.__name__, exc)

    def table_rows(self) -> list[list[str]]:
        now = time.time()
        rows = []
        with self.lock:
            for d in sorted(self.drones.values(), key=lambda d: d.drone_id):
                area = "-" if d.area_m2 is None else f"{d.area_m2:.0f} m²"
                rows.append([d.drone_id, d.state, f"{d.fps:.1f}", d.alert, str(d.fires), str(d.regions), area,
                             "-" if d.outbox_pending is None else str(d.outbox_pending), f"{now - d.last_seen:.1f} s ago"])
        return rows

    def summary(self) -> str:
        return (f"{self.messages} messages, {self.fire_messages} fire messages from {len(self.drones)} drones, "
                f"{self.duplicates} duplicates, {self.bad} malformed (ignored)")


# --- transports -------------------------------------------------------------------------------------------


class _ZenohListener:
    def __init__(self, gs: GroundStation, mode: str, connect: list[str], listen: list[str], multicast: bool,
                 config_file: Path | None):
        import zenoh

        from firespotter.runtime.wire import TOPIC_PREFIX

        self.gs = gs
        conf = zenoh.Config.from_file(str(config_file)) if config_file else zenoh.Config()
        conf.insert_json5("mode", json.dumps(mode))
        if connect:
            conf.insert_json5("connect/endpoints", json.dumps(connect))
        if listen:
            conf.insert_json5("listen/endpoints", json.dumps(listen))
        conf.insert_json5("scouting/multicast/enabled", json.dumps(multicast))
        try:
            self.session = zenoh.open(conf)
        except Exception as exc:
            raise FirespotterError(f"listen: cannot open a zenoh session ({mode}, connect {connect or '-'}, "
                                   f"listen {listen or '-'}): {exc}") from None
        self.subs = [self.session.declare_subscriber(f"{TOPIC_PREFIX}/*/{kind}", self._on_sample)
                     for kind in ("fire", "state")]

    def _on_sample(self, sample) -> None:
        try:
            payload = sample.payload.to_bytes()
        except Exception as exc:
            payload = b""
            log.debug("payload: %s", exc)
        for topic, ack in self.gs.handle(str(sample.key_expr), payload):
            try:
                self.session.put(topic, ack)
            except Exception as exc:
                log.warning("could not send an ack on %s: %s", topic, exc)

    def close(self) -> None:
        for s in self.subs:
            try:
                s.undeclare()
            except Exception:
                pass
        self.session.close()


class _MqttListener:
    def __init__(self, gs: GroundStation, host: str, port: int, client_id: str, username: str | None,
                 password: str | None, tls: bool, ca_certs: Path | None, clean: bool):
        import socket

        import paho.mqtt.client as mqtt

        self.gs = gs
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise FirespotterError(f"listen: broker host {host!r} does not resolve ({exc.strerror})") from None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        if username:
            c.username_pw_set(username, password)
        if tls:
            c.tls_set(ca_certs=str(ca_certs) if ca_certs else None)
        c.reconnect_delay_set(1, 30)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self.client = c
        self.connected = threading.Event()
        c.connect_async(host, port, keepalive=30)
        c.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if getattr(reason_code, "is_failure", False):
            log.error("broker refused the connection: %s", reason_code)
            return
        client.subscribe([(f"{wire.TOPIC_PREFIX}/+/fire", 1), (f"{wire.TOPIC_PREFIX}/+/state", 0)])
        self.connected.set()

    def _on_message(self, client, userdata, message) -> None:
        for topic, ack in self.gs.handle(message.topic, message.payload):
            client.publish(topic, ack, qos=0)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- the command ----------------------------------------------------------------------------------------


def listen(
    transport: str = typer.Option("zenoh", "--transport", "-t", help="zenoh or mqtt."),
    geojson: Optional[Path] = typer.Option(None, "--geojson", help="Write the fleet fire map (GeoJSON) here as it changes."),
    window_s: float = typer.Option(900.0, "--window-s", min=1.0, help="Fires older than this leave the map."),
    station: str = typer.Option("ground", "--station", help="This station's name (in acks)."),
    duration: Optional[float] = typer.Option(None, "--duration", min=0.0, help="Exit after this many seconds."),
    print_every: float = typer.Option(5.0, "--print-every", min=0.2, help="Without a terminal: print the table this often."),
    mode: str = typer.Option("peer", "--mode", help="zenoh: peer or client."),
    connect: list[str] = typer.Option([], "--connect", "-e", help="zenoh: endpoint to connect to (repeat), e.g. tcp/10.8.0.1:7447."),
    listen_on: list[str] = typer.Option([], "--listen", "-l", help="zenoh: endpoint to listen on (repeat)."),
    no_multicast: bool = typer.Option(False, "--no-multicast", help="zenoh: no multicast scouting."),
    zenoh_config: Optional[Path] = typer.Option(None, "--zenoh-config", help="zenoh: a JSON5 config file."),
    host: str = typer.Option("127.0.0.1", "--host", help="mqtt: broker host."),
    port: Optional[int] = typer.Option(None, "--port", help="mqtt: broker port (1883, 8883 with --tls)."),
    client_id: Optional[str] = typer.Option(None, "--client-id", help="mqtt: default firespotter-listen-<station>."),
    clean_session: bool = typer.Option(False, "--clean-session", help="mqtt: forget messages queued while away."),
    username: Optional[str] = typer.Option(None, "--username", help="mqtt: user name."),
    password_env: Optional[str] = typer.Option(None, "--password-env", help="mqtt: environment variable with the password."),
    tls: bool = typer.Option(False, "--tls", help="mqtt: TLS."),
    ca_certs: Optional[Path] = typer.Option(None, "--ca-certs", help="mqtt: CA bundle for TLS."),
    http: Optional[str] = typer.Option(
        None, "--http", metavar="ADDR",
        help="Serve the live ground view (map page, exports) on ADDR: PORT or HOST:PORT, host 127.0.0.1 unless "
             "given. Any other host needs --token."),
    token: Optional[str] = typer.Option(
        None, "--token", envvar="FIRESPOTTER_LISTEN_TOKEN", show_envvar=True,
        help="Access token for --http (open http://HOST:PORT/?token=...); prefer the environment variable: "
             "a command line is visible to every user of the machine."),
    lost_after_s: float = typer.Option(15.0, "--lost-after-s", min=0.5,
                                       help="--http: a drone silent this long is shown as LOST."),
    tiles: Optional[str] = typer.Option(
        None, "--tiles", metavar="URL|DIR|FILE.mbtiles",
        help="--http: map background: a tile URL template (https://.../{z}/{x}/{y}.png), a local XYZ folder "
             "(DIR/{z}/{x}/{y}.png) or a raster .mbtiles file. Default: a plain metric grid (offline)."),
    tiles_attribution: str = typer.Option("", "--tiles-attribution", help="--http: credit shown for --tiles."),
) -> None:
    """Ground station: subscribe to every drone, acknowledge fire messages, show a live table, keep a fleet fire map."""
    if transport not in ("zenoh", "mqtt"):
        raise FirespotterError(f"--transport {transport!r}: expected zenoh or mqtt")
    if mode not in ("peer", "client"):
        raise FirespotterError(f"--mode {mode!r}: expected peer or client")
    try:
        if transport == "zenoh":
            import zenoh  # noqa: F401
        else:
            import paho.mqtt.client  # noqa: F401
    except ImportError as exc:
        extra = "zenoh" if transport == "zenoh" else "mqtt"
        raise FirespotterError(f"listen --transport {transport}: {exc}", f"pip install 'firespotter[{extra}]'") from None
    password = None
    if password_env:
        if password_env not in os.environ:
            raise FirespotterError(f"--password-env {password_env}: not set in the environment")
        password = os.environ[password_env]
    view_server = None
    if http is None:
        if tiles:
            raise FirespotterError("--tiles: only with --http (it is the ground view's map background)")
    else:
        from firespotter.plugins.commands import groundview

        http_host, http_port = groundview.parse_http_addr(http)
        groundview.check_exposure(http_host, token)
        tile_source = groundview.open_tiles(tiles, tiles_attribution) if tiles else None
    gs = GroundStation(station, FleetMap(window_s=window_s))
    if http is not None:  # bound before the broker connection: a port in use fails fast
        view_server = groundview.GroundViewServer(
            groundview.GroundView(gs, station=station, window_s=window_s, lost_after_s=lost_after_s, tiles=tile_source),
            http_host, http_port, token=token or None)
        view_server.start()
    try:
        if transport == "zenoh":
            conn: Any = _ZenohListener(gs, mode, list(connect), list(listen_on), not no_multicast, zenoh_config)
            where = f"zenoh {mode}" + (f", connect {', '.join(connect)}" if connect else "") + (
                f", listen {', '.join(listen_on)}" if listen_on else "")
        else:
            p = port or (8883 if tls else 1883)
            conn = _MqttListener(gs, host, p, client_id or f"firespotter-listen-{station}", username, password, tls,
                                 ca_certs, clean_session)
            where = f"mqtt {host}:{p}"
    except BaseException:
        if view_server is not None:
            view_server.close()
        raise
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, lambda *_: stop.set())
        except ValueError:  # not the main thread
            pass
    typer.echo(f"listening on {where}" + (f"; fleet map -> {geojson}" if geojson else ""), err=True)
    if view_server is not None:
        typer.echo(f"ground view on {view_server.url}" + (" (needs the access token: ?token=...)" if token else ""),
                   err=True)
    t_end = None if duration is None else time.monotonic() + duration
    live = None
    if sys.stdout.isatty():
        from rich.live import Live

        live = Live(_table(gs, where), refresh_per_second=2, transient=False)
        live.start()
    last_print = 0.0
    last_write = 0.0
    try:
        while not stop.is_set() and (t_end is None or time.monotonic() < t_end):
            stop.wait(0.2)
            now = time.monotonic()
            if geojson is not None and now - last_write >= 1.0:
                with gs.lock:
                    changed = gs.fleet.prune() or gs.map_dirty
                    data = gs.fleet.geojson() if changed else None
                    gs.map_dirty = False
                if data is not None:
                    _write_map(geojson, data)
                    last_write = now
            if live is not None:
                live.update(_table(gs, where))
            elif now - last_print >= print_every and gs.drones:
                _print_plain(gs)
                last_print = now
    finally:
        if live is not None:
            live.stop()
        try:
            conn.close()
        except Exception as exc:
            log.debug("close: %s", exc)
        if view_server is not None:
            view_server.close()
        if geojson is not None:
            with gs.lock:
                gs.fleet.prune()
                data = gs.fleet.geojson()
            _write_map(geojson, data)
        if live is None:
            _print_plain(gs)
        typer.echo(f"listen: {gs.summary()}", err=True)


def _write_map(path: Path, data: dict[str, Any]) -> None:
    try:
        write_atomic(path, data)
    except OSError as exc:
        log.error("cannot write the fleet map %s: %s", path, exc)


_COLUMNS = ["drone", "state", "fps", "alert", "fires", "regions", "area", "outbox", "last seen"]


def _table(gs: GroundStation, where: str):
    from rich.table import Table

    t = Table(title=f"firespotter listen ({where})", caption=gs.summary())
    for c in _COLUMNS:
        t.add_column(c)
    for row in gs.table_rows():
        t.add_row(*row)
    return t


def _print_plain(gs: GroundStation) -> None:
    rows = gs.table_rows()
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    lines.append(gs.summary())
    typer.echo("\n".join(lines))
    sys.stdout.flush()


@hookimpl
def register_commands():
    return [CommandSpec("listen", listen, help="Ground station: receive, acknowledge and map every drone's fires.")]
