"""The command line: version, replay outputs, and bad input as one clear line with a non-zero exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from conftest import REPO, run_cli
from firespotter import __version__


def assert_one_line_error(r, *needles):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"firespotter {__version__}"


def test_replay_writes_summary_masks_and_events(tmp_path):
    out = tmp_path / "out"
    r = run_cli("replay", "test://?frames=12&size=128x96&seed=3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    for key in ("frames", "dropped", "fire_frames", "fps"):
        assert key in summary
    assert summary["frames"] == 12 and summary["dropped"] == 0
    assert len(list((out / "masks").glob("*.png"))) == 12
    events = [json.loads(l) for l in (out / "events.jsonl").read_text().splitlines()]
    assert [e["seq"] for e in events] == list(range(12))
    assert "fire frames" in r.stdout and str(out) in r.stdout


def test_replay_limit_and_image_folder(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"b{i}.png"), np.full((32, 48, 3), 40 * i, np.uint8))
    r = run_cli("replay", str(folder), "--out", str(tmp_path / "o"), "--limit", "3")
    assert r.returncode == 0, r.stderr
    events = [json.loads(l) for l in (tmp_path / "o" / "events.jsonl").read_text().splitlines()]
    assert [e["name"] for e in events] == ["b0", "b1", "b2"]


def test_missing_file(tmp_path):
    assert_one_line_error(run_cli("replay", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")),
                          "does not exist", "nope.mp4")


def test_unknown_uri_scheme(tmp_path):
    assert_one_line_error(run_cli("replay", "ftp://x/y", "--out", str(tmp_path / "o")),
                          "unknown URI scheme 'ftp'", "known:")


def test_unknown_model(tmp_path):
    assert_one_line_error(run_cli("replay", "test://", "--out", str(tmp_path / "o"), "--model", "unet9000"),
                          "unknown model 'unet9000'")


def test_unknown_backend(tmp_path):
    assert_one_line_error(run_cli("replay", "test://", "--out", str(tmp_path / "o"), "--backend", "tensorrtx"),
                          "unknown backend 'tensorrtx'")


def test_backend_that_cannot_run_the_model(tmp_path):
    assert_one_line_error(run_cli("replay", "test://", "--out", str(tmp_path / "o"), "--model", "colorrule",
                                  "--backend", "onnxruntime"),
                          "cannot run model 'colorrule'")


def test_unknown_precision(tmp_path):
    assert_one_line_error(run_cli("replay", "test://", "--out", str(tmp_path / "o"), "--precision", "int3"),
                          "no precision 'int3'")


def test_empty_image_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("replay", f"dir://{tmp_path / 'empty'}", "--out", str(tmp_path / "o")),
                          "has no images")


def test_bad_test_uri_parameter(tmp_path):
    assert_one_line_error(run_cli("replay", "test://?size=big", "--out", str(tmp_path / "o")), "size=")


def test_corrupt_video_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    assert_one_line_error(run_cli("replay", str(bad), "--out", str(tmp_path / "o")), "broken.mp4")


def test_doctor_json():
    r = run_cli("doctor", "--json")
    assert r.returncode == 0, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert {"onnxruntime", "gstreamer", "gpu", "mqtt broker", "plugins"} <= set(checks)
    assert checks["onnxruntime"]["status"] == "ok"
    assert all(c["status"] in ("ok", "missing", "error") for c in checks.values())


def test_sigterm_drains_and_flushes_every_sink(tmp_path):
    cfg = tmp_path / "live.toml"
    out = tmp_path / "out"
    cfg.write_text(f"""
[runtime]
mode = "live"
deadline_ms = 500

[source]
uri = "test://?size=96x96&fps=50&loop=1"

[[sinks]]
type = "files"
dir = "{out}"
""")
    proc = subprocess.Popen([sys.executable, "-m", "firespotter", "run", "-c", str(cfg), "--summary-json",
                             str(tmp_path / "summary.json")], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    events = out / "events.jsonl"
    while time.monotonic() < deadline and not (events.exists() and events.stat().st_size > 0):
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_by_request"] and summary["drained"]
    lines = events.read_text().splitlines()
    assert len(lines) == summary["frames"] > 0  # every processed frame reached the file, flushed
    json.loads(lines[-1])  # the last line is complete
    assert len(list((out / "masks").glob("*.png"))) == summary["frames"]


def test_progress_prints_plain_lines_off_a_terminal():
    import io

    from firespotter.runtime.progress import Progress

    stream = io.StringIO()
    with Progress("replay", total=100, stream=stream, every_s=0.0) as p:
        for i in (10, 50):
            p.update(i)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("replay: 50/100 frames,") and "fps" in lines[1]
    assert "ETA" in lines[1]
