"""`firespotter listen --http`: the ground view. Two simulated drones over a real MQTT broker -> a live map page in
headless Chromium (both drones and their fires, no console errors, a screenshot), GeoJSON/KML exports that
validate, malformed messages that do not break the page, a silent drone shown as LOST, the time slider; plus the
HTTP server's access rules, local tiles and the footprint geometry without a browser."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import REPO
from helpers.net import MOSQUITTO, Mosquitto, start_listen, stop_process, fire_result, free_port, port_open, wait_until
from firespotter.net import wire
from firespotter.runtime.types import Pose

CHROMIUM = "/usr/bin/chromium"
OUT = REPO / "out"
KML = "{http://www.opengis.net/kml/2.2}"

# a compact RFC 7946 FeatureCollection schema: Polygons (closed rings of >= 4 positions) and Points
GEOJSON_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["type", "features"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "features": {"type": "array", "items": {"$ref": "#/$defs/feature"}},
    },
    "$defs": {
        "position": {"type": "array", "minItems": 2, "maxItems": 3, "prefixItems": [
            {"type": "number", "minimum": -180, "maximum": 180}, {"type": "number", "minimum": -90, "maximum": 90}],
            "items": {"type": "number"}},
        "ring": {"type": "array", "minItems": 4, "items": {"$ref": "#/$defs/position"}},
        "polygon": {"type": "object", "required": ["type", "coordinates"], "properties": {
            "type": {"const": "Polygon"}, "coordinates": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/ring"}}}},
        "point": {"type": "object", "required": ["type", "coordinates"], "properties": {
            "type": {"const": "Point"}, "coordinates": {"$ref": "#/$defs/position"}}},
        "feature": {"type": "object", "required": ["type", "geometry", "properties"], "properties": {
            "type": {"const": "Feature"},
            "geometry": {"oneOf": [{"$ref": "#/$defs/polygon"}, {"$ref": "#/$defs/point"}]},
            "properties": {"type": ["object", "null"]}}},
    },
}

PLACES = {"uav-a": (46.5200, 7.5100), "uav-b": (46.5215, 7.5185)}  # ~700 m apart


def drone_fire(drone: str, seq: int, t_capture: float, dlat: float = 0.0, dlon: float = 0.0, yaw: float = 0.0,
               seed: int | None = None) -> dict:
    lat, lon = PLACES[drone]
    r = fire_result(seq, size=96, seed=seed, pose=Pose(lat=lat + dlat, lon=lon + dlon, alt_agl_m=120.0,
                                                       pitch_deg=-90.0, yaw_deg=yaw, hfov_deg=70.0))
    r.t_wall_ns = int(t_capture * 1e9)
    return wire.fire_message(r, drone, mask_max_side=96)


def drone_state(drone: str, fps: float = 4.8, pending: int = 0, state: str = "streaming") -> dict:
    return wire.state_message(drone, seq=10, t_capture_ns=time.time_ns(), source_state=state, fps=fps, frames=100,
                              outbox={"pending": pending, "bytes": 0, "oldest_age_s": None, "dropped": 0,
                                      "masks_dropped": 0, "degraded": None},
                              transport="mqtt", connected=True, temperature_c=51.0,
                              model={"id": "fireseg-s", "precision_exec": "fp32", "weight_bits": 32, "simulated": False})


def _validate_geojson(fc: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (pip install jsonschema)")
    jsonschema.validate(fc, GEOJSON_SCHEMA)
    for f in fc["features"]:
        if f["geometry"]["type"] == "Polygon":
            for ring in f["geometry"]["coordinates"]:
                assert ring[0] == ring[-1], "GeoJSON rings are closed"


def _kml_polygons(body: bytes) -> list[list[tuple[float, float]]]:
    """The outer rings of every KML Polygon, as (lon, lat)."""
    root = ET.fromstring(body)
    assert root.tag == f"{KML}kml"
    path = f"{KML}outerBoundaryIs/{KML}LinearRing/{KML}coordinates"
    return [[tuple(float(v) for v in p.split(",")[:2]) for p in poly.find(path).text.split()]
            for poly in root.iter(f"{KML}Polygon")]


def _get(url: str, headers: dict | None = None, timeout: float = 10.0):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# --- without a browser ------------------------------------------------------------------------------------


def _station(**kw):
    from firespotter.ground.fleet import FleetMap
    from firespotter.ground.station import GroundStation
    from firespotter.ground.view import GroundView

    gs = GroundStation("gs", FleetMap(window_s=900))
    return gs, GroundView(gs, station="gs", window_s=900, **kw)


def _feed(gs, msg):
    return gs.handle(wire.topic(msg["drone_id"], msg["kind"]), wire.dumps(msg))


def test_exports_validate_and_bad_geometry_is_left_out():
    gs, view = _station(lost_after_s=5)
    now = time.time()
    for drone in PLACES:
        _feed(gs, drone_state(drone))
        for k, age in enumerate((600, 200, 20)):
            assert _feed(gs, drone_fire(drone, k, now - age, dlon=0.0003 * k, yaw=30 * k, seed=k + 7))  # acked
    bad = drone_fire("uav-a", 9, now - 5, seed=3)
    bad["regions"][0]["geo"]["coordinates"][0][1] = [500.0, 46.5]  # the schema checks shapes, not ranges
    _feed(gs, bad)
    gs.handle("firespotter/uav-a/fire", b"{not json")
    assert gs.bad == 1

    fc = view.firemap()
    _validate_geojson(fc)
    fires = [f for f in fc["features"] if f["properties"]["kind"] == "fire"]
    drones = {f["properties"]["drone_id"]: f for f in fc["features"] if f["properties"]["kind"] == "drone"}
    assert set(drones) == set(PLACES)
    assert {d for f in fires for d in f["properties"]["drones"]} == set(PLACES)
    for f in fires:
        assert all(abs(lon) <= 180 for ring in f["geometry"]["coordinates"] for lon, _ in ring)
        assert f["properties"]["area_m2"] > 0 and f["properties"]["age_s"] is not None
    polys = _kml_polygons(view.firemap_kml())
    assert len(polys) == len(fires) >= 2
    for ring in polys:
        assert len(ring) >= 4 and ring[0] == ring[-1]
        assert any(abs(ring[0][1] - lat) < 0.01 for lat, _ in PLACES.values())

    # the time slider: 5 min ago only the 10-min-old detections (one per drone) were there; 20 min ago none
    past = view.fires_at(now - 300)
    assert past["detections"] == 2 and past["bands"]
    assert view.fires_at(now - 1200)["bands"] == []
    assert [f for f in view.firemap(now - 1200)["features"] if f["properties"]["kind"] == "fire"] == []
    live = view.fires_at(now, live=True)
    assert [b["edge_s"] for b in live["bands"]] == [900, 300, 60]  # oldest first, each a union

    # a silent drone is LOST after lost_after_s; one that said goodbye (running: false) is not
    stopped = drone_state("uav-b")
    stopped["running"] = False
    _feed(gs, stopped)
    view.clock = lambda: time.time() + 6
    view.tick()
    assert view.drones["uav-a"]["lost"] and not view.drones["uav-b"]["lost"]
    assert view.drones["uav-b"]["state"] == "stopped"


def test_fires_far_apart_keep_their_shape():
    from firespotter.ground.fleet import Detection, FleetMap, union_features

    def square(lat, lon, side_m=20.0):
        dlat, dlon = side_m / 111_200, side_m / (111_320 * math.cos(math.radians(lat)))
        return [(lon, lat), (lon + dlon, lat), (lon + dlon, lat + dlat), (lon, lat + dlat), (lon, lat)]

    t = time.time()
    dets = [Detection(t, "a", "1" * 32, 0, 0, [square(46.0, 7.0)]), Detection(t, "b", "2" * 32, 0, 0, [square(46.5, 7.6)])]
    feats = union_features(dets, 900)
    assert len(feats) == 2
    for f in feats:  # ~60 km apart: each keeps its exact outline and area (no shared raster)
        assert abs(f["properties"]["area_m2"] - 400.0) < 4.0, f["properties"]
    fm = FleetMap(window_s=900)
    fm.detections = dets
    assert [f["properties"]["area_m2"] for f in fm.geojson()["features"]] == [f["properties"]["area_m2"] for f in feats]


def test_footprint_of_a_nadir_camera_is_a_square_under_the_drone():
    from firespotter.ground.view import footprint
    from firespotter.runtime.geo import lonlat_to_ne

    import numpy as np

    pose = {"lat": 46.0, "lon": 7.0, "alt_agl_m": 100.0, "roll_deg": 0.0, "pitch_deg": -90.0, "yaw_deg": 0.0,
            "hfov_deg": 90.0}
    ring = footprint(pose, {"width": 64, "height": 64})
    ne = lonlat_to_ne(np.array(ring), 46.0, 7.0)
    assert ring[0] == ring[-1]
    assert np.allclose(np.abs(ne).max(0), [100.0, 100.0], atol=0.5)  # tan(45°) x 100 m each side
    assert footprint({**pose, "alt_agl_m": 0.0}, {"width": 64, "height": 64}) is None
    assert footprint({**pose, "lat": float("nan")}, {"width": 64, "height": 64}) is None
    oblique = footprint({**pose, "pitch_deg": -10.0}, {"width": 64, "height": 48})
    assert oblique and max(np.hypot(*lonlat_to_ne(np.array(oblique), 46.0, 7.0).T)) <= 2000.0 * 1.01  # clipped


def _server(view, **kw):
    from firespotter.ground.http import GroundViewServer

    return GroundViewServer(view, "127.0.0.1", 0, **kw).start()


def test_http_token_host_check_and_errors(tmp_path):
    from firespotter.ground.http import GroundViewServer, check_exposure, parse_http_addr
    from firespotter.runtime.errors import FirespotterError

    assert parse_http_addr("8765") == ("127.0.0.1", 8765)
    assert parse_http_addr("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_http_addr("[::1]:8080") == ("::1", 8080)
    for bad in ("http://x", "abc", "1.2.3.4:99999"):
        with pytest.raises(FirespotterError):
            parse_http_addr(bad)
    with pytest.raises(FirespotterError, match="needs an access token"):
        check_exposure("0.0.0.0", None)
    with pytest.raises(FirespotterError, match="--token"):
        check_exposure("0.0.0.0", "short")
    check_exposure("127.0.0.1", None)
    check_exposure("0.0.0.0", "a-long-enough-token")

    gs, view = _station()
    _feed(gs, drone_state("uav-a"))
    srv = _server(view)
    try:
        base = f"http://127.0.0.1:{srv.port}"
        code, headers, body = _get(base + "/")
        assert code == 200 and b"leaflet.js" in body and "default-src 'none'" in headers["Content-Security-Policy"]
        assert _get(base + "/static/vendor/leaflet/LICENSE")[0] == 200
        assert _get(base + "/static/../http.py")[0] == 404
        assert _get(base + "/api/state")[0] == 200
        assert _get(base + "/api/fires?t=abc")[0] == 400
        assert _get(base + "/", {"Host": "evil.example:80"})[0] == 403  # DNS rebinding
        with pytest.raises(FirespotterError, match="cannot listen"):
            GroundViewServer(view, "127.0.0.1", srv.port)
    finally:
        srv.close()

    token = "s3cret-token-for-tests"
    srv = _server(view, token=token)
    try:
        base = f"http://127.0.0.1:{srv.port}"
        assert _get(base + "/api/state")[0] == 401
        assert _get(base + "/api/state", {"Authorization": "Bearer wrong-token"})[0] == 401
        assert _get(base + "/api/state", {"Authorization": f"Bearer {token}"})[0] == 200
        assert _get(base + "/healthz")[0] == 200

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None

        try:
            urllib.request.build_opener(NoRedirect).open(base + f"/?token={token}", timeout=5)
            raise AssertionError("expected a redirect")
        except urllib.error.HTTPError as e:
            assert e.code == 303 and "HttpOnly" in e.headers["Set-Cookie"]
            cookie = e.headers["Set-Cookie"].split(";")[0]
        assert _get(base + "/events", {"Cookie": "x=1"})[0] == 401
        code, _, body = _get(base + "/export/firemap.kml", {"Cookie": cookie})
        assert code == 200 and body.startswith(b"<?xml")
    finally:
        srv.close()


def test_local_tiles_mbtiles_and_xyz(tmp_path):
    from firespotter.ground.tiles import EMPTY_TILE, open_tiles
    from firespotter.runtime.errors import FirespotterError

    png = bytes.fromhex("89504e470d0a1a0a") + b"tile-bytes"
    db = tmp_path / "area.mbtiles"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
        c.execute("CREATE TABLE tiles (zoom_level INT, tile_column INT, tile_row INT, tile_data BLOB)")
        c.executemany("INSERT INTO metadata VALUES (?, ?)", [("format", "png"), ("minzoom", "3"), ("maxzoom", "3"),
                                                             ("attribution", "test tiles")])
        c.execute("INSERT INTO tiles VALUES (3, 4, 2, ?)", (png,))  # TMS row 2 = XYZ y 5 at zoom 3
    xyz = tmp_path / "xyz" / "3" / "4"
    xyz.mkdir(parents=True)
    (xyz / "5.png").write_bytes(png)

    for spec in (str(db), str(tmp_path / "xyz")):
        tiles = open_tiles(spec)
        assert tiles.client_config()["url"] == "tiles/{z}/{x}/{y}" and tiles.min_zoom == 3
        gs, view = _station(tiles=tiles)
        srv = _server(view)
        try:
            base = f"http://127.0.0.1:{srv.port}"
            assert _get(base + "/tiles/3/4/5")[2] == png
            code, headers, body = _get(base + "/tiles/3/4/6")
            assert code == 200 and body == EMPTY_TILE  # a missing tile is transparent, not a console error
        finally:
            srv.close()
    url = open_tiles("https://{s}.tile.example.org/{z}/{x}/{y}.png", "© example")
    assert url.kind == "url" and url.csp_origin == "https://*.tile.example.org"
    for bad in ("https://tile.example.org/tiles.png", str(tmp_path / "nope"), str(tmp_path / "xyz" / "3" / "4" / "5.png")):
        with pytest.raises(FirespotterError, match="--tiles"):
            open_tiles(bad)


# --- the real thing: broker, listener, browser ----------------------------------------------------------




def _need_browser():
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


def test_ground_view_in_a_browser_two_drones_over_mqtt(tmp_path):
    sync_api = _need_browser()
    import paho.mqtt.client as mqtt

    broker = Mosquitto(tmp_path / "broker", persistence=False).start()
    http_port = free_port()
    listener = start_listen("--transport", "mqtt", "--port", str(broker.port), "--http", f"127.0.0.1:{http_port}",
                       "--lost-after-s", "3", "--duration", "90", "--station", "gv-test", "--print-every", "5", cwd=REPO)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sim-drones")
    alive = {"uav-a", "uav-b"}
    fps = {"uav-a": 4.8, "uav-b": 3.2}
    stop = threading.Event()

    def heartbeat():  # both drones' state, once a second, until a drone is silenced
        while not stop.wait(0.5):
            for d in sorted(alive):
                client.publish(wire.topic(d, "state"), wire.dumps(drone_state(d, fps=fps[d], pending=2 if d == "uav-b" else 0)))

    beat = threading.Thread(target=heartbeat, daemon=True)
    browser = None
    try:
        assert wait_until(lambda: "as firespotter-listen-gv-test" in broker.log() and port_open(http_port), 20), \
            (broker.log()[-400:], listener.poll())
        time.sleep(0.3)  # subscribed after CONNACK
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        now = time.time()
        for d in sorted(alive):
            client.publish(wire.topic(d, "state"), wire.dumps(drone_state(d, fps=fps[d])))
        # a spreading fire under each drone: detections 10 min, 4 min, 40 s and 3 s old (a drained backlog)
        for k, age in enumerate((600, 240, 40, 3)):
            for d in sorted(PLACES):
                msg = drone_fire(d, k, now - age, dlat=0.00025 * k, dlon=0.0002 * k, yaw=20.0 * k + (90 if d == "uav-b" else 0),
                                 seed=11 * k + (1 if d == "uav-a" else 2))
                client.publish(wire.topic(d, "fire"), wire.dumps(msg), qos=1).wait_for_publish(5)
        beat.start()

        errors: list[str] = []
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            outside = []
            page.on("request", lambda r: None if r.url.startswith((f"http://127.0.0.1:{http_port}/", "data:"))
                    else outside.append(r.url))
            page.goto(f"http://127.0.0.1:{http_port}/", wait_until="load", timeout=15000)
            page.wait_for_function("""() => { const g = window.groundview;
                return g && g.ready && g.connected && ['uav-a', 'uav-b'].every(id => g.drones[id] && g.drones[id].pose)
                  && new Set(g.fires.flatMap(f => f.drones)).size === 2; }""", timeout=20000)
            for d in PLACES:
                assert page.locator(f'#drones li[data-drone-id="{d}"]').count() == 1
                assert page.locator(f'.gv-drone[data-drone-id="{d}"]').count() == 1  # on the map
            assert page.locator("path.gv-fire").count() >= 2
            assert page.locator("path.gv-footprint").count() == 2
            assert page.locator("path.gv-band-60").count() >= 1 and page.locator("path.gv-band-900").count() >= 1
            page.wait_for_function("() => document.querySelectorAll('#drones li[data-state=streaming]').length === 2",
                                   timeout=10000)
            card_b = page.locator('#drones li[data-drone-id="uav-b"]').inner_text()
            assert "outbox 2" in card_b and "fps 3.2" in card_b, card_b
            page.wait_for_timeout(400)  # thumbnails decode asynchronously
            shot = tmp_path / "groundview.png"
            page.screenshot(path=str(shot))

            # bad input while the page is open: garbage, an invalid message, a wrong topic, a fire whose geo is
            # out of range; then a good update still arrives
            bad = drone_fire("uav-a", 20, time.time(), seed=5)
            bad["regions"][0]["geo"]["coordinates"][0][0] = [1e9, -1e9]
            for topic, payload in [("firespotter/uav-a/fire", b"\x00\xff{"), ("firespotter/uav-a/state", b"[]"),
                                   ("firespotter/uav-a/state", json.dumps({"v": 1, "kind": "state"}).encode()),
                                   ("firespotter/uav-b/state", wire.dumps(drone_state("uav-a"))),
                                   ("firespotter/uav-a/fire", wire.dumps(bad))]:
                client.publish(topic, payload, qos=1).wait_for_publish(5)
            fps["uav-a"] = 7.5
            page.wait_for_function("""() => document.querySelector('#drones li[data-drone-id="uav-a"]').innerText.includes('fps 7.5')""",
                                   timeout=10000)
            page.wait_for_function("() => (window.groundview.counters || {}).malformed >= 4", timeout=10000)
            assert page.locator("#malformed").is_visible()
            assert "Links unauthenticated" in page.locator("#auth").inner_text()  # no keys: the page says so

            # a drone that goes silent is LOST after --lost-after-s 3
            alive.discard("uav-b")
            t0 = time.monotonic()
            page.wait_for_selector('#drones li[data-drone-id="uav-b"][data-lost="true"]', timeout=12000)
            assert time.monotonic() - t0 >= 1.0  # not at once: after --lost-after-s of silence
            assert page.locator('#drones li[data-drone-id="uav-a"]').get_attribute("data-lost") == "false"
            assert "LOST" in page.locator('.gv-drone[data-drone-id="uav-b"]').inner_text()
            page.screenshot(path=str(tmp_path / "groundview-lost.png"))

            # the time slider: 50 min ago there was no fire; 7 min ago only the 10-min-old detections
            def slide(v):
                page.evaluate("v => { const s = document.getElementById('slider'); s.value = String(v);"
                              " s.dispatchEvent(new Event('input')); }", v)

            slide(-3000)
            page.wait_for_function("() => window.groundview.mode === 'past' && window.groundview.pastFiresT"
                                   " && window.groundview.fires.length === 0", timeout=10000)
            slide(-420)
            page.wait_for_function("() => window.groundview.fires.length > 0 && !document.querySelector('path.gv-band-60')",
                                   timeout=10000)  # the newest band (seen < 1 min before then) is empty
            assert "?t=" in page.locator("#dl-kml").get_attribute("href")
            page.screenshot(path=str(tmp_path / "groundview-past.png"))
            page.click("#live")
            page.wait_for_function("() => window.groundview.mode === 'live' && window.groundview.bands === 3", timeout=10000)
            assert page.evaluate("window.groundview.clientErrors") == []
            browser.close()
            browser = None
        assert errors == [], errors
        assert outside == [], f"offline page fetched {outside}"

        # exports over HTTP, as a fire agency would download them
        code, headers, body = _get(f"http://127.0.0.1:{http_port}/export/firemap.geojson")
        assert code == 200 and headers["Content-Type"] == "application/geo+json" and "attachment" in headers["Content-Disposition"]
        fc = json.loads(body)
        _validate_geojson(fc)
        assert {d for f in fc["features"] if f["properties"]["kind"] == "fire" for d in f["properties"]["drones"]} == set(PLACES)
        code, headers, body = _get(f"http://127.0.0.1:{http_port}/export/firemap.kml?t={time.time() - 420:.0f}")
        assert code == 200 and "kml" in headers["Content-Type"]
        polys = _kml_polygons(body)
        assert len(polys) >= 1 and all(len(r) >= 4 and r[0] == r[-1] for r in polys)
        OUT.mkdir(exist_ok=True)
        shutil.copy(shot, OUT / "groundview.png")
        shutil.copy(tmp_path / "groundview-lost.png", OUT / "groundview-lost.png")
    finally:
        stop.set()
        if beat.is_alive():
            beat.join(3)
        if browser is not None:
            try:
                browser.close()
            except Exception:
                pass
        client.loop_stop()
        client.disconnect()
        out, err = stop_process(listener)
        broker.stop()
    assert listener.returncode == 0, err
    assert "ground view on http://127.0.0.1:" in err and "Traceback" not in err, err
    assert "malformed (ignored)" in err


def test_listen_http_errors_are_one_line(tmp_path):
    from conftest import run_cli

    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    r = run_cli("listen", "--transport", "mqtt", "--http", "0.0.0.0:0", "--duration", "1",
                env={"FIRESPOTTER_LISTEN_TOKEN": ""})
    assert r.returncode == 2 and "needs an access token" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run_cli("listen", "--transport", "mqtt", "--tiles", str(tmp_path), "--duration", "1")
    assert r.returncode == 2 and "only with --http" in r.stderr, r.stderr
