"""The overhead benchmark runs and writes the documented JSON (its numbers are read by people, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_pipeline_overhead_bench_writes_json(tmp_path):
    out = tmp_path / "po.json"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "pipeline_overhead.py"), "--frames", "12", "--size", "64",
                        "--repeats", "1", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    for key in ("ratio", "overhead_ms_per_frame", "frames", "size"):
        assert key in data
    assert data["frames"] == 12 and data["size"] == [64, 64]
    models = [v["model"] for v in data["variants"]]
    assert models == ["fireseg-lite", "cnn-standin"]  # the default model first: its row decides the ratio
    for v in data["variants"]:
        assert v["ratio"] > 0 and {"precision_exec", "weight_bits", "simulated"} <= set(v)
    assert "ratio" in r.stdout and "cnn-standin" in r.stdout


def test_gst_decode_bench_writes_json(tmp_path):
    import pytest

    from firespotter.runtime.gst import gst_available

    if not gst_available():
        pytest.skip("GStreamer not installed (make setup)")
    out = tmp_path / "gd.json"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gst_decode.py"), "--frames", "20", "--rtp-frames", "30",
                        "--repeats", "1", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["decode"]["frames"] == 20 and data["decode"]["size"] == [640, 512]
    assert data["decode"]["gstreamer_fps"] > 0 and data["decode"]["opencv_fps"] > 0
    assert data["rtp_latency"]["received"] > 0 and "p99_ms" in data["rtp_latency"]
