"""bench/fleet.py on a small fleet: three drone daemons publish over Zenoh and MQTT at once to one
`firespotter listen` per transport; every fire message arrives exactly once after deduplication and every
outbox ends empty (the 8-drone figures are in docs/reliability.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO
from helpers.net import MOSQUITTO


def test_three_drones_every_fire_message_arrives_once_over_zenoh_and_mqtt(tmp_path):
    pytest.importorskip("zenoh", reason="eclipse-zenoh is not installed")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    out = tmp_path / "fleet.json"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "fleet.py"), "--drones", "3", "--frames", "8",
                        "--size", "96", "--timeout", "240", "--json", str(out)],
                       capture_output=True, text=True, timeout=400, cwd=REPO)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    d = json.loads(out.read_text())
    for transport in ("zenoh", "mqtt"):
        t = d[transport]
        assert t["drone_exit_codes"] == [0, 0, 0], t
        assert t["drones_seen"] == 3 and t["malformed"] == 0
        assert t["stored"] > 0 and t["received_unique"] == t["stored"] and t["lost"] == 0, t
        assert t["outbox_pending_end"] == 0 and t["acked"] >= t["stored"]
        assert t["msgs_per_s"] > 0 and t["listener_cpu_s"] >= 0
    assert "msgs/s" in r.stdout
