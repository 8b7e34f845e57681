"""bench/network.py runs on a tiny load and writes the documented JSON (its numbers are for people)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO
from helpers.net import MOSQUITTO


def test_network_bench_writes_json(tmp_path):
    pytest.importorskip("zenoh", reason="eclipse-zenoh is not installed")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    out = tmp_path / "net.json"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "network.py"), "--messages", "20", "--rate", "20",
                        "--seconds", "1", "--size", "128", "--outbox-ops", "10", "--json", str(out)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    for name in ("mqtt", "zenoh", "mqtt+snapshot", "zenoh+snapshot"):
        assert {"msgs_per_s", "p50_ms", "p99_ms"} <= set(data[name]), data[name]
        assert data[name]["msgs_per_s"] > 0 and data[name]["lost"] == 0
    assert {"insert_ms", "ack_ms"} <= set(data["outbox"])
    assert data["outbox_full"]["synchronous"] == "full" and data["full_vs_normal"]["insert"] > 0
    assert data["auth"].get("sign_ms", 0) > 0 or "skipped" in data["auth"]
    assert data["snapshot"]["mode"] == "crop" and data["snapshot"]["snapshot_bytes"] > 0
    assert "msgs/s" in r.stdout and "outbox" in r.stdout


def test_hostile_bench_writes_json(tmp_path):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    out = tmp_path / "hostile.json"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "hostile.py"), "--bombs", "2", "--polygons", "3",
                        "--drones", "20", "--json", str(out)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    for name in ("bomb", "polygons", "drones"):
        assert {"rss_growth_mb", "worst_ack_s"} <= set(data[name]) and data[name]["worst_ack_s"] < 10, data[name]
    assert data["drones"]["drones_kept"] == 22 and "RSS +MB" in r.stdout
