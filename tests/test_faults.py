"""Fault injection: real faults against real components (GStreamer, mosquitto, SQLite, a tmpfs, processes).

What is already shown elsewhere is not repeated here; docs/reliability.md maps every fault to its test:
truncated MP4 (test_gst_sources), garbage file (test_cli), one RTP/RTSP outage (test_gst_sources), a sink that
raises (test_pipeline), broker down 10 s + daemon SIGKILL (test_net_mqtt), SQLITE_FULL (test_outbox).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from conftest import REPO, FakeSegmenter, ListSource, RecordingSink, frames_with_fire, run_cli
from helpers.cli import one_error_line
from helpers.net import MOSQUITTO, Mosquitto, free_port, kill_process, wait_until
from firespotter.runtime.gst import gst_available
from firespotter.runtime.plugins import hookimpl

needs_gst = pytest.mark.skipif(not gst_available(), reason="GStreamer/PyGObject not installed (make setup)")


# --- damaged input files ----------------------------------------------------------------------------------


@needs_gst
def test_zero_byte_video_is_a_clear_error(tmp_path):
    from firespotter.runtime.errors import SourceError
    from firespotter.runtime.plugins import new_registry
    from firespotter.runtime.sources import open_source

    empty = tmp_path / "flight.mp4"
    empty.write_bytes(b"")
    with pytest.raises(SourceError) as info:
        open_source(str(empty), new_registry())
    assert "flight.mp4 is empty (0 bytes)" in str(info.value) and "camera" in str(info.value)


@needs_gst
def test_corrupt_bytes_mid_file_lose_only_the_damaged_frames(tmp_path):
    """Random bytes written over the middle of an MP4 (bad sectors, a flaky SD card): frames the decoder can read,
    before AND after the damage, are processed and reach the sinks in order; the run ends saying the file is
    damaged (the CLI prints it as one line and exits 2: test_cli.test_corrupt_video_file)."""
    from firespotter.runtime.pipeline import Pipeline, PipelineOptions
    from firespotter.runtime.plugins import new_registry
    from firespotter.runtime.sources import open_source
    from firespotter.runtime.video import VideoWriter

    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, 160, 120, 15) as w:  # frame i has brightness 20 + 3i: which frames came out is visible
        for i in range(60):
            w.write(np.full((120, 160, 3), 20 + 3 * i, np.uint8))
    data = bytearray(clip.read_bytes())
    rng = random.Random(1)
    for k in range(int(len(data) * 0.4), int(len(data) * 0.6)):
        if rng.random() < 0.02:
            data[k] = rng.randrange(256)
    bad = tmp_path / "damaged.mp4"
    bad.write_bytes(bytes(data))

    class ImageSink(RecordingSink):
        needs_image = True

        def send(self, result):
            super().send(result)
            self.levels = getattr(self, "levels", []) + [int(round((float(result.image.mean()) - 20) / 3))]

    sink = ImageSink()
    s = Pipeline(open_source(str(bad), new_registry()), FakeSegmenter(), [("rec", sink)],
                 PipelineOptions(mode="replay")).run()
    got = sink.levels
    assert 5 < len(got) < 60 and s["frames"] == len(got) and sink.seqs == list(range(len(got)))
    assert got[:5] == [0, 1, 2, 3, 4], "the frames before the damage"
    assert max(got) >= 50, f"the decoder recovers after the damage: {got}"
    assert s["source_state"] == "failed"
    assert "damaged.mp4" in s["source_error"] and f"after {len(got)} of 60 frames" in s["source_error"]
    assert "truncated or damaged" in s["source_error"]


# --- a camera that keeps dying --------------------------------------------------------------------------------

SENDER = ("gst-launch-1.0 -q videotestsrc is-live=true pattern=smpte ! video/x-raw,width=96,height=72,framerate=25/1 "
          "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=5 ! rtph264pay config-interval=1 pt=96 "
          "! udpsink host=127.0.0.1 port={port}")


def _lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return 0


@needs_gst
def test_daemon_recovers_from_a_camera_killed_and_restarted_20_times(tmp_path):
    """`firespotter run` on a live rtp:// camera whose sender process is SIGKILLed and restarted 20 times. Each
    time the source goes STALLED -> RECONNECTING, then frames flow again; the daemon never exits, frame numbers stay
    gapless (nothing invented while the picture is gone), and SIGTERM ends it cleanly with every sink flushed."""
    port = free_port()
    out = tmp_path / "out"
    cfg = tmp_path / "cam.toml"
    cfg.write_text(f"""
