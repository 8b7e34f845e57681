"""The onboard daemon: systemd notify + watchdog, metrics and health endpoints, units, install kit, heat."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, FakeSegmenter, ListSource, RecordingSink, frames_with_fire, run_cli
from helpers.net import http_get
from firespotter.runtime.config import parse_settings
from firespotter.runtime.daemon import Supervisor
from firespotter.runtime.logs import RateLimit
from firespotter.runtime.metrics import HealthServer, PipelineMetrics
from firespotter.runtime.notify import Notifier
from firespotter.runtime.pipeline import Pipeline, PipelineOptions
from firespotter.runtime.thermal import read_zones, skip_factor


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NotifyListener:
    """A stand-in for systemd: a datagram socket that records (time, message) pairs."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            for line in data.splitlines():
                self.messages.append((time.monotonic(), line))

    def times(self, prefix):
        return [t for t, m in self.messages if m.startswith(prefix)]

    def wait_for(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        while not self.times(prefix) and time.monotonic() < deadline:
            time.sleep(0.05)
        return bool(self.times(prefix))

    def close(self):
        self._stop = True
        self.thread.join(2)
        self.sock.close()


def write_config(tmp_path, *, uri, port, extra=""):
    cfg = tmp_path / "daemon.toml"
    cfg.write_text(f"""
[runtime]
mode = "live"
drone_id = "test-drone"
deadline_ms = 1000
drain_timeout_s = 3

[source]
uri = "{uri}"

[model]
name = "colorrule"  # the daemon's behaviour is the point, not the model: keep frames cheap

[[sinks]]
type = "files"
dir = "{tmp_path / 'out'}"

[metrics]
enabled = true
port = {port}

[daemon]
stall_s = 1.0
reconnect_grace_s = 5
status_interval_s = 0.2
{extra}
""")
    return cfg


def test_daemon_notifies_pings_only_while_frames_progress_and_stops_cleanly(tmp_path):
    port = free_tcp_port()
    cfg = write_config(tmp_path, uri="test://?size=96x96&fps=30&loop=1&stall_after=45", port=port)
    listener = NotifyListener(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "600000"}
    proc = subprocess.Popen([sys.executable, "-m", "firespotter", "run", "-c", str(cfg), "--summary-json",
                             str(tmp_path / "summary.json")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert listener.wait_for("READY=1", 30), listener.messages
        assert listener.wait_for("WATCHDOG=1", 5)
        status, body = http_get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200
        # The source hangs after 45 frames (1.5 s at 30 fps): pings must stop within stall_s (+ one interval).
        time.sleep(4.5)
        events = (tmp_path / "out" / "events.jsonl").read_text().splitlines()
        assert 30 <= len(events) <= 45  # live mode may drop a frame on a busy machine; it counts it
        pings = listener.times("WATCHDOG=1")
        assert len(pings) >= 3
        quiet = time.monotonic() - pings[-1]
        assert quiet > 2.0, f"pings went on for a hung source (last {quiet:.1f} s ago)"
        assert any("no frame for" in m and "hang" in m for _, m in listener.messages if m.startswith("STATUS="))
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        status, text = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and f"firespotter_frames_total {float(len(events))}" in text
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert time.monotonic() - t0 < 5 and proc.returncode == 0, proc.stderr.read()
        assert listener.wait_for("STOPPING=1", 1)
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["frames"] == len(events) and summary["drained"]
        assert summary["frames"] + summary["dropped"] == 45
    finally:
        proc.kill()
        listener.close()


def test_metrics_parse_and_readyz_turns_ready_after_the_first_frame():
    from prometheus_client.parser import text_string_to_metric_families

    settings = parse_settings({"daemon": {"status_interval_s": 0.05, "thermal_zones": "/nonexistent"}})
    source = ListSource(frames_with_fire(20), fps=20)
    pipeline = Pipeline(source, FakeSegmenter(), [("rec", RecordingSink())], PipelineOptions(mode="live"))
    metrics = PipelineMetrics({**pipeline.describe(), "model": "fake", "backend": "numpy", "drone_id": "d1"})
    sup = Supervisor(pipeline, settings, Notifier(address=""), metrics)
    server = HealthServer("127.0.0.1", 0, metrics, sup.is_ready).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert http_get(base + "/readyz")[0] == 503  # model loaded, no frame yet
        sup.start()
        pipeline.run()
        sup.tick()
        assert sup.ready
        text = http_get(base + "/metrics")[1]
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name in ("firespotter_frames", "firespotter_dropped_frames", "firespotter_stage_latency_seconds",
                     "firespotter_fps", "firespotter_source_state", "firespotter_model_info", "firespotter_outbox_depth",
                     "firespotter_adapter_resets", "firespotter_sink_errors", "firespotter_thermal_frame_skip"):
            assert name in families, name
        frames = [s.value for s in families["firespotter_frames"].samples if s.name == "firespotter_frames_total"]
        assert frames == [20.0]
        stages = {s.labels.get("stage") for s in families["firespotter_stage_latency_seconds"].samples}
        assert {"infer", "post", "capture_to_publish"} <= stages
        info = families["firespotter_model_info"].samples[0].labels
        assert info["precision_exec"] == "fp32" and info["drone_id"] == "d1"
        # The list source has ended: "streaming" is over, so not ready any more.
        assert http_get(base + "/readyz")[0] == 503
    finally:
        sup.stop()
        server.stop()


def test_invalid_config_stops_before_ready(tmp_path):
    cfg = write_config(tmp_path, uri="test://", port=free_tcp_port(), extra="stal_s = 3")
    listener = NotifyListener(tmp_path / "n.sock")
    try:
        r = run_cli("run", "-c", str(cfg), env={"NOTIFY_SOCKET": str(tmp_path / "n.sock")})
        assert r.returncode == 2 and "daemon.stal_s" in r.stderr and "did you mean 'stall_s'" in r.stderr
        time.sleep(0.3)
        assert not listener.times("READY=1")
    finally:
        listener.close()


def test_metrics_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("run", "-c", str(write_config(tmp_path, uri="test://?loop=1", port=port)))
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr


def test_abstract_notify_socket():
    name = f"firespotter-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        n = Notifier(address="@" + name)
        assert n.ready("x") and sock.recv(100) == b"READY=1\nSTATUS=x"
        assert Notifier(address="").send("READY=1") is False  # no systemd: a no-op
    finally:
        sock.close()


def test_sighup_reload_applies_thresholds_and_refuses_a_bad_file(tmp_path, caplog):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nthreshold = 0.5\n")
    settings = parse_settings({"model": {"threshold": 0.5}})
    pipeline = Pipeline(ListSource([]), FakeSegmenter(), [])
    applied = []
    sup = Supervisor(pipeline, settings, Notifier(address=""), config_path=cfg,
                     apply_post=lambda new: applied.append(new.model.threshold))
    cfg.write_text("[model]\nthreshold = 0.8\nname = 'other'\n")
    with caplog.at_level(logging.WARNING):
        assert sup.reload() == ["post-processing thresholds"]
    assert applied == [0.8] and "needs a restart: model" in caplog.text
    cfg.write_text("[model]\nthreshold = 3\n")
    assert sup.reload() == [] and applied == [0.8]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", ["firespotter.service", "firespotter@.service"])
def test_units_pass_systemd_analyze_verify(tmp_path, unit):
    # The units point at /opt/firespotter; verify checks the binary exists, so point it at this checkout.
    exe = shutil.which("firespotter") or str(REPO / ".venv" / "bin" / "firespotter")
    text = (REPO / "systemd" / unit).read_text().replace("/opt/firespotter/.venv/bin/firespotter", exe)
    target = tmp_path / unit.replace("@.", "@cam0.")
    target.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(target)], capture_output=True, text=True,
                       timeout=60)
    # Bad keys only warn (exit 0), so any output is a failure.
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr
    for key in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "ProtectSystem=strict", "NoNewPrivileges=yes",
                "PrivateTmp=yes", "StateDirectory=", "ReadWritePaths=", "DeviceAllow=char-video4linux", "User="):
        assert key in text


