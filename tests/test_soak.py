"""bench/soak.py on a short run: the documented JSON, and values a healthy pipeline gives (the long soak's
figures are in docs/reliability.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO
from helpers.net import MOSQUITTO


def test_soak_smoke_writes_sane_json(tmp_path):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    out = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "soak.py"), "--minutes", "0.25", "--sample-s", "2",
                        "--model", "colorrule", "--size", "128", "--fps", "10", "--json", str(out)],
                       capture_output=True, text=True, timeout=240, cwd=REPO)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    d = json.loads(out.read_text())
    for key in ("minutes", "rss_slope_mb_per_10min", "fds_start", "fds_end", "threads_start", "threads_end"):
        assert key in d, key
    assert 0.15 <= d["minutes"] <= 1.0
    assert len(d["samples"]) >= 4 and all(s["rss_mb"] > 10 for s in d["samples"])
    assert isinstance(d["rss_slope_mb_per_10min"], float)
    assert d["frames"] > 20 and d["infer_errors"] == 0 and d["drained"] is True
    # descriptors and threads do not grow while the pipeline runs (a leak per frame would show at once)
    assert d["fds_end"] <= d["fds_start"] + 2 and d["threads_end"] <= d["threads_start"] + 1
    # the MQTT sink stored fire messages, the broker delivered every one, and the outbox ended empty
    assert d["mqtt_stored"] > 0 and d["mqtt_received_unique"] == d["mqtt_stored"] and d["mqtt_lost"] == 0
    assert d["outbox_pending_end"] == 0
    assert "rss" in r.stdout and "slope" in r.stdout


def test_per_frame_bookkeeping_is_bounded_in_a_long_run():
    """What the 30-minute soak found growing with every frame: stage timings kept every sample, and the live
    pipeline kept a per-frame timeline only a replay report reads. Timings are now a bounded uniform sample
    (exact n, mean, max); the timeline is kept in replay only."""
    import numpy as np

    from conftest import FakeSegmenter, ListSource, RecordingSink, frames_with_fire
    from firespotter.runtime.pipeline import Pipeline, PipelineOptions
    from firespotter.runtime.timing import StageTimes

    t = StageTimes(cap=1000)
    xs = np.random.default_rng(0).exponential(5.0, 20_000)
    for x in xs:
        t.add(float(x))
    s = t.summary()
    assert len(t.samples) == 1000 and s["n"] == 20_000
    assert s["mean"] == round(float(xs.mean()), 4) and s["max"] == round(float(xs.max()), 4)
    assert abs(s["p50"] - np.percentile(xs, 50)) < 0.6 and abs(s["p95"] - np.percentile(xs, 95)) < 2.0

    live = Pipeline(ListSource(frames_with_fire(30)), FakeSegmenter(), [("rec", RecordingSink())],
                    PipelineOptions(mode="live", queue_size=64))
    assert live.run()["frames"] > 0 and live.timeline == []
    replay = Pipeline(ListSource(frames_with_fire(30)), FakeSegmenter(), [("rec", RecordingSink())])
    assert replay.run()["frames"] == 30 and len(replay.timeline) == 30