[runtime]
mode = "live"
deadline_ms = 2000
drain_timeout_s = 10

[source]
uri = "rtp://127.0.0.1:{port}?stall_timeout=0.25&max_backoff=0.3&connect_timeout=3"

[model]
name = "colorrule"

[[sinks]]
type = "files"
dir = "{out}"
masks = "none"
""")
    log = tmp_path / "daemon.log"
    events = out / "events.jsonl"
    sender = subprocess.Popen(SENDER.format(port=port).split(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemon = subprocess.Popen([sys.executable, "-m", "firespotter", "-v", "run", "-c", str(cfg), "--summary-json",
                               str(tmp_path / "summary.json")], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=open(log, "w"))

    def reconnects():
        try:
            return log.read_text(errors="replace").count("-> reconnecting")
        except OSError:
            return 0

    try:
        assert wait_until(lambda: _lines(events) >= 3, 60), f"no frames at all: {log.read_text()[-2000:]}"
        for i in range(20):
            sender.kill()
            sender.wait()
            assert wait_until(lambda: reconnects() >= i + 1, 20), f"outage {i + 1} not noticed"
            n = _lines(events)
            sender = subprocess.Popen(SENDER.format(port=port).split(), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            assert wait_until(lambda: _lines(events) >= n + 2, 30), \
                f"no frames after restart {i + 1}: {log.read_text(errors='replace')[-2000:]}"
            assert daemon.poll() is None, f"the daemon exited at restart {i + 1}"
    finally:
        sender.kill()
        sender.wait()
        kill_process(daemon, timeout=60)
    assert daemon.returncode == 0, log.read_text(errors="replace")[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    seqs = [json.loads(line)["seq"] for line in events.read_text().splitlines()]
    assert summary["frames"] == len(seqs) and summary["infer_errors"] == 0
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[-1] + 1 - len(seqs) == summary["dropped"], "every missing number is a counted drop, none invented"
    assert reconnects() >= 20


# --- a model that emits NaN / inf -----------------------------------------------------------------------------


class _PoisonPlugin:
    """A model registered through the plugin API: fire where red is high, but frame k's output is all NaN when
    k % 4 == 1, has +inf pixels when k % 4 == 2 and a -inf pixel when k % 4 == 3 (k = images seen, = seq in replay)."""

    def __init__(self):
        self.k = 0

    def _predict(self, batch):
        out = (batch[..., 0].astype(np.float32) > 200).astype(np.float32)
        for j in range(len(batch)):
            kind = (self.k + j) % 4
            if kind == 1:
                out[j] = np.nan
            elif kind == 2:
                out[j, :4, :4] = np.inf
            elif kind == 3:
                out[j, 0, 0] = -np.inf
        self.k += len(batch)
        return out

    @hookimpl
    def register_models(self):
        from firespotter.runtime.specs import ModelSpec
        from firespotter.runtime.types import InputSpec

        plugin = self

        class Model:
            model_id = "poison-1"
            input_spec = InputSpec(size=None)

            def formats(self):
                return ("numpy",)

            def artifact(self, fmt):
                if fmt != "numpy":
                    raise KeyError(fmt)
                return plugin._predict

        return [ModelSpec("poison", lambda options=None: Model(), "NaN/inf on some frames (tests)", ("fp32",))]


def test_nan_and_inf_frames_are_counted_and_never_published(tmp_path):
    """Through the real registry, pipeline, files sink and MQTT sink to a real broker: frames whose model output
    has NaN or +/-inf are counted (summary and Prometheus) and appear nowhere: no event, no mask, no fire message
    (neither "fire" nor "no fire"); every clean frame is published."""
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    from firespotter.runtime.assemble import build_pipeline
    from firespotter.runtime.config import load_settings
    from firespotter.runtime.metrics import PipelineMetrics
    from firespotter.runtime.plugins import new_registry

    plugin = _PoisonPlugin()
    broker = Mosquitto(tmp_path / "broker").start()
    got: list[dict] = []
    import paho.mqtt.client as mqtt

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="station")
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("firespotter/+/fire", qos=1)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f"""
[source]
uri = "test://?size=96x96&frames=24"
[model]
name = "poison"
[[sinks]]
type = "files"
dir = "{tmp_path / 'out'}"
[[sinks]]
type = "mqtt"
port = {broker.port}
min_interval_ms = 0
min_alert = "suspect"
close_timeout_s = 10
outbox = "{tmp_path / 'outbox.sqlite'}"
""")
        registry = new_registry(plugins=[("poison-model", plugin)])
        pipeline = build_pipeline(load_settings(cfg), registry)
        metrics = PipelineMetrics(pipeline.describe())
        pipeline.observers.append(metrics.observe)
        summary = pipeline.run()
        metrics.update(pipeline, 0.0, True, None, 1)
        poisoned = {k for k in range(24) if k % 4}
        clean = set(range(24)) - poisoned
        assert summary["frames_in"] == 24 and summary["nonfinite_frames"] == len(poisoned) == 18
        assert summary["frames"] == len(clean)  # processed and published
        events = [json.loads(x) for x in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
        assert {e["seq"] for e in events} == clean
        assert len(list((tmp_path / "out" / "masks").glob("*.png"))) == len(clean)
        fire_seqs = {e["seq"] for e in events if e["alert"] != "none"}
        assert fire_seqs, "the synthetic flight has fire in clean frames"
        assert wait_until(lambda: len({m["seq"] for m in got}) >= len(fire_seqs), 30)
        time.sleep(0.3)
        assert {m["seq"] for m in got} <= clean, "a NaN/inf frame was published"
        assert fire_seqs <= {m["seq"] for m in got}
        text = metrics_text(metrics)
        assert 'component="nonfinite_output"} 18.0' in text, text[:2000]
    finally:
        sub.loop_stop()
        sub.disconnect()
        broker.stop()


def metrics_text(metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


# --- a sink that blocks forever ---------------------------------------------------------------------------------


class BlockedSink(RecordingSink):
    """send() never returns (a hung NFS mount, a socket without timeout) until the test releases it."""

    def __init__(self):
        super().__init__("blocked")
        self.release = threading.Event()

    def send(self, result):
        self.release.wait()


def test_a_sink_that_blocks_forever_neither_stalls_inference_nor_hangs_the_end():
    """Live mode, end of input: the other sink gets every processed frame, the hung sink's backlog is counted as
    dropped, and the run ends within drain_timeout_s (it used to wait forever for the hung sink at end of input)."""
    from firespotter.runtime.pipeline import Pipeline, PipelineOptions

    blocked, rec = BlockedSink(), RecordingSink()
    p = Pipeline(ListSource(frames_with_fire(120), fps=60), FakeSegmenter(), [("rec", rec), ("blocked", blocked)],
                 PipelineOptions(mode="live", drain_timeout_s=2, sink_queue_size=8))
    done: dict = {}
    t = threading.Thread(target=lambda: done.update(p.run()), daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(90)
    try:
        assert not t.is_alive(), "the run hung on the blocked sink"
        s = done
        assert s["frames"] > 0 and rec.seqs == sorted(rec.seqs) and len(rec.seqs) == s["frames"]
        assert s["drained"] is False
        assert s["sinks"]["blocked"]["dropped"] >= s["frames"] - 8 - 1, s["sinks"]["blocked"]
        assert s["sinks"]["rec"]["dropped"] == 0
        assert time.monotonic() - t0 < 60
    finally:
        blocked.release.set()


def test_a_stop_request_ends_a_replay_wedged_by_a_blocked_sink():
    """Replay is lossless, so a hung sink holds the replay (by design); SIGTERM / request_stop still ends it within
    drain_timeout_s, and the frames already processed reached the other sink."""
    from firespotter.runtime.pipeline import Pipeline, PipelineOptions

    blocked, rec = BlockedSink(), RecordingSink()
    p = Pipeline(ListSource(frames_with_fire(200)), FakeSegmenter(), [("rec", rec), ("blocked", blocked)],
                 PipelineOptions(mode="replay", drain_timeout_s=1))
    threading.Timer(1.0, p.request_stop).start()
    try:
        t0 = time.monotonic()
        s = p.run()
        assert time.monotonic() - t0 < 30 and s["drained"] is False and s["stopped_by_request"]
        assert rec.seqs == list(range(len(rec.seqs))) and len(rec.seqs) >= 1
    finally:
        blocked.release.set()


# --- the outbox's disk fills up (a real size-limited tmpfs) ----------------------------------------------------


def _mount_tmpfs(path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root; the SQLITE_FULL path is covered by test_outbox")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        msg = f"cannot mount a tmpfs here ({r.stderr.strip()}); the SQLITE_FULL path is covered by test_outbox"
        print(msg)
        pytest.skip(msg)


DISK_FULL_CHILD = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {tests!r})
    from helpers.net import fire_result
    from firespotter.net import wire
    from firespotter.net.outbox import Outbox

    def fill(path):  # until ENOSPC
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, bytes(4096)) == 4096:
                pass
        except OSError:
            pass
        finally:
            os.close(fd)

    disk = {disk!r}
    ob = Outbox(os.path.join(disk, "outbox.sqlite"), retry_s=0.0, max_bytes=64 << 20)
    results = [fire_result(i, size=64) for i in range(8)]
    ids, degraded_at, recovered_at = [], None, None

    def put(i):
        m = wire.fire_message(results[i % 8], "d", mask_max_side=32)
        m["seq"] = i
        ob.put(m["id"], "t", wire.dumps(m), seq=i)
        ids.append(m["id"])

    # 1. the disk fills up under the outbox; then the operator frees space
    with open(os.path.join(disk, "filler"), "wb") as f:
        f.write(bytes({filler_bytes}))
    for i in range(2000):
        put(i)
        if ob.degraded and degraded_at is None:
            degraded_at, reason1 = i, ob.degraded
            os.remove(os.path.join(disk, "filler"))
        if degraded_at is not None and not ob.degraded and recovered_at is None:
            recovered_at = i
        if recovered_at is not None and i >= recovered_at + 10:
            break
    n1 = len(ids)
    # 2. full again, and this time an acknowledgement cannot be written
    fill(os.path.join(disk, "filler2"))
    put(n1)
    acked = ids[:5]
    ob.ack(acked)
    reason2 = ob.degraded
    due = [it.id for it in ob.due(10_000)]
    os.remove(os.path.join(disk, "filler2"))
    put(n1 + 1)
    acked.append(ids[5])
    ob.ack([ids[5]])  # the next acknowledgement also applies those held back while the disk was full
    print(json.dumps({{"ids": ids, "degraded_at": degraded_at, "recovered_at": recovered_at, "reason1": reason1,
                      "reason2": reason2, "due": due, "acked": acked, "still": ob.degraded,
                      "pending": [it.id for it in ob.due(10_000)]}}), flush=True)
    ob.close()
""")