def test_install_script_dry_run_changes_nothing():
    r = subprocess.run(["bash", str(REPO / "deploy" / "install.sh"), "--dry-run", "--config", "ci"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    steps = [l for l in r.stdout.splitlines() if l.startswith("+ ")]
    assert any("apt-get install" in s for s in steps) and any("systemctl enable --now" in s for s in steps)
    assert any("useradd" in s or "exists" in r.stdout for s in steps)
    assert not os.path.exists("/etc/firespotter/config.toml") or "kept" in r.stdout
    bad = subprocess.run(["bash", str(REPO / "deploy" / "install.sh"), "--dry-run", "--config", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "choose one of" in bad.stderr


def test_heat_lowers_the_processed_frame_rate(tmp_path):
    for i, (kind, milli) in enumerate((("CPU-therm", 91500), ("GPU-therm", 70000))):
        zone = tmp_path / f"thermal_zone{i}"
        zone.mkdir()
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(f"{milli}\n")
    assert read_zones(tmp_path) == {"CPU-therm": 91.5, "GPU-therm": 70.0}
    assert skip_factor(80.0, 85, 4) == 1 and skip_factor(86.0, 85, 4) == 2 and skip_factor(99, 85, 4) == 4
    settings = parse_settings({"daemon": {"thermal_zones": str(tmp_path), "throttle_c": 85, "throttle_max_skip": 8}})
    sink = RecordingSink()
    pipeline = Pipeline(ListSource(frames_with_fire(60), fps=200), FakeSegmenter(), [("rec", sink)],
                        PipelineOptions(mode="live", deadline_ms=5000, queue_size=64))
    sup = Supervisor(pipeline, settings, Notifier(address=""))
    sup.tick()
    assert pipeline.skip_every == 5 and "hot (92 C)" in sup.status_text
    summary = pipeline.run()
    assert summary["dropped_thermal"] == 48 and summary["frames"] == 12
    assert all(seq % 5 == 0 for seq in sink.seqs)


def test_repeated_errors_are_rate_limited_with_a_count():
    f = RateLimit(window_s=0.3, burst=2)
    rec = lambda: logging.LogRecord("x", logging.ERROR, "", 0, "sink %s down", ("mqtt",), None)  # noqa: E731
    passed = [f.filter(rec()) for _ in range(10)]
    assert passed == [True, True] + [False] * 8
    time.sleep(0.35)
    r = rec()
    assert f.filter(r) and "and 8 more like it" in r.msg
    info = logging.LogRecord("x", logging.INFO, "", 0, "progress", (), None)
    assert all(f.filter(info) for _ in range(10))  # only warnings and errors are limited
