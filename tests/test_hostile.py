"""Hostile input against the drone links and the ground station (docs/security.md), with the real components:
a real mosquitto, real Zenoh peers, real SQLite, `firespotter listen --http` as a process.

One test per attack: a decompression bomb, huge polygons and a flood of fake drones against the default listener
(it stays up, its memory growth stays bounded, a well-behaved drone is acknowledged within 2 s, a poison message
does not come back after a restart); forged, replayed and unsigned messages and forged acks with keys; a corrupted
outbox; slow HTTP clients; non-finite configuration numbers; artifact manifests pointing outside themselves.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from conftest import REPO, run_cli
from helpers.net import MOSQUITTO, Mosquitto, fire_result, free_port, wait_until
from firespotter.net import wire
from firespotter.runtime.types import Pose, SourceState

sys.path.insert(0, str(REPO / "bench"))
from hostile import png_bomb  # noqa: E402  (the bench's attack material: one decompression bomb, not two)

import importlib.util

needs_crypto = pytest.mark.skipif(importlib.util.find_spec("cryptography") is None,
                                  reason="the 'cryptography' package is not installed (pip install 'firespotter[auth]')")


# --- material ---------------------------------------------------------------------------------------------




def fire_msg(drone: str, seq: int, lat: float = 46.5, lon: float = 7.5, size: int = 128) -> dict:
    pose = Pose(lat=lat, lon=lon, alt_agl_m=120.0, pitch_deg=-90.0, hfov_deg=70.0)
    return wire.fire_message(fire_result(seq, size=size, pose=pose), drone)


def bomb_msgs(drone: str) -> list[bytes]:
    data = base64.b64encode(png_bomb(20000, 20000)).decode()
    honest = fire_msg(drone, 1)  # the PNG and the message agree on 20000x20000
    honest["mask"] = {"format": "png", "width": 20000, "height": 20000, "data": data}
    lying = fire_msg(drone, 2)  # the message says 128x128, the PNG header 20000x20000
    lying["mask"] = {"format": "png", "width": 128, "height": 128, "data": data}
    return [wire.dumps(honest), wire.dumps(lying)]


def polygon_msgs(drone: str) -> list[bytes]:
    big = fire_msg(drone, 3)
    big["regions"][0]["polygon"] = [[i % 128, (i * 7) % 128] for i in range(150_000)]
    small = fire_msg(drone, 4)  # 150,000 one-digit points: under the payload bound
    small["regions"][0]["polygon"] = [[i % 10, (i * 7) % 10] for i in range(150_000)]
    many = fire_msg(drone, 5)  # within every per-polygon bound, too many points in all
    many["regions"] = [dict(many["regions"][0], id=k, polygon=[[i % 128, i % 97] for i in range(4096)])
                       for k in range(14)]
    return [wire.dumps(big), wire.dumps(small), wire.dumps(many)]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:  # not listening (yet)
        return 0, b""


def listen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "firespotter", "listen", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def stop(p: subprocess.Popen) -> str:
    if p.poll() is None:
        os.kill(p.pid, signal.SIGTERM)
    try:
        return p.communicate(timeout=20)[1]
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        return p.communicate(timeout=5)[1]


class Client:
    """A paho client on the test broker that records acks per id (the 'good drone' and the attacker)."""

    def __init__(self, port: int, name: str):
        import paho.mqtt.client as mqtt

        self.acks: dict[str, float] = {}
        self.payloads: list[bytes] = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on(self, c, u, m):
        self.payloads.append(m.payload)
        if m.topic.endswith("/ack"):
            for i in wire.loads(m.payload)["ids"]:
                self.acks.setdefault(i, time.monotonic())

    def sub(self, topic: str) -> None:
        self.c.subscribe(topic, 1)
        time.sleep(0.3)

    def pub(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def ack_latency(self, drone: str, seq: int, timeout: float = 10.0) -> float:
        msg = fire_msg(drone, seq)
        t0 = time.monotonic()
        self.pub(wire.topic(drone, "fire"), wire.dumps(msg))
        assert wait_until(lambda: msg["id"] in self.acks, timeout), f"no ack for {drone}'s message"
        return self.acks[msg["id"]] - t0

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


needs_mqtt = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")


# --- bounded decoding, no network -------------------------------------------------------------------------


def test_wire_refuses_bombs_and_oversized_input_before_decoding():
    from firespotter.ground.view import thumbnail

    lying = wire.loads(bomb_msgs("uav-x")[1])
    with pytest.raises(wire.WireError, match="PNG is 20000x20000, message says 128x128"):
        wire.decode_mask(lying)
    with pytest.raises(wire.WireError, match="message.mask"):
        wire.loads(bomb_msgs("uav-x")[0])  # the schema's cap on mask sides
    t0 = time.monotonic()
    th = thumbnail(lying, time.time())
    assert th["src"] is None and "too large" in th["note"] and time.monotonic() - t0 < 0.5  # never decoded
    small_bomb = dict(lying["mask"], data=base64.b64encode(png_bomb(4000, 4000)).decode())  # under the size cap
    th = thumbnail(dict(lying, mask=small_bomb), time.time())
    assert th["src"] is None and "PNG is 4000x4000" in th["note"]  # the page never gets it
    # an alert snapshot whose JPEG header claims 60000x60000 (what a browser would decode) never reaches the page
    import cv2

    jpeg = bytearray(cv2.imencode(".jpg", np.full((64, 96, 3), 128, np.uint8))[1].tobytes())
    assert wire.jpeg_size(bytes(jpeg)) == (96, 64)
    sof = next(i for i in range(2, len(jpeg) - 1) if jpeg[i] == 0xFF and jpeg[i + 1] in (0xC0, 0xC2))
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    snap = {"format": "jpeg", "width": 96, "height": 64, "crop": [0, 0, 96, 64], "quality": 75,
            "data": base64.b64encode(bytes(jpeg)).decode()}
    th = thumbnail(dict(lying, mask=None, snapshot=snap), time.time())
    assert th["snapshot"] is None and "snapshot size does not match" in th["note"], th["note"]
    with pytest.raises(wire.WireError, match="128x128 is larger than its 64x64 frame"):
        m = fire_msg("uav-x", 1, size=128)
        small = wire.decode_mask(m)
        m["frame"] = {"width": 64, "height": 64}
        wire.decode_mask(m)
    assert small.dtype == np.uint8
    big, small, many = polygon_msgs("uav-x")
    with pytest.raises(wire.WireError, match="1048576 bytes"):
        wire.loads(big)
    with pytest.raises(wire.WireError, match="more than 50000 polygon points in all"):
        wire.loads(small)
    with pytest.raises(wire.WireError, match=r"polygon points in all"):
        wire.loads(many)
    with pytest.raises(wire.WireError, match="larger than the 1048576 bytes"):
        wire.loads(b"{" + b" " * wire.MAX_PAYLOAD + b"}")
    # the drone side never builds what receivers refuse: a huge outline is thinned
    from firespotter.runtime.types import FireRegion

    r = fire_result(0, size=128)
    ring = np.array([[int(64 + 60 * np.cos(a)), int(64 + 60 * np.sin(a))] for a in np.linspace(0, 6.28, 9000)])
    r.regions = [FireRegion(id=0, polygon=ring, area_px=10, bbox=(0, 0, 128, 128), centroid=(64.0, 64.0),
                            mean_prob=0.9, peak_prob=0.9)]
    assert len(wire.loads(wire.dumps(wire.fire_message(r, "uav-x")))["regions"][0]["polygon"]) <= wire.MAX_RING_POINTS


# --- the default listener under attack --------------------------------------------------------------------


@needs_mqtt
def test_listen_http_survives_bomb_polygons_and_fake_drones(tmp_path):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    broker = Mosquitto(tmp_path / "broker").start()
    http_port = free_port()
    args = ("--transport", "mqtt", "--port", str(broker.port), "--http", f"127.0.0.1:{http_port}",
            "--station", "gs", "--client-id", "gs-fixed", "--print-every", "60")
    gs = listen(*args)
    good = Client(broker.port, "good-drone")
    bad = Client(broker.port, "attacker")
    base = f"http://127.0.0.1:{http_port}"
    figures = {}
    try:
        assert wait_until(lambda: http_get(base + "/healthz", 1)[0] == 200 if gs.poll() is None else True, 30)
        good.sub("firespotter/good/ack")
        assert wait_until(lambda: _try_ack(good), 30), "the listener should acknowledge a good drone"
        for k in range(3):  # warm up: thumbnails, the fire map, /api/state
            good.ack_latency("good", 10 + k)
        http_get(base + "/api/state")
        time.sleep(1.5)
        rss0 = rss_mb(gs.pid)

        for payload in bomb_msgs("evil") * 3:
            bad.pub("firespotter/evil/fire", payload)
        lat = max(good.ack_latency("good", 20 + k) for k in range(3))
        figures["bomb"] = (rss_mb(gs.pid) - rss0, lat)
        assert lat <= 2.0, f"a good drone's ack took {lat:.2f} s during the mask bomb"
        assert figures["bomb"][0] < 300, f"the mask bomb grew the listener by {figures['bomb'][0]:.0f} MB"

        rss1 = rss_mb(gs.pid)
        for payload in polygon_msgs("evil") * 3:
            bad.pub("firespotter/evil/fire", payload)
        lat = good.ack_latency("good", 30)
        figures["polygon"] = (rss_mb(gs.pid) - rss1, lat)
        assert lat <= 2.0, f"a good drone's ack took {lat:.2f} s during the polygon flood"
        assert figures["polygon"][0] < 60, f"150,000-point polygons grew the listener by {figures['polygon'][0]:.0f} MB"

        rng = np.random.default_rng(0)
        for k in range(300):  # 300 fake drones, each with a noisy mask (the largest thumbnail allowed) and a pose
            m = fire_msg(f"fake-{k:03d}", k, lat=46.0 + rng.uniform(-0.5, 0.5), lon=7.0 + rng.uniform(-0.5, 0.5))
            noise = (rng.random((128, 128)) > 0.5).astype(np.uint8) * 255
            m["mask"] = wire.encode_mask(noise, 128)
            bad.pub(wire.topic(m["drone_id"], "fire"), wire.dumps(m))
            bad.pub(wire.topic(m["drone_id"], "state"), wire.dumps(wire.state_message(m["drone_id"], running=False)))
        lat = good.ack_latency("good", 40)
        assert lat <= 2.0, f"a good drone's ack took {lat:.2f} s during the drone flood"
        time.sleep(2.5)  # the fire map of 300 scattered sites
        c0, t0 = cpu_s(gs.pid), time.monotonic()
        time.sleep(4.0)
        figures["cpu_share"] = (cpu_s(gs.pid) - c0) / (time.monotonic() - t0)
        assert figures["cpu_share"] < 0.5, f"the listener used {figures['cpu_share']:.0%} of a core with 300 fire sites"
        code, body = http_get(base + "/api/state")
        state = json.loads(body)
        figures["drones"] = (len(body) / 1e6, state["counters"]["drones"])
        assert code == 200 and len(body) < 5e6, f"/api/state is {len(body) / 1e6:.1f} MB with 300 fake drones"
        assert state["counters"]["malformed"] >= 12 and state["counters"]["authenticated"] is False
        print(f"\nhostile figures (RSS growth MB, worst ack s / state MB, drones kept): {figures}")
    finally:
        good.close()
        bad.close()
        err = stop(gs)
    assert gs.returncode == 0 and "Traceback" not in err, err[-3000:]
    assert "links unauthenticated" in err

    # The poison messages were acknowledged (PUBACK) and dropped: the persistent session does not bring them back.
    gs2 = listen(*args, "--duration", "6")
    try:
        err2 = gs2.communicate(timeout=60)[1]
    finally:
        broker.stop()
    assert gs2.returncode == 0 and "0 malformed (ignored)" in err2, err2[-2000:]


def _try_ack(client: Client) -> bool:
    try:
        return client.ack_latency("good", 0, timeout=1.0) < 5
    except AssertionError:
        return False


# --- with keys --------------------------------------------------------------------------------------------


def _keys(tmp_path, *names: str):
    from firespotter.net import auth

    for folder, name in names:
        auth.new_key_pair(name, tmp_path / folder)
    return tmp_path


@needs_crypto
def test_keys_new_makes_a_private_and_a_public_key(tmp_path):
    r = run_cli("keys", "new", "uav-07", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "uav-07.key").stat().st_mode & 0o077 == 0 and (tmp_path / "uav-07.pub").is_file()
    r = run_cli("keys", "new", "uav-07", "--out", str(tmp_path))
    assert r.returncode != 0 and "refusing to overwrite" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("keys", "new", "bad/name", "--out", str(tmp_path))
    assert r.returncode != 0 and "1-64 characters" in r.stderr
    (tmp_path / "uav-07.key").chmod(0o644)
    from firespotter.net import auth

    with pytest.raises(wire.WireError, match="readable by other users"):
        auth.load_private_key(tmp_path / "uav-07.key")


@needs_crypto
@needs_mqtt
def test_forged_replayed_and_unsigned_fires_are_rejected_and_counted(tmp_path):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    from firespotter.net import auth
    from firespotter.plugins.sinks.mqtt import MqttOptions, MqttSink

    _keys(tmp_path, ("drones", "uav-1"), ("station", "gs"), ("attacker", "uav-1"))
    broker = Mosquitto(tmp_path / "broker").start()
    http_port = free_port()
    gs = listen("--transport", "mqtt", "--port", str(broker.port), "--http", str(http_port), "--station", "gs",
                "--trust", str(tmp_path / "drones"), "--auth-key", str(tmp_path / "station" / "gs.key"),
                "--print-every", "60")
    spy = Client(broker.port, "spy")
    sink = None
    base = f"http://127.0.0.1:{http_port}"
    try:
        assert wait_until(lambda: gs.poll() is not None or http_get(base + "/healthz", 1)[0] == 200, 30)
        spy.sub("firespotter/+/fire")
        spy.sub("firespotter/uav-1/ack")
        sink = MqttSink(MqttOptions(port=broker.port, auth_key=tmp_path / "drones" / "uav-1.key", min_interval_ms=0,
                                    outbox=tmp_path / "uav-1.sqlite", close_timeout_s=0), name="mqtt")
        sink.start({"drone_id": "uav-1"})
        counters = lambda: json.loads(http_get(base + "/api/state")[1])["counters"]  # noqa: E731
        assert wait_until(lambda: sink._ready(), 20)
        sink.send(fire_result(0, size=96, pose=Pose(lat=46.5, lon=7.5, alt_agl_m=100.0, pitch_deg=-90.0)))
        assert wait_until(lambda: counters()["fire_messages"] == 1, 20), "the signed fire should be accepted"
        signed = next(p for p in spy.payloads if b'"kind":"fire"' in p)
        assert wait_until(lambda: any(b'"kind":"ack"' in p for p in spy.payloads), 10)
        ack = next(p for p in spy.payloads if b'"kind":"ack"' in p)
        assert auth.Verifier(auth.load_public_keys([tmp_path / "station"])).check(ack) == "gs"  # acks are signed

        topic = wire.topic("uav-1", "fire")
        forged = auth.Signer.from_file(tmp_path / "attacker" / "uav-1.key")  # the right name, the wrong key
        new_id = signed.replace(json.loads(signed)["id"].encode(), wire.new_id().encode())  # an old fire, a new id
        spy.pub(topic, forged.sign(wire.dumps(fire_msg("uav-1", 7))))
        spy.pub(topic, new_id)
        spy.pub(topic, signed)  # the exact bytes again: a duplicate by id (acked again, not a new detection)
        spy.pub(topic, wire.dumps(fire_msg("uav-1", 8)))  # unsigned
        spy.pub(wire.topic("uav-1", "state"), wire.dumps(wire.state_message("uav-1", running=False)))  # spoofed stop
        spy.sub("firespotter/uav-1/state")
        assert wait_until(lambda: sum(b'"kind":"state"' in p and b'"auth"' in p for p in spy.payloads) >= 1, 10)
        state = next(p for p in spy.payloads if b'"kind":"state"' in p and b'"auth"' in p)
        spy.pub(wire.topic("uav-1", "state"), state)  # a signed state sent again: refused
        want = {"bad_signature": 2, "replay": 1, "unsigned": 2}
        assert wait_until(lambda: all(counters()["rejected"][k] >= v for k, v in want.items()), 10), counters()
        c = counters()
        assert c["fire_messages"] == 1 and c["duplicates"] >= 1 and c["authenticated"] is True, c
        drone = next(d for d in json.loads(http_get(base + "/api/state")[1])["drones"] if d["id"] == "uav-1")
        assert drone["state"] != "stopped"
    finally:
        if sink is not None:
            sink.close()
        spy.close()
        err = stop(gs)
        broker.stop()
    assert gs.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert "rejected (authentication)" in err


@needs_mqtt
def test_broker_acl_lets_a_drone_publish_only_under_its_own_id(tmp_path):
    mqtt = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    import shutil

    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.skip("mosquitto_passwd is not installed")
    users = {"uav-01": "pw-uav-01", "uav-02": "pw-uav-02", "ground": "pw-ground"}
    pwfile = tmp_path / "passwd"
    for k, (user, pw) in enumerate(users.items()):
        subprocess.run([passwd, "-b", *(["-c"] if k == 0 else []), str(pwfile), user, pw], check=True,
                       capture_output=True)
    broker = Mosquitto(tmp_path / "broker", persistence=False)
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
                           + f"password_file {pwfile}\nacl_file {REPO / 'deploy' / 'mosquitto' / 'firespotter.acl'}\n")
    broker.start()
    got: list[str] = []
    clients = []

    def client(user):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"acl-{user}")
        c.username_pw_set(user, users[user])
        c.on_message = lambda cl, u, m: got.append(m.topic)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        clients.append(c)
        return c

    try:
        ground = client("ground")
        ground.subscribe("firespotter/+/fire", 1)
        time.sleep(0.5)
        drone = client("uav-01")
        time.sleep(0.3)
        for topic in ("firespotter/uav-02/fire", "firespotter/uav-01/fire"):  # another drone's id, then its own
            drone.publish(topic, b"{}", qos=1).wait_for_publish(5)
        assert wait_until(lambda: "firespotter/uav-01/fire" in got, 5), got
        time.sleep(0.5)
        assert got == ["firespotter/uav-01/fire"], got
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        broker.stop()


def test_zenoh_access_control_lets_a_drone_publish_only_under_its_own_id(tmp_path):
    zenoh = pytest.importorskip("zenoh", reason="eclipse-zenoh is not installed")
    users = tmp_path / "users.txt"
    users.write_text("uav-01:pw-uav-01\nground:pw-ground\n")
    endpoint = f"tcp/127.0.0.1:{free_port()}"
    conf = zenoh.Config.from_file(str(REPO / "deploy" / "zenoh" / "station-acl.json5"))
    conf.insert_json5("listen/endpoints", json.dumps([endpoint]))
    conf.insert_json5("transport/auth/usrpwd", json.dumps({"user": "ground", "password": "pw-ground",
                                                           "dictionary_file": str(users)}))
    station = zenoh.open(conf)
    got: list[str] = []
    sub = station.declare_subscriber("firespotter/*/fire", lambda sample: got.append(str(sample.key_expr)))
    dconf = zenoh.Config()
    for key, value in {"mode": "peer", "connect/endpoints": [endpoint], "scouting/multicast/enabled": False,
                       "transport/auth/usrpwd": {"user": "uav-01", "password": "pw-uav-01",
                                                 "dictionary_file": str(users)}}.items():
        dconf.insert_json5(key, json.dumps(value))
    drone = zenoh.open(dconf)
    try:
        time.sleep(1.0)
        drone.put("firespotter/uav-02/fire", b"{}")  # another drone's id: dropped by the station
        drone.put("firespotter/uav-01/fire", b"{}")
        assert wait_until(lambda: "firespotter/uav-01/fire" in got, 5), got
        time.sleep(0.5)
        assert got == ["firespotter/uav-01/fire"], got
    finally:
        drone.close()
        sub.undeclare()
        station.close()


@needs_crypto
def test_forged_acks_cannot_empty_a_zenoh_outbox(tmp_path):
    zenoh = pytest.importorskip("zenoh", reason="eclipse-zenoh is not installed")
    from firespotter.ground.fleet import FleetMap
    from firespotter.ground.station import GroundStation
    from firespotter.ground.transports import ZenohListener
    from firespotter.net import auth
    from firespotter.plugins.sinks.zenoh import ZenohOptions, ZenohSink

    _keys(tmp_path, ("drones", "uav-1"), ("station", "gs"), ("rogue", "gs"))
    port = free_port()
    endpoint = f"tcp/127.0.0.1:{port}"
    conf = zenoh.Config()
    conf.insert_json5("mode", '"peer"')
    conf.insert_json5("listen/endpoints", json.dumps([endpoint]))
    conf.insert_json5("scouting/multicast/enabled", "false")
    rogue = zenoh.open(conf)
    forger = auth.Signer.from_file(tmp_path / "rogue" / "gs.key")  # calls itself "gs", is not

    def forge(sample):  # acknowledge every fire at once, three ways
        msg = wire.loads(sample.payload.to_bytes())
        ack = wire.dumps(wire.ack_message("uav-1", [msg], "gs"))
        for payload in (ack, forger.sign(ack), ack[:-1] + b',"auth":{"key":"gs","t_ns":1,"sig":"' + b"A" * 86 + b'=="}}'):
            rogue.put("firespotter/uav-1/ack", payload)

    sub = rogue.declare_subscriber("firespotter/*/fire", forge)
    sink = ZenohSink(ZenohOptions(connect=[endpoint], multicast_scouting=False, min_interval_ms=0, resend_after_s=0.5,
                                  auth_key=tmp_path / "drones" / "uav-1.key", trusted_keys=[tmp_path / "station"],
                                  outbox=tmp_path / "uav-1.sqlite", close_timeout_s=0), name="zenoh")
    gs = None
    try:
        sink.start({"drone_id": "uav-1"})
        for seq in range(3):
            sink.send(fire_result(seq, size=64))
        assert wait_until(lambda: sink.bad_acks >= 9, 15), sink.bad_acks
        assert sink.outbox.pending() == 3, "forged acks must not empty the outbox"
        rej = sink.ack_verifier.rejected
        assert rej["unsigned"] >= 3 and rej["bad_signature"] >= 6, rej
        from types import SimpleNamespace

        from firespotter.runtime.metrics import PipelineMetrics

        metrics = PipelineMetrics({})  # the drone's /metrics counts them by reason
        metrics.update(SimpleNamespace(frames_out=0, fire_frames=0, alert_frames=0, dropped_queue=0, dropped_deadline=0,
                                       dropped_thermal=0, infer_errors=0, hook_errors=0, nonfinite_frames=0,
                                       adapters=[], source=SimpleNamespace(state=SourceState.STREAMING),
                                       sinks=[SimpleNamespace(name="zenoh", sink=sink, errors=0, dropped=0)]),
                       fps=0.0, ready=True, temperature=None, skip=1)
        assert 'firespotter_auth_rejected_total{reason="bad_signature",sink="zenoh"}' in metrics.exposition().decode()
        # the real station (its key, the drones' public keys) empties it
        station = GroundStation("gs", FleetMap(), verifier=auth.Verifier(auth.load_public_keys([tmp_path / "drones"])),
                                signer=auth.Signer.from_file(tmp_path / "station" / "gs.key")).start()
        gs = ZenohListener(station, "peer", [endpoint], [], False, None)
        assert wait_until(lambda: sink.outbox.pending() == 0, 20), "the trusted station's acks empty the outbox"
        assert station.fire_messages == 3
    finally:
        sink.close()
        if gs is not None:
            gs.close()
        sub.undeclare()
        rogue.close()


# --- the outbox ---------------------------------------------------------------------------------------------


@needs_mqtt
def test_corrupt_outbox_is_salvaged_and_every_readable_row_delivered(tmp_path, caplog):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    from firespotter.net.outbox import Outbox
    from firespotter.plugins.sinks.mqtt import MqttOptions, MqttSink

    path = tmp_path / "outbox.sqlite"
    ob = Outbox(path)
    for seq in range(300):
        m = wire.fire_message(fire_result(seq, size=64), "uav-1")
        ob.put(m["id"], wire.topic("uav-1", "fire"), wire.dumps(m), seq=seq)
    ob.close()
    with open(path, "r+b") as f:  # two damaged pages in the middle of the table
        for page in (30, 31):
            f.seek(4096 * page)
            f.write(os.urandom(4096))

    broker = Mosquitto(tmp_path / "broker").start()
    got = Client(broker.port, "ground")
    got.sub("firespotter/uav-1/fire")
    sink = MqttSink(MqttOptions(port=broker.port, outbox=path, min_interval_ms=0, close_timeout_s=0), name="mqtt")
    try:
        with caplog.at_level(logging.ERROR, logger="firespotter.outbox"):
            sink.start({"drone_id": "uav-1"})
        ob = sink.outbox
        assert ob.recovered and ob.lost > 0 and ob.salvaged + ob.lost == 300, (ob.salvaged, ob.lost)
        assert f"{ob.salvaged} messages salvaged (sqlite), {ob.lost} lost" in caplog.text
        assert list(tmp_path.glob("outbox.sqlite.corrupt-*")), "the damaged file is kept aside"
        assert wait_until(lambda: ob.pending() == 0, 30), ob.pending()
        assert wait_until(lambda: len({json.loads(p)["id"] for p in got.payloads}) == ob.salvaged, 10)
        health = sink.outbox_health()
        assert health["salvaged"] == ob.salvaged and health["lost"] == ob.lost and health["recovered"]
        from types import SimpleNamespace

        from firespotter.runtime.metrics import PipelineMetrics

        metrics = PipelineMetrics({})  # what /metrics and /readyz show for it
        pipeline = SimpleNamespace(frames_out=0, fire_frames=0, alert_frames=0, dropped_queue=0, dropped_deadline=0,
                                   dropped_thermal=0, infer_errors=0, hook_errors=0, nonfinite_frames=0, adapters=[],
                                   source=SimpleNamespace(state=SourceState.STREAMING),
                                   sinks=[SimpleNamespace(name="mqtt", sink=sink, errors=0, dropped=0)])
        metrics.update(pipeline, fps=0.0, ready=True, temperature=None, skip=1)
        text = metrics.exposition().decode()
        assert f'firespotter_outbox_salvaged{{sink="mqtt"}} {float(ob.salvaged)}' in text
        assert f'firespotter_outbox_lost{{sink="mqtt"}} {float(ob.lost)}' in text
        assert 'firespotter_outbox_degraded{sink="mqtt"} 1.0' in text
        assert "salvaged" in metrics.degraded_notes[0]
        assert "recovered" in sink.state_message()["outbox"]
        wire.validate(sink.state_message())
    finally:
        sink.close()
        got.close()
        broker.stop()


def test_outbox_whose_header_is_destroyed_is_salvaged_from_its_bytes(tmp_path):
    from firespotter.net.outbox import Outbox

    path = tmp_path / "outbox.sqlite"
    ob = Outbox(path)
    ids = set()
    for seq in range(50):
        m = wire.fire_message(fire_result(seq, size=64), "uav-1")
        ob.put(m["id"], wire.topic("uav-1", "fire"), wire.dumps(m), seq=seq)
        ids.add(m["id"])
    ob.close()
    with open(path, "r+b") as f:
        f.write(os.urandom(4096))  # page 1: SQLite cannot open the file at all
    ob = Outbox(path)
    try:
        assert ob.degraded is None and "raw scan" in ob.recovered and "unknown number" in ob.recovered
        assert {i.id for i in ob.due(100)} == ids  # every message whose bytes survived (here: all but page 1's)
    finally:
        ob.close()


def test_exit_log_says_what_stays_and_what_is_lost(tmp_path, caplog):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    from firespotter.plugins.sinks.mqtt import MqttOptions, MqttSink

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    for outbox, want in ((tmp_path / "o.sqlite", "3 fire messages not yet acknowledged stay in the outbox"),
                         (blocker / "o.sqlite", "3 fire messages not yet acknowledged were held in memory only")):
        sink = MqttSink(MqttOptions(port=free_port(), outbox=outbox, min_interval_ms=0, close_timeout_s=0), name="m")
        sink.start({"drone_id": "uav-1"})  # no broker: nothing is acknowledged
        for seq in range(3):
            sink.send(fire_result(seq, size=64))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            sink.close()
        assert want in caplog.text, caplog.text
        other = "held in memory only" if "stay in" in want else "stay in the outbox"
        assert other not in caplog.text, caplog.text


# --- HTTP ---------------------------------------------------------------------------------------------------


def test_http_times_out_half_sent_requests_caps_connections_and_hides_tokens(monkeypatch, caplog):
    from firespotter.ground import http as gh
    from firespotter.ground.fleet import FleetMap
    from firespotter.ground.station import GroundStation
    from firespotter.ground.view import GroundView
    from firespotter.runtime.errors import FirespotterError

    with pytest.raises(FirespotterError, match="at least 16"):
        gh.check_exposure("0.0.0.0", "only-12-char")
    monkeypatch.setattr(gh._Handler, "timeout", 1.0)
    monkeypatch.setattr(gh, "MAX_CONNECTIONS", 8)
    token = "a-token-of-enough-length"
    gs = GroundStation("gs", FleetMap())
    srv = gh.GroundViewServer(GroundView(gs, station="gs"), "127.0.0.1", 0, token=token).start()
    socks = []
    try:
        for _ in range(20):  # half-sent requests
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(s)
        time.sleep(0.3)
        assert srv.httpd.refused >= 12  # the cap
        assert wait_until(lambda: http_get(f"http://127.0.0.1:{srv.port}/healthz", 2)[0] == 200, 5), \
            "slots come back once the slow connections time out"
        with caplog.at_level(logging.DEBUG, logger="firespotter.groundview"):
            code, _ = http_get(f"http://127.0.0.1:{srv.port}/api/state?token={token}")
        assert code == 200
        assert token not in caplog.text and "token=[redacted]" in caplog.text
        req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/?token={token}")

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None

        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.build_opener(NoRedirect).open(req, timeout=5)
        assert f"Max-Age={gh.COOKIE_MAX_AGE_S}" in e.value.headers["Set-Cookie"]
    finally:
        for s in socks:
            s.close()
        srv.close()


# --- configuration and artifacts -----------------------------------------------------------------------------


def test_non_finite_numbers_and_escaping_artifacts_are_refused(tmp_path, registry):
    from firespotter.models.zoo import ModelFileError, load_manifest, verified_files
    from firespotter.plugins.sinks.zenoh import ZenohOptions
    from firespotter.runtime.artifacts import Artifact, ArtifactError
    from firespotter.runtime.config import load_settings
    from firespotter.runtime.errors import ConfigError, SourceError
    from firespotter.runtime.options import validated_options
    from firespotter.runtime.sources import open_source

    for text, key in {"[runtime]\ndeadline_ms = inf\n": "runtime.deadline_ms",
                      "[camera]\nhfov_deg = 70\nmount_roll_deg = nan\n": "camera.mount_roll_deg",
                      '[runtime]\ndeadline_ms = "inf"\n': "runtime.deadline_ms"}.items():
        p = tmp_path / "c.toml"
        p.write_text(text)
        with pytest.raises(ConfigError, match=f"{key}: must be a finite number"):
            load_settings(p)
    spec = type("Spec", (), {"options_model": ZenohOptions})
    with pytest.raises(ConfigError, match=r"sinks\[0\] \(zenoh\): resend_after_s: must be a finite number"):
        validated_options(spec, {"resend_after_s": "inf"}, kind="sink", table="sinks[0] (zenoh)", where="c.toml")
    for uri in ("test://?fps=inf", "test://?fps=-5", "test://?fps=nan"):
        with pytest.raises(SourceError, match="fps"):
            open_source(uri, registry)

    folder = tmp_path / "art"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"x")
    art = Artifact(folder, {"files": {"model.onnx": "0" * 64}, "roles": {"onnx": "../fp32.onnx"}})
    with pytest.raises(ArtifactError, match="not one of the files its manifest hashes"):
        art.path("../fp32.onnx")
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (tmp_path / "outside.onnx").write_bytes(b"x")
    (zoo / "m.json").write_text(json.dumps({"format": "firespotter-model-manifest", "files": {
        "onnx": {"path": "../outside.onnx", "sha256": "0" * 64}}}))
    manifest = load_manifest(zoo / "m.json")
    with pytest.raises(ModelFileError, match="outside"):
        verified_files(manifest)