def test_outbox_on_a_full_tmpfs_keeps_every_message_and_persists_again(tmp_path):
    """The outbox lives on a 1 MiB tmpfs that a filler file has almost filled. It runs into ENOSPC (a real full
    disk, not a simulated one), says so, keeps every message (in memory), persists again once space is freed; an
    acknowledgement that cannot be written on a full disk is still honoured (never resent) and the log names the
    real cause. In a child process: SQLite maps its -shm file, and a full tmpfs must not kill the daemon (SIGBUS)."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "1m")
    try:
        code = DISK_FULL_CHILD.format(tests=str(REPO / "tests"), disk=str(disk), filler_bytes=(1024 - 200) << 10)
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
        d = json.loads(p.stdout.strip().splitlines()[-1])
        assert d["degraded_at"] is not None, "the disk never filled up"
        assert d["recovered_at"] is not None, "the outbox did not persist again after space was freed"
        assert "full" in d["reason1"] and "going on without persistence" in p.stderr
        assert "full" in d["reason2"], f"the real cause is hidden: {d['reason2']}"
        ids, acked = d["ids"], set(d["acked"])
        first = set(d["acked"][:5])  # acknowledged while the disk was full
        assert d["due"] == [i for i in ids[:-1] if i not in first], "every accepted message is due, oldest first"
        assert d["pending"] == [i for i in ids if i not in acked] and d["still"] is None
        db = sqlite3.connect(str(disk / "outbox.sqlite"))  # what reached the disk is a sound database
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert not acked & {r[0] for r in db.execute("SELECT id FROM messages")}
        db.close()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# --- SIGKILL in the middle of outbox writes ---------------------------------------------------------------------


SIGKILL_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from helpers.net import fire_result
    from firespotter.net import wire
    from firespotter.net.outbox import Outbox
    ob = Outbox({path!r}, max_messages=100_000)
    base = {base}
    results = [fire_result(i, size=64) for i in range(8)]
    i = 0
    while True:   # write as fast as it can until SIGKILLed: puts, and acks of the older half in batches
        m = wire.fire_message(results[i % 8], "d", mask_max_side=64)
        m["seq"] = base + i
        ob.put(m["id"], "t", wire.dumps(m), seq=base + i)
        print("PUT", m["id"], flush=True)
        if i % 10 == 9:
            old = [it.id for it in ob.due(5)]
            print("ACKING", " ".join(old), flush=True)   # a kill may land before or after the ack commits
            ob.ack(old)
            print("ACKED", flush=True)
        i += 1
""")


