"""Every example in deploy/configs/ passes `firespotter config check`, and runs as written against local
services: a private mosquitto (started and stopped by PID) and a ground station (`firespotter listen`) for the
MQTT drone, a ground station as the Zenoh peer for the RTSP drone; `test://` stands in for the camera through
`--set source.uri=...`, and addresses, ports and folders are pointed at this machine the same way. Nothing else
in the files changes: the network sinks, [camera], [telemetry] and the model run as written."""

from __future__ import annotations

import json
import math
import os
import threading
import tomllib

import pytest

from conftest import REPO, run_cli
from helpers.net import MOSQUITTO, Mosquitto, free_port, port_open, start_listen, stop_process, wait_until

CONFIGS = REPO / "deploy" / "configs"
EXAMPLES = sorted(CONFIGS.glob("*.toml"))
NETWORK_SINKS = {"mqtt", "zenoh", "mavlink"}




def _local(path, tmp_path, uri: str, telemetry_port: int | None = None) -> list[str]:
    """--set arguments that point one example at this machine: the camera, folders, metrics port, telemetry."""
    data = tomllib.loads(path.read_text())
    sets = [f"source.uri={uri}", f"outbox.dir={tmp_path / 'outbox'}"]
    if data.get("metrics", {}).get("enabled"):
        sets.append(f"metrics.port={free_port()}")
    if data.get("telemetry", {}).get("source") == "mavlink":
        sets.append(f"telemetry.url=udpin:127.0.0.1:{telemetry_port or free_port()}")
    for i, sink in enumerate(data.get("sinks", [])):
        if sink["type"] == "files":
            sets.append(f"sinks[{i}].dir={tmp_path / 'results'}")
        if sink["type"] == "video" and "url" in sink:
            sets.append(f"sinks[{i}].url=rtp://127.0.0.1:{free_port()}")
    return sets


def _sink_index(path, kind: str) -> tuple[int, str]:
    sinks = tomllib.loads(path.read_text()).get("sinks", [])
    i = next(i for i, s in enumerate(sinks) if s["type"] == kind)
    return i, sinks[i].get("name", kind)


