"""`firespotter listen`, the ground station: two simulated drones -> one fleet fire map with both drones'
fires; malformed messages are counted, never fatal; the fleet map's union."""

from __future__ import annotations

import json
import time

import pytest

from conftest import REPO, run_cli
from helpers.net import MOSQUITTO, Mosquitto, start_listen, stop_process, fire_result, free_port, wait_until
from firespotter.net import wire
from firespotter.runtime.types import Pose




def _map_drones(path):
    try:
        fc = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    return {d for f in fc["features"] if f["properties"]["kind"] == "fire" for d in f["properties"]["drones"]}


def test_two_zenoh_drones_make_one_fleet_map_and_bad_messages_are_counted(tmp_path):
    pytest.importorskip("zenoh", reason="eclipse-zenoh is not installed")
    from firespotter.plugins.sinks.zenoh import ZenohOptions, ZenohSink

    port = free_port()
    endpoint = f"tcp/127.0.0.1:{port}"
    geojson = tmp_path / "fleet.geojson"
    listener = start_listen("--transport", "zenoh", "--listen", endpoint, "--no-multicast", "--geojson", str(geojson),
                       "--duration", "40", "--print-every", "0.5", cwd=REPO)
    sinks = []
    try:
        places = {"uav-a": (46.0, 7.0), "uav-b": (46.01, 7.02)}  # ~2 km apart: two separate fires
        for drone, (lat, lon) in places.items():
            s = ZenohSink(ZenohOptions(connect=[endpoint], multicast_scouting=False, min_interval_ms=0,
                                       resend_after_s=1.0, outbox=tmp_path / f"{drone}.sqlite", close_timeout_s=0),
                          name=f"zenoh-{drone}")
            s.start({"drone_id": drone})
            sinks.append((s, Pose(lat=lat, lon=lon, alt_agl_m=120.0, pitch_deg=-90.0, hfov_deg=70.0)))
        assert wait_until(lambda: all(s._ready() for s, _ in sinks), 20), "the listener should subscribe"
        sess = sinks[0][0].session
        sess.put("firespotter/uav-a/fire", b"{not json")  # malformed: counted, ignored
        sess.put("firespotter/uav-a/fire", json.dumps({"v": 1, "kind": "fire"}).encode())  # invalid: same
        for seq in range(3):
            for s, pose in sinks:
                s.send(fire_result(seq, size=96, pose=pose))
        assert wait_until(lambda: all(s.outbox.pending() == 0 for s, _ in sinks), 20), "acks empty both outboxes"
        assert wait_until(lambda: _map_drones(geojson) == {"uav-a", "uav-b"}, 10), geojson.read_text()[:300] \
            if geojson.exists() else "no map written"
    finally:
        out, err = stop_process(listener)
        for s, _ in sinks:
            s.close()
    assert listener.returncode == 0, err
    fc = json.loads(geojson.read_text())
    fires = [f for f in fc["features"] if f["properties"]["kind"] == "fire"]
    drones = [f for f in fc["features"] if f["properties"]["kind"] == "drone"]
    assert {d["properties"]["drone_id"] for d in drones} == {"uav-a", "uav-b"}
    for f in fires:
        assert f["geometry"]["type"] == "Polygon" and f["properties"]["area_m2"] > 0
        ring = f["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 4
        lat = sum(p[1] for p in ring) / len(ring)
        drone = f["properties"]["drones"][0]
        assert abs(lat - places[drone][0]) < 0.002, "each fire lies under its drone"
    assert "2 malformed (ignored)" in err and "6 fire messages from 2 drones" in err, err
    assert "uav-a" in out and "uav-b" in out  # the table


def test_mqtt_listener_receives_acks_and_survives_garbage(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    from firespotter.plugins.sinks.mqtt import MqttOptions, MqttSink

    broker = Mosquitto(tmp_path / "broker").start()
    geojson = tmp_path / "map.geojson"
    listener = start_listen("--transport", "mqtt", "--port", str(broker.port), "--geojson", str(geojson), "--duration", "30",
                       "--station", "gs1", "--print-every", "0.5", cwd=REPO)
    sink = None
    try:
        assert wait_until(lambda: "as firespotter-listen-gs1" in broker.log(), 15), broker.log()[-400:]
        time.sleep(0.3)  # subscribed after CONNACK
        import paho.mqtt.client as mqtt

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="garbage")
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        c.publish("firespotter/uav-m/fire", b"\x00\xff garbage", qos=1).wait_for_publish(5)
        c.publish("firespotter/uav-m/state", b"[]", qos=1).wait_for_publish(5)
        acks = []
        c.on_message = lambda cl, u, m: acks.append(wire.loads(m.payload))
        c.subscribe("firespotter/+/ack", qos=0)
        sink = MqttSink(MqttOptions(port=broker.port, min_interval_ms=0, outbox=tmp_path / "o.sqlite",
                                    close_timeout_s=1), name="mqtt")
        sink.start({"drone_id": "uav-m"})
        time.sleep(0.3)
        pose = Pose(lat=-33.9, lon=151.2, alt_agl_m=80.0)
        for seq in range(3):
            sink.send(fire_result(seq, size=64, pose=pose))
        assert wait_until(lambda: len(acks) >= 3, 15), "the listener acknowledges each fire message"
        assert all(a["kind"] == "ack" and a["station"] == "gs1" and a["drone_id"] == "uav-m" for a in acks)
        assert wait_until(lambda: _map_drones(geojson) == {"uav-m"}, 10)
        c.loop_stop()
        c.disconnect()
    finally:
        out, err = stop_process(listener)
        if sink is not None:
            sink.close()
        broker.stop()
    assert listener.returncode == 0, err
    assert "2 malformed (ignored)" in err and "3 fire messages from 1 drones" in err, err


def test_listen_errors_are_one_line(tmp_path):
    from firespotter.plugins.commands.listen import listen
    from firespotter.runtime.errors import FirespotterError

    with pytest.raises(FirespotterError, match="expected zenoh or mqtt"):
        listen(transport="carrier-pigeon")
    if MOSQUITTO is not None:  # through the real CLI: one line, exit 2, no traceback
        r = run_cli("listen", "--transport", "mqtt", "--host", "no-such-broker.invalid", "--duration", "1")
        assert r.returncode == 2 and "does not resolve" in r.stderr and "Traceback" not in r.stderr


def test_fleet_map_unions_overlapping_fires_from_two_drones():
    from firespotter.ground.fleet import FleetMap
    from firespotter.ground.station import GroundStation

    gs = GroundStation("gs", FleetMap(window_s=60))
    lat0, lon0 = 46.0, 7.0
    d = 0.0005  # ~55 m in latitude

    def msg(drone, lon_shift):
        ring = [(lon0 + lon_shift, lat0), (lon0 + lon_shift + d, lat0), (lon0 + lon_shift + d, lat0 + d),
                (lon0 + lon_shift, lat0 + d)]
        r = fire_result(0, size=32)
        for reg in r.regions:
            reg.geo_polygon, reg.area_m2 = ring, 100.0
        r.pose = Pose(lat=lat0, lon=lon0, alt_agl_m=100)
        return wire.fire_message(r, drone)

    acks = gs.handle("firespotter/a/fire", wire.dumps(msg("a", 0.0)))
    assert len(acks) == 1 and acks[0][0] == "firespotter/a/ack"
    gs.handle("firespotter/b/fire", wire.dumps(msg("b", d / 2)))  # overlaps half of a's
    dup = msg("b", d / 2)
    gs.handle("firespotter/b/fire", wire.dumps(dup))
    assert gs.handle("firespotter/b/fire", wire.dumps(dup)) and gs.duplicates == 1  # acked again, not counted
    assert gs.handle("firespotter/b/fire", b"{") == [] and gs.bad == 1
    assert gs.handle("weird/topic", b"{}") == [] and gs.bad == 2
    fc = gs.fleet.geojson()
    fires = [f for f in fc["features"] if f["properties"]["kind"] == "fire"]
    assert len(fires) == 1, "overlapping fires dissolve into one polygon"
    props = fires[0]["properties"]
    assert props["drones"] == ["a", "b"] and props["detections"] == 3
    from firespotter.runtime.geo import lonlat_to_ne, polygon_area
    import numpy as np

    one = polygon_area(lonlat_to_ne(np.array([(lon0, lat0), (lon0 + d, lat0), (lon0 + d, lat0 + d), (lon0, lat0 + d)]),
                                    lat0, lon0))
    assert abs(props["area_m2"] - 1.5 * one) / (1.5 * one) < 0.05  # union = 1.5 squares
    assert gs.fleet.prune(now=time.time() + 120) and not gs.fleet.detections