def test_sigkill_mid_write_then_restart_keeps_the_database_sound_and_loses_nothing(tmp_path):
    """A writer is SIGKILLed at a random moment of a put/ack loop, twice, the second run restarting on the same
    file. Afterwards: PRAGMA integrity_check is ok; every message whose put returned and that was not acknowledged
    is there; nothing whose ack returned comes back."""
    path = tmp_path / "outbox.sqlite"
    put, acked = [], set()
    rng = random.Random(7)
    for run in range(2):
        p = subprocess.Popen([sys.executable, "-c", SIGKILL_CHILD.format(tests=str(REPO / "tests"), path=str(path),
                                                                          base=run * 1_000_000)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        lines = []
        want = rng.randint(60, 200)
        t_end = time.monotonic() + 60
        while len(lines) < want and time.monotonic() < t_end:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line.split())
        time.sleep(rng.uniform(0, 0.05))  # land the kill anywhere in the next writes
        os.kill(p.pid, signal.SIGKILL)
        rest = p.stdout.read()  # not communicate(): it would skip what readline() has buffered already
        err = p.stderr.read()
        p.wait(30)
        assert p.returncode == -signal.SIGKILL, err[-2000:]
        lines += [x.split() for x in rest.splitlines()]
        assert len(lines) >= 50, f"the writer did not get going: {err[-2000:]}"
        acking: set[str] = set()  # an ack under way when the kill came: either outcome is right
        for words in lines:
            if words and words[0] == "PUT" and len(words) == 2 and len(words[1]) == 32:
                put.append(words[1])
            elif words and words[0] == "ACKING":
                acking = set(words[1:])
            elif words and words[0] == "ACKED":
                acked.update(acking)
                acking = set()
        db = sqlite3.connect(str(path))
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r[0] for r in db.execute("SELECT id FROM messages")}
        db.close()
        missing = [i for i in put if i not in acked and i not in acking and i not in stored]
        assert not missing, f"run {run}: {len(missing)} accepted messages lost"
        assert not (stored & acked), f"run {run}: acknowledged messages came back"
        acked.update(acking - stored)
    from firespotter.net.outbox import Outbox

    ob = Outbox(path)
    assert ob.pending() == len(stored) and stored >= set(put) - acked  # counters rebuilt from the file
    ob.close()


