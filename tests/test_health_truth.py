"""Health that is true: firespotter_outbox_depth{sink} is the outbox's real depth (a broker stopped, messages
waiting), firespotter_ready equals what /readyz answers at every moment, /readyz says why, and an MQTT drone
reconnects within about 2 s of its broker coming back."""

from __future__ import annotations

import sqlite3
import time
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import FakeSegmenter, ListSource, RecordingSink
from helpers.net import MOSQUITTO, Mosquitto, fire_result, http_get, wait_until
from firespotter.runtime.config import parse_settings
from firespotter.runtime.daemon import Supervisor
from firespotter.runtime.metrics import HealthServer, PipelineMetrics
from firespotter.runtime.notify import Notifier
from firespotter.runtime.pipeline import Pipeline, PipelineOptions


def sample(metrics: PipelineMetrics, name: str, **labels) -> float | None:
    for fam in text_string_to_metric_families(metrics.exposition().decode()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed (make setup)")
def test_outbox_depth_metric_is_the_real_depth_with_the_broker_stopped(tmp_path):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed")
    from firespotter.plugins.sinks.mqtt import MqttOptions, MqttSink

    broker = Mosquitto(tmp_path / "broker", persistence=False).start()
    sink = MqttSink(MqttOptions(port=broker.port, min_interval_ms=0, outbox=tmp_path / "outbox.sqlite",
                                close_timeout_s=0), name="uplink")
    sink.start({"drone_id": "uav-9"})
    try:
        assert wait_until(sink._ready, 10)
        broker.stop()
        assert wait_until(lambda: not sink._ready(), 10)
        for seq in range(7):
            sink.send(fire_result(seq, size=64))
        metrics = PipelineMetrics({"drone_id": "uav-9"})
        metrics.bind_outboxes([SimpleNamespace(name="uplink", sink=sink), SimpleNamespace(name="rec", sink=RecordingSink())])
        with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
            real = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        assert real == 7
        assert sample(metrics, "firespotter_outbox_depth", sink="uplink") == real
        assert sample(metrics, "firespotter_outbox_depth", sink="rec") is None  # a sink without an outbox
    finally:
        sink.close()
        broker.stop()


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed (make setup)")
def test_mqtt_sink_reconnects_within_about_2_s_of_the_broker_coming_back(tmp_path):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed")
    from firespotter.plugins.sinks.mqtt import MqttOptions, MqttSink

    broker = Mosquitto(tmp_path / "broker", persistence=False).start()
    sink = MqttSink(MqttOptions(port=broker.port, min_interval_ms=0, outbox=tmp_path / "o.sqlite", close_timeout_s=0))
    sink.start({"drone_id": "uav-9"})
    try:
        assert wait_until(sink._ready, 10)
        broker.stop()
        time.sleep(6)  # long enough for an unbounded backoff to have grown past 2 s
        broker = Mosquitto(tmp_path / "broker", port=broker.port, persistence=False).start()
        t0 = time.monotonic()
        assert wait_until(sink._ready, 10)
        assert time.monotonic() - t0 < 3.0  # 2 s cap + connect time on a busy machine
    finally:
        sink.close()
        broker.stop()


def test_ready_gauge_equals_readyz_and_readyz_names_the_reason():
    settings = parse_settings({"daemon": {"status_interval_s": 0.05, "thermal_zones": "/nonexistent", "stall_s": 0.5}})
    source = ListSource([__import__("numpy").zeros((32, 32, 3), "uint8")] * 10, fps=20)
    pipeline = Pipeline(source, FakeSegmenter(), [("rec", RecordingSink())], PipelineOptions(mode="live"))
    metrics = PipelineMetrics({"drone_id": "d1"})
    sup = Supervisor(pipeline, settings, Notifier(address=""), metrics)
    metrics.bind_readiness(sup.is_ready)
    server = HealthServer("127.0.0.1", 0, metrics, sup.readiness).start()
    base = f"http://127.0.0.1:{server.port}"

    def both():
        status, body = http_get(base + "/readyz")
        return status, body, sample(metrics, "firespotter_ready")

    try:
        status, body, gauge = both()
        assert status == 503 and gauge == 0.0 and "starting: no frame processed yet" in body
        sup.start()
        pipeline.run()
        sup.tick()
        assert sup.ready
        status, body, gauge = both()  # the list source has ended: ready once, not any more
        assert status == 503 and gauge == 0.0 and "source ended" in body, body
        # a source that says it streams but delivers nothing: the hang detection makes it not ready
        source.state = __import__("firespotter.runtime.types", fromlist=["SourceState"]).SourceState.STREAMING
        sup._last_progress = time.monotonic()
        status, body, gauge = both()
        assert status == 200 and gauge == 1.0 and body.startswith("ready:"), body
        time.sleep(0.6)
        status, body, gauge = both()
        assert status == 503 and gauge == 0.0 and "no frame processed for" in body, body
    finally:
        sup.stop()
        server.stop()
