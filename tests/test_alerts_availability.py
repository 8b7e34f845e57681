"""Alert snapshots and availability, end to end: a drone process (the real mqtt/zenoh sink) -> mosquitto or a
Zenoh peer -> `firespotter listen --http` -> headless Chromium. The snapshot arrives in the fire message (schema,
JPEG, crop around the fire) and shows in the drone card and the fire's popup; SIGKILL of the drone turns its
availability `offline` (the broker's last will, or the Zenoh liveliness token) and the page shows LOST within 2 s,
long before --lost-after-s."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from helpers.net import MOSQUITTO, Mosquitto, fire_result, free_port, port_open, wait_until
from firespotter.net import availability, snapshot, wire
from firespotter.runtime.errors import ConfigError

CHROMIUM = "/usr/bin/chromium"
DRONE = [sys.executable, str(REPO / "tests" / "helpers" / "alert_drone.py")]
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


def _listen(*args):
    return subprocess.Popen([sys.executable, "-m", "firespotter", "listen", "--duration", "60", "--print-every", "5",
                             "--lost-after-s", "30", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)


def _stop(p, sig=signal.SIGTERM):
    if p.poll() is None:
        os.kill(p.pid, sig)
    try:
        return p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        return p.communicate(timeout=5)


# --- without a network ------------------------------------------------------------------------------------


def test_snapshot_crop_frame_and_caps():
    r = fire_result(2, size=256)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)  # noise: the worst case for JPEG
    crop = snapshot.encode(img, r.regions, "crop", max_side=200, quality=90, max_bytes=12_000)
    x, y, w, h = crop["crop"]
    for reg in r.regions:  # every fire region lies inside the crop
        bx, by, bw, bh = reg.bbox
        assert x <= bx and y <= by and bx + bw <= x + w and by + bh <= y + h
    assert max(crop["width"], crop["height"]) <= 200 and len(crop["data"]) * 3 / 4 <= 12_000
    assert snapshot.decode(crop).shape == (crop["height"], crop["width"], 3)
    frame = snapshot.encode(img, r.regions, "frame", max_side=128)
    assert frame["crop"] == [0, 0, 256, 256] and max(frame["width"], frame["height"]) == 128
    assert snapshot.encode(img, [], "crop") is None and snapshot.encode(img, r.regions, "off") is None
    msg = wire.fire_message(r, "uav-1", snapshot=crop)
    assert wire.loads(wire.dumps(msg))["snapshot"]["format"] == "jpeg"
    bad = dict(msg, snapshot=dict(crop, format="png"))
    with pytest.raises(wire.WireError, match="snapshot"):
        wire.validate(bad)
    stripped = wire.loads(wire.strip_mask(wire.dumps(msg)))  # the outbox's shrink step drops it first
    assert "snapshot" not in stripped and stripped["id"] == msg["id"]


def test_unknown_snapshot_mode_is_a_config_error(tmp_path):
    from firespotter.runtime.assemble import build_sinks
    from firespotter.runtime.config import parse_settings
    from firespotter.runtime.plugins import new_registry

    s = parse_settings({"sinks": [{"type": "mqtt", "snapshot": "thumbnail"}]}, "c.toml")
    with pytest.raises(ConfigError) as err:
        build_sinks(new_registry(), s.sinks, "c.toml")
    assert "sinks[0] (mqtt)" in str(err.value) and "snapshot" in str(err.value) and "'crop'" in str(err.value)


def test_availability_messages():
    assert availability.topic("uav-1") == "firespotter/uav-1/availability"
    assert availability.parse("firespotter/uav-1/availability", b"offline") == ("uav-1", False)
    assert availability.parse("firespotter/uav-1/availability", b"online\n") == ("uav-1", True)
    for topic, payload in [("firespotter/uav-1/availability", b"maybe"), ("firespotter/uav 1/availability", b"online"),
                           ("firespotter/uav-1/state", b"online")]:
        with pytest.raises(wire.WireError):
            availability.parse(topic, payload)


# --- the real thing -----------------------------------------------------------------------------------------


def _need(browser: bool = True):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    if browser and not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed") if browser else None


def test_snapshot_and_last_will_over_mqtt_in_the_ground_view(tmp_path):
    sync_api = _need()
    import paho.mqtt.client as mqtt

    broker = Mosquitto(tmp_path / "broker", persistence=False).start()
    http_port = free_port()
    listener = _listen("--transport", "mqtt", "--port", str(broker.port), "--http", f"127.0.0.1:{http_port}",
                       "--station", "snap-test")
    fires, avail = [], []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub")
    sub.on_message = lambda c, u, m: (avail if m.topic.endswith("/availability") else fires).append(
        (time.monotonic(), m.topic, m.payload, m.retain))
    drone = None
    browser = None
    errors: list[str] = []
    try:
        assert wait_until(lambda: "as firespotter-listen-snap-test" in broker.log() and port_open(http_port), 20)
        sub.connect("127.0.0.1", broker.port)
        sub.loop_start()
        sub.subscribe([("firespotter/+/fire", 1), ("firespotter/+/availability", 1)])
        drone = subprocess.Popen([*DRONE, "mqtt", "--port", str(broker.port), "--drone", "uav-s",
                                  "--outbox", str(tmp_path / "outbox.sqlite")], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=REPO)
        assert drone.stdout.readline().strip() == "READY", drone.stderr.read() if drone.poll() is not None else ""
        assert wait_until(lambda: len(fires) >= 2 and avail, 10), (fires[:1], avail)
        # the snapshot round-trips through the broker: valid wire v1, a JPEG of the fire with its context
        msg = wire.loads(fires[0][2])
        snap = msg["snapshot"]
        img = snapshot.decode(snap)
        assert img.shape == (snap["height"], snap["width"], 3)
        orange = (img[..., 0] > 180) & (img[..., 1] > 60) & (img[..., 1] < 180) & (img[..., 2] < 90)
        green = (img[..., 0] < 90) & (img[..., 1] > 60) & (img[..., 2] < 90)
        assert orange.mean() > 0.05 and green.mean() > 0.05, (orange.mean(), green.mean())
        assert avail[-1][2] == b"online"

        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.goto(f"http://127.0.0.1:{http_port}/", wait_until="load", timeout=15000)
            card = '#drones li[data-drone-id="uav-s"]'
            page.wait_for_function(f"""() => {{ const i = document.querySelector('{card} img.snap');
                return i && i.complete && i.naturalWidth > 0; }}""", timeout=15000)
            w = page.evaluate(f"document.querySelector('{card} img.snap').naturalWidth")
            assert w > 0
            # the fire's popup shows the drone's latest snapshot
            page.wait_for_function("() => window.groundview.fires.length > 0", timeout=15000)
            page.locator("path.gv-fire").first.click(force=True)
            page.wait_for_function("""() => { const i = document.querySelector('.leaflet-popup img.gv-snap');
                return i && i.complete && i.naturalWidth > 0 && i.dataset.droneId === 'uav-s'; }""", timeout=10000)
            page.wait_for_timeout(400)  # the popup fades in
            page.screenshot(path=str(tmp_path / "snapshot.png"))

            # SIGKILL: the broker publishes the last will; listener and page say LOST within 2 s
            assert page.locator(card).get_attribute("data-lost") == "false"
            n = len(avail)
            t0 = time.monotonic()
            os.kill(drone.pid, signal.SIGKILL)
            page.wait_for_selector(f'{card}[data-lost="true"]', timeout=5000)
            lost_s = time.monotonic() - t0
            assert wait_until(lambda: len(avail) > n, 5)
            assert avail[-1][2] == b"offline"
            assert avail[-1][0] - t0 <= 2.0 and lost_s <= 2.0, (avail[-1][0] - t0, lost_s)
            text = page.locator(card).inner_text()
            assert "LOST" in text and "offline (last will" in text and "link down" in text, text
            page.screenshot(path=str(tmp_path / "lost.png"))
            browser.close()
            browser = None
        assert errors == [], errors
        (REPO / "out").mkdir(exist_ok=True)  # for people: what the page looked like
        shutil.copy(tmp_path / "snapshot.png", REPO / "out" / "groundview-snapshot.png")
        shutil.copy(tmp_path / "lost.png", REPO / "out" / "groundview-killed-lost.png")
    finally:
        if browser is not None:
            browser.close()
        if drone is not None and drone.poll() is None:
            os.kill(drone.pid, signal.SIGKILL)
            drone.wait(5)
        sub.loop_stop()
        sub.disconnect()
        out, err = _stop(listener)
        broker.stop()
    assert "drone uav-s offline" in err and "Traceback" not in err, err


def test_a_clean_stop_is_stopped_not_lost_and_the_retained_state_says_offline(tmp_path):
    _need(browser=False)
    import paho.mqtt.client as mqtt

    from firespotter.plugins.sinks.mqtt import MqttOptions, MqttSink

    broker = Mosquitto(tmp_path / "broker", persistence=False).start()
    try:
        sink = MqttSink(MqttOptions(port=broker.port, drone_id="uav-c", outbox=tmp_path / "o.sqlite",
                                    close_timeout_s=0), name="mqtt")
        sink.start({})
        assert wait_until(sink._ready, 10)
        sink.close()
        got = []
        late = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="late")  # subscribes after the fact
        late.on_message = lambda c, u, m: got.append((m.payload, m.retain))
        late.connect("127.0.0.1", broker.port)
        late.loop_start()
        late.subscribe("firespotter/uav-c/availability", qos=1)
        assert wait_until(lambda: got, 5)
        late.loop_stop()
        late.disconnect()
        assert got[0] == (b"offline", True)
    finally:
        broker.stop()


def test_zenoh_liveliness_marks_a_killed_drone_lost(tmp_path):
    pytest.importorskip("zenoh", reason="eclipse-zenoh is not installed")
    from firespotter.ground.fleet import FleetMap
    from firespotter.ground.station import GroundStation
    from firespotter.ground.transports import ZenohListener
    from firespotter.ground.view import GroundView

    endpoint = f"tcp/127.0.0.1:{free_port()}"
    gs = GroundStation("z", FleetMap(window_s=900))
    view = GroundView(gs, station="z", window_s=900, lost_after_s=30)
    changes = []
    gs.observers.append(lambda kind, msg, now, dup: kind == "availability" and changes.append((time.monotonic(), msg)))
    zl = ZenohListener(gs, "peer", [], [endpoint], False, None)
    drone = subprocess.Popen([*DRONE, "zenoh", "--endpoint", endpoint, "--drone", "uav-z",
                              "--outbox", str(tmp_path / "outbox.sqlite")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert drone.stdout.readline().strip() == "READY"
        assert wait_until(lambda: "uav-z" in view.drones and view.drones["uav-z"]["availability"] == "online", 10), \
            (changes, list(view.drones))
        assert wait_until(lambda: view.thumbs.get("uav-z", {}).get("snapshot"), 10)  # snapshots over zenoh too
        assert view.drones["uav-z"]["lost"] is False
        t0 = time.monotonic()
        os.kill(drone.pid, signal.SIGKILL)
        assert wait_until(lambda: view.drones["uav-z"]["lost"], 5)
        offline = [t for t, m in list(changes) if not m["online"]]
        assert offline and offline[0] - t0 <= 2.0, offline
        assert gs.drones["uav-z"].state == "lost"
    finally:
        if drone.poll() is None:
            os.kill(drone.pid, signal.SIGKILL)
        drone.wait(5)
        zl.close()