# --- a stopped live source lets go of its camera ------------------------------------------------------------


@needs_gst
def test_a_stopped_live_source_releases_its_socket_at_once():
    """Found by the RTP soak (GStreamer warned at exit about elements disposed while PLAYING): a stop request left
    the source's pipeline playing, its UDP socket bound and its threads running until garbage collection. Now the
    pipeline closes the source's iterator, which tears GStreamer down on the source thread."""
    import socket

    from firespotter.runtime.pipeline import Pipeline, PipelineOptions
    from firespotter.runtime.plugins import new_registry
    from firespotter.runtime.sources import open_source

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = subprocess.Popen(SENDER.format(port=port).split(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        src = open_source(f"rtp://127.0.0.1:{port}?connect_timeout=30", new_registry(), live=True)
        rec = RecordingSink()
        p = Pipeline(src, FakeSegmenter(), [("rec", rec)], PipelineOptions(mode="live", drain_timeout_s=5))
        # stop while frames flow: the source generator is suspended at a `yield`
        threading.Thread(target=lambda: wait_until(lambda: len(rec.seqs) >= 3, 60) and p.request_stop(),
                         daemon=True).start()
        assert p.run()["drained"] and len(rec.seqs) >= 3
    finally:
        sender.kill()
        sender.wait()
    assert src._pipeline is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # EADDRINUSE while a forgotten udpsrc still holds it