def _run(path, tmp_path, sets: list[str], env=None):
    args = ["run", "-c", str(path), "--summary-json", str(tmp_path / "summary.json")]
    for s in sets:
        args += ["--set", s]
    r = run_cli(*args, env=env, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads((tmp_path / "summary.json").read_text())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_passes_config_check(path):
    r = run_cli("config", "check", str(path))
    assert r.returncode == 0, r.stderr
    assert f"{path}: ok" in r.stdout


def test_both_drone_examples_carry_a_network_sink():
    drones = [p for p in EXAMPLES if p.name.startswith("drone-")]
    assert len(drones) >= 2
    for path in drones:
        data = tomllib.loads(path.read_text())
        assert NETWORK_SINKS & {s["type"] for s in data.get("sinks", [])}, f"{path.name} publishes nothing"
    csi = tomllib.loads((CONFIGS / "drone-csi-mqtt.toml").read_text())
    assert "camera" in csi and "telemetry" in csi


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed (make setup)")
def test_drone_csi_mqtt_runs_as_written(tmp_path):
    """TLS to the broker and signed messages, as the file says: the test makes a CA and a broker certificate, the
    drone's and the station's keys, and points `ca_certs`/`auth_key` at them."""
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed (mqtt extra)")
    pytest.importorskip("pymavlink", reason="pymavlink not installed (mavlink extra)")
    pytest.importorskip("cryptography", reason="cryptography not installed (auth extra)")
    from helpers.tak import make_pki

    path = CONFIGS / "drone-csi-mqtt.toml"
    pki = make_pki(tmp_path / "pki")
    keys = tmp_path / "keys"
    for name in ("uav-02", "icp-laptop"):
        r = run_cli("keys", "new", name, "--out", str(keys))
        assert r.returncode == 0, r.stderr
    broker = Mosquitto(tmp_path / "broker", persistence=False)
    broker.conf.write_text(broker.conf.read_text() + f"cafile {pki['ca']}\ncertfile {pki['server_cert']}\n"
                           f"keyfile {pki['server_key']}\n")
    broker.start()
    # the ground station runs from its own example, pointed at this broker and at free local ports
    geojson = tmp_path / "firemap.geojson"
    ground = start_listen("--print-every", "0.5",
                          "-c", str(CONFIGS / "ground-laptop.toml"), "--port", str(broker.port), "--tls", "--ca-certs",
                          str(pki["ca"]), "--trust", str(keys / "uav-02.pub"), "--auth-key", str(keys / "icp-laptop.key"),
                          "--http", f"127.0.0.1:{free_port()}", "--geojson", str(geojson), "--duration", "120", cwd=REPO)
    try:
        client_id = tomllib.loads((CONFIGS / "ground-laptop.toml").read_text())["mqtt"]["client_id"]
        assert wait_until(lambda: f"as {client_id}" in broker.log(), 20), broker.log()[-400:]
        i, name = _sink_index(path, "mqtt")
        tel_port = free_port()
        sets = _local(path, tmp_path, "test://?size=128x128&fps=10&frames=30", telemetry_port=tel_port) + [
            f"sinks[{i}].host=127.0.0.1", f"sinks[{i}].port={broker.port}", f"sinks[{i}].ca_certs={pki['ca']}",
            f"sinks[{i}].auth_key={keys / 'uav-02.key'}"]
        flying = threading.Event()
        autopilot = threading.Thread(target=_autopilot, args=(tel_port, flying), daemon=True)
        autopilot.start()  # the flight controller: position and attitude over MAVLink, as [telemetry] expects
        try:
            summary = _run(path, tmp_path, sets, env={"FIRESPOTTER_MQTT_PASSWORD": "example"})
        finally:
            flying.set()
            autopilot.join(5)
        assert wait_until(lambda: _fire_polygons(geojson), 10), "the ground station mapped no geo-referenced fire"
    finally:
        _, err = stop_process(ground, timeout=20)
        broker.stop()
    delivery = summary["sinks"][name]["delivery"]
    assert summary["frames"] > 0 and summary["fire_frames"] > 0
    assert delivery["fire_messages"] > 0 and delivery["acked"] == delivery["fire_messages"], delivery
    assert delivery["outbox"]["pending"] == 0
    assert (tmp_path / "results" / "events.jsonl").is_file()
    assert f"{delivery['fire_messages']} fire messages from 1 drones" in err, err[-600:]
    assert "connected to mqtt broker" in err
    fires = _fire_polygons(geojson)
    assert fires and all(abs(lat - 46.5) < 0.01 and abs(lon - 7.5) < 0.01 for lon, lat in fires), fires
    geo = summary["processors"]["geo"]
    assert geo["with_pose"] > 0 and geo["telemetry_errors"] == 0, geo


def test_drone_rtsp_zenoh_runs_as_written(tmp_path):
    """Signed messages and signed acks, as the file says (keys made here); the router's TLS is the one thing
    swapped: the drone connects over tcp to a local ground station, with an empty Zenoh config file."""
    pytest.importorskip("zenoh", reason="eclipse-zenoh not installed (zenoh extra)")
    pytest.importorskip("cryptography", reason="cryptography not installed (auth extra)")
    from firespotter.runtime.gst import gst_available

    if not gst_available():
        pytest.skip("GStreamer/PyGObject not installed (make setup): the example streams video over RTP")
    path = CONFIGS / "drone-rtsp-zenoh.toml"
    keys = tmp_path / "keys"
    for name in ("uav-01", "ground"):
        r = run_cli("keys", "new", name, "--out", str(keys))
        assert r.returncode == 0, r.stderr
    zenoh_conf = tmp_path / "zenoh.json5"
    zenoh_conf.write_text("{}\n")
    port = free_port()
    ground = start_listen("--print-every", "0.5",
                          "--transport", "zenoh", "--listen", f"tcp/127.0.0.1:{port}", "--no-multicast", "--station",
                          "ground", "--auth-key", str(keys / "ground.key"), "--trust", str(keys / "uav-01.pub"),
                          "--duration", "120", cwd=REPO)
    try:
        assert wait_until(lambda: port_open(port), 20)
        i, name = _sink_index(path, "zenoh")
        sets = _local(path, tmp_path, "test://?size=128x128&fps=10&frames=40") + [
            f'sinks[{i}].connect=["tcp/127.0.0.1:{port}"]', f"sinks[{i}].config_file={zenoh_conf}",
            f"sinks[{i}].auth_key={keys / 'uav-01.key'}", f'sinks[{i}].trusted_keys=["{keys / "ground.pub"}"]']
        summary = _run(path, tmp_path, sets)
    finally:
        _, err = stop_process(ground, timeout=20)
    delivery = summary["sinks"][name]["delivery"]
    assert summary["frames"] > 0 and summary["fire_frames"] > 0
    assert delivery["fire_messages"] > 0 and delivery["outbox"]["pending"] == 0, delivery  # signed acks took them
    assert summary["sinks"]["video"]["errors"] == 0
    assert f"{delivery['fire_messages']} fire messages from 1 drones" in err, err[-600:]


@pytest.mark.parametrize("name", ["ci.toml", "laptop-replay.toml"])
def test_local_examples_run_as_written(tmp_path, name):
    path = CONFIGS / name
    summary = _run(path, tmp_path, _local(path, tmp_path, "test://?size=128x128&frames=12&fps=15") + ["runtime.drain_timeout_s=5"])
    assert summary["frames"] > 0 and (tmp_path / "results" / "events.jsonl").is_file()


def _autopilot(port: int, stop: threading.Event) -> None:
    """A flight controller at 100 m over (46.5, 7.5), level, heading east, at 10 Hz until `stop`."""
    os.environ.setdefault("MAVLINK20", "1")
    from pymavlink import mavutil

    tx = mavutil.mavlink_connection(f"udpout:127.0.0.1:{port}", source_system=1, dialect="common")
    try:
        while not stop.wait(0.1):
            tx.mav.global_position_int_send(1000, int(46.5 * 1e7), int(7.5 * 1e7), 600_000, 100_000, 0, 0, 0, 9000)
            tx.mav.attitude_send(1000, 0.0, 0.0, math.radians(90), 0, 0, 0)
    finally:
        tx.close()


def _fire_polygons(path) -> list[tuple[float, float]]:
    """Centroids (lon, lat) of the fire polygons in a fleet map file (empty when none or not written yet)."""
    try:
        fc = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    out = []
    for f in fc["features"]:
        if f["properties"]["kind"] == "fire":
            ring = f["geometry"]["coordinates"][0]
            out.append((sum(p[0] for p in ring) / len(ring), sum(p[1] for p in ring) / len(ring)))
    return out
