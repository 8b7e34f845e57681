"""GStreamer sources and the video sink against real pipelines on 127.0.0.1: files, RTP and RTSP with the
sender killed and restarted, the overlay streamed over RTP, and bad input."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import REPO, run_cli
from firespotter.runtime.errors import SourceError
from firespotter.runtime.gst import gst_available
from firespotter.runtime.plugins import new_registry
from firespotter.runtime.sources import open_source
from firespotter.runtime.types import AlertLevel, PrecisionLabel, Result, SourceState
from firespotter.runtime.video import VideoWriter

pytestmark = pytest.mark.skipif(not gst_available(), reason="GStreamer/PyGObject not installed (make setup)")

SENDER = ("gst-launch-1.0 -q videotestsrc is-live=true pattern=smpte ! video/x-raw,width=160,height=120,framerate=25/1 "
          "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! rtph264pay config-interval=1 pt=96 "
          "! udpsink host=127.0.0.1 port={port}")


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def discoverer_frames(path) -> int:
    from firespotter.plugins.sources.gstreamer import probe_file

    return probe_file(path)["frames"]


def make_clip(path, frames=30, size=(160, 120), fps=15, **kw):
    rng = np.random.default_rng(0)
    with VideoWriter(path, size[0], size[1], fps, **kw) as w:
        for i in range(frames):
            img = np.full((size[1], size[0], 3), 40 + i * 5 % 200, np.uint8)
            img[:, : (i * 7) % size[0]] = rng.integers(0, 255, 3, dtype=np.uint8)
            w.write(img)
    return path


class Collector:
    """Iterates a source on a thread, keeping (arrival time, frame)."""

    def __init__(self, source):
        self.source = source
        self.frames: list = []
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for frame in self.source:
                self.frames.append((time.monotonic(), frame))
        except Exception as exc:  # pragma: no cover - reported by the test
            self.error = exc

    def wait_frames(self, n, timeout):
        deadline = time.monotonic() + timeout
        while len(self.frames) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(self.frames) >= n

    def wait_state(self, state, timeout):
        deadline = time.monotonic() + timeout
        while self.source.state is not state and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.source.state is state

    def stop(self):
        self.source.close()
        self.thread.join(10)


def container_frames(path) -> int:
    from firespotter.plugins.sources.gstreamer import count_encoded_frames

    return count_encoded_frames(path)


def test_mp4_delivers_exactly_the_container_frames_in_order(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=37)
    assert discoverer_frames(clip) == 37 == container_frames(clip)
    src = open_source(str(clip), new_registry())
    frames = list(src)
    assert len(frames) == 37 and [f.seq for f in frames] == list(range(37))
    assert src.state is SourceState.ENDED and src.expected_frames == 37
    assert frames[0].image.shape == (120, 160, 3) and frames[0].image.flags.c_contiguous


def test_real_house_fire_video_replays_completely(real_dev, tmp_path):
    video = real_dev / "videos" / "furg_house6.mp4"
    frames = sum(1 for _ in open_source(str(video), new_registry()))
    assert frames == container_frames(video) == 899
    assert abs(frames - discoverer_frames(video)) <= 1  # duration × rate: an estimate


def test_rtp_sender_killed_and_restarted(tmp_path):
    port = free_port()
    sender = subprocess.Popen(SENDER.format(port=port).split(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    src = open_source(f"rtp://127.0.0.1:{port}?stall_timeout=0.5&max_backoff=1&connect_timeout=1.5",
                      new_registry(), live=True)
    c = Collector(src)
    try:
        assert c.wait_frames(10, 15), f"no RTP frames; state {src.state}"
        assert src.state is SourceState.STREAMING
        sender.kill()
        sender.wait()
        t_kill = time.monotonic()
        assert c.wait_state(SourceState.STALLED, 5)
        assert c.wait_state(SourceState.RECONNECTING, 5)
        time.sleep(1.0)
        n_down = len(c.frames)
        # Nothing arrives while the sender is gone: no black or repeated frame is made up.
        assert all(t < t_kill + 0.5 for t, _ in c.frames)
        sender = subprocess.Popen(SENDER.format(port=port).split(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        t_restart = time.monotonic()
        assert c.wait_frames(n_down + 5, 10), f"no frames after restart; state {src.state}"
        first_back = c.frames[n_down][0]
        assert first_back - t_restart < 5.0
        assert src.state is SourceState.STREAMING
        seqs = [f.seq for _, f in c.frames]
        assert seqs == list(range(len(seqs)))  # gapless: nothing dropped, nothing inserted
        assert all(f.image.mean() > 20 for _, f in c.frames)  # real pictures (SMPTE bars), not black
        states = [s for _, s in src.transitions]
        assert states[:2] == [SourceState.CONNECTING, SourceState.STREAMING]
        i = states.index(SourceState.STALLED)
        assert states[i + 1] is SourceState.RECONNECTING and SourceState.STREAMING in states[i + 1:]
        assert src.reconnects >= 1
    finally:
        sender.kill()
        c.stop()
    assert c.error is None


def test_rtsp_server_stopped_and_restarted():
    port = free_port(socket.SOCK_STREAM)

    def start_server():
        p = subprocess.Popen([sys.executable, str(REPO / "tests" / "helpers" / "rtsp_server.py"), str(port)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert p.stdout.readline().strip() == "ready"
        return p

    server = start_server()
    src = open_source(f"rtsp://127.0.0.1:{port}/test?latency=0&stall_timeout=0.5&max_backoff=1&connect_timeout=3",
                      new_registry(), live=True)
    c = Collector(src)
    try:
        assert c.wait_frames(10, 20), f"no RTSP frames; state {src.state}"
        server.kill()
        server.wait()
        t_kill = time.monotonic()
        deadline = time.monotonic() + 10
        while src.state is SourceState.STREAMING and time.monotonic() < deadline:
            time.sleep(0.05)
        assert src.state in (SourceState.STALLED, SourceState.RECONNECTING)
        n_down = len(c.frames)
        server = start_server()
        assert c.wait_frames(n_down + 5, 20), f"RTSP did not recover; state {src.state}"
        assert src.state is SourceState.STREAMING
        assert not any(t_kill + 0.5 < t < c.frames[n_down][0] for t, _ in c.frames)
    finally:
        server.kill()
        c.stop()
    assert c.error is None


def test_video_sink_streams_rtp_that_a_receiver_decodes():
    port = free_port()
    src = open_source(f"rtp://127.0.0.1:{port}?connect_timeout=10", new_registry(), live=True)
    c = Collector(src)
    time.sleep(0.5)  # the receiver listens before the first (key) frame leaves
    from firespotter.plugins.sinks.video import VideoOptions, VideoSink

    sink = VideoSink(VideoOptions(url=f"rtp://127.0.0.1:{port}", fps=25))
    image = np.full((120, 160, 3), 90, np.uint8)
    mask = np.zeros((120, 160), np.uint8)
    sent = 40
    for i in range(sent):
        sink.send(Result(i, "cam", time.monotonic_ns(), time.time_ns(), mask, [], AlertLevel.NONE,
                         SourceState.STREAMING, "m", PrecisionLabel(), {}, {}, image=image))
        time.sleep(0.04)
    time.sleep(0.5)
    sink.close()
    try:
        assert c.wait_frames(int(sent * 0.8), 5), f"received {len(c.frames)} of {sent}"
        assert c.frames[0][1].image.shape == (120, 160, 3)
    finally:
        c.stop()


def test_mkv_output_keeps_every_frame(tmp_path):
    clip = make_clip(tmp_path / "out.mkv", frames=21)
    assert sum(1 for _ in open_source(str(clip), new_registry())) == 21


def test_truncated_mp4_processes_frames_before_the_damage_then_errors(tmp_path):
    # Index at the front (faststart), then the tail cut off: what a recording interrupted mid-copy looks like.
    full = tmp_path / "full.mp4"
    subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", "num-buffers=60", "pattern=smpte", "!",
                    "video/x-raw,width=320,height=240,framerate=15/1", "!", "x264enc", "speed-preset=ultrafast",
                    "key-int-max=10", "!", "mp4mux", "faststart=true", "!", "filesink", f"location={full}"],
                   check=True, timeout=60)
    data = full.read_bytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(data[: int(len(data) * 0.6)])
    r = run_cli("replay", str(damaged), "--out", str(tmp_path / "o"), "--no-overlay", "--no-report")
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert r.returncode == 1 and "Traceback" not in r.stderr  # a run that failed: 1, restartable
    assert 10 < summary["frames"] < 60
    assert summary["source_state"] == "failed"
    assert "damaged.mp4" in r.stderr and f"ended after {summary['frames']} of 60 frames" in r.stderr
    # An MP4 cut off before its index was written is refused with a hint.
    cut = tmp_path / "no_index.mp4"
    make_clip(tmp_path / "moov_last.mp4", frames=20)
    cut.write_bytes((tmp_path / "moov_last.mp4").read_bytes()[:3000])
    r = run_cli("replay", str(cut), "--out", str(tmp_path / "o2"))
    assert r.returncode == 2 and "no_index.mp4" in r.stderr and "index" in r.stderr


def test_gst_uri_with_unknown_element(tmp_path):
    r = run_cli("replay", "gst://videotestsrc num-buffers=3 ! no_such_element ! appsink name=sink",
                "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no_such_element" in r.stderr and "Traceback" not in r.stderr


def test_gst_uri_runs_an_experts_pipeline(tmp_path):
    r = run_cli("replay", "gst://videotestsrc num-buffers=7 ! video/x-raw,width=64,height=48 ! videoconvert "
                "! video/x-raw,format=RGB ! appsink name=sink", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["frames"] == 7


def test_rtp_port_already_in_use():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        with pytest.raises(SourceError, match=f"cannot listen on UDP 127.0.0.1:{port}"):
            open_source(f"rtp://127.0.0.1:{port}", new_registry(), live=True)


def test_text_file_is_not_a_video(tmp_path):
    bad = tmp_path / "notes.mkv"
    bad.write_text("just text\n" * 50)
    with pytest.raises(SourceError, match="notes.mkv"):
        open_source(str(bad), new_registry())


def test_stop_request_unblocks_a_live_source_waiting_for_a_lost_stream():
    from firespotter.runtime.pipeline import Pipeline, PipelineOptions

    from conftest import FakeSegmenter, RecordingSink

    port = free_port()
    src = open_source(f"rtp://127.0.0.1:{port}?connect_timeout=30", new_registry(), live=True)
    p = Pipeline(src, FakeSegmenter(), [("rec", RecordingSink())], PipelineOptions(mode="live", drain_timeout_s=5))
    threading.Timer(1.0, p.request_stop).start()
    t0 = time.monotonic()
    summary = p.run()
    assert time.monotonic() - t0 < 3
    assert summary["drained"] and summary["frames"] == 0 and summary["stopped_by_request"]
