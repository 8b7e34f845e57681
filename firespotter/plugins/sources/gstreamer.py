"""GStreamer sources: file://, v4l2://, csi://, rtsp://, rtp://, gst:// through an RGB appsink.

Loss semantics (docs/architecture.md): CONNECTING until the first frame; STREAMING while frames come; STALLED when none
came for `stall_timeout` seconds; RECONNECTING (pipeline torn down and rebuilt, exponential backoff with
jitter, forever by default) for live sources; ENDED at the end of a file; FAILED when a file is damaged or a
live source is told not to reconnect. A frame is never invented: while the picture is gone, nothing is yielded
and `state` says why.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from firespotter.runtime.errors import SourceError
from firespotter.runtime.gst import GstRegistry, gst_available, load_gst, sample_to_rgb
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.sources import SourceURI, float_param
from firespotter.runtime.specs import Availability, SourceSpec
from firespotter.runtime.types import Frame, SourceState

from . import gst_uris

log = logging.getLogger("firespotter.sources.gst")


class GstSource:
    def __init__(
        self,
        uri: SourceURI,
        describe: Callable[[], str],
        *,
        source_id: str,
        live: bool,
        reconnect: bool,
        stall_timeout_s: float = 2.0,
        connect_timeout_s: float = 5.0,
        max_backoff_s: float = 8.0,
        expected_frames: int | None = None,
        fps: float | None = None,
    ):
        self.uri = uri
        self.describe = describe
        self.source_id = source_id
        self.live = live
        self.reconnect = reconnect
        self.stall_timeout_s = stall_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_backoff_s = max_backoff_s
        self.expected_frames = expected_frames
        self.fps = fps
        self.skipped: list[str] = []
        self.transitions: list[tuple[float, SourceState]] = []  # (monotonic s, state): for tests and logs
        self.reconnects = 0
        self._state = SourceState.CONNECTING
        self._closed = threading.Event()
        self._pipeline = None
        self._seq = 0
        self._jitter = random.Random()
        self.transitions.append((time.monotonic(), self._state))
        self._build()  # fail now, with a clear message, if the description cannot even be parsed

    # --- state ------------------------------------------------------------------------------------------

    @property
    def state(self) -> SourceState:
        return self._state

    def _set(self, state: SourceState) -> None:
        if state is not self._state:
            log.info("%s: %s -> %s", self.uri.raw, self._state.value, state.value)
            self._state = state
            self.transitions.append((time.monotonic(), state))

    # --- pipeline lifecycle ---------------------------------------------------------------------------

    def _build(self):
        Gst = load_gst()[0]
        description = self.describe()
        try:
            pipeline = Gst.parse_launch(description)
        except Exception as exc:  # GLib.Error: no element "foo", syntax errors
            raise SourceError(f"{self.uri.raw}: cannot build the GStreamer pipeline: {getattr(exc, 'message', exc)}",
                              "check the element names with gst-inspect-1.0") from None
        sink = pipeline.get_by_name("sink") if hasattr(pipeline, "get_by_name") else None
        if sink is None:
            sink = self._find_appsink(pipeline)
        if sink is None:
            raise SourceError(f"{self.uri.raw}: the pipeline has no appsink", "end it in `appsink name=sink`")
        self._pipeline, self._sink = pipeline, sink
        return pipeline

    @staticmethod
    def _find_appsink(pipeline):
        _, GstApp, _, _ = load_gst()
        if not hasattr(pipeline, "iterate_elements"):
            return pipeline if isinstance(pipeline, GstApp.AppSink) else None
        it = pipeline.iterate_elements()
        while True:
            ok, element = it.next()
            if ok.value_nick != "ok":
                return None
            if isinstance(element, GstApp.AppSink):
                return element

    def _teardown(self) -> None:
        if self._pipeline is not None:
            Gst = load_gst()[0]
            self._pipeline.set_state(Gst.State.NULL)
            self._pipeline = None

    def _bus_problem(self):
        """('eos', None) / ('error', message) / None, without blocking."""
        Gst = load_gst()[0]
        bus = self._pipeline.get_bus()
        msg = bus.pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.EOS)
        if msg is None:
            return None
        if msg.type == Gst.MessageType.EOS:
            return "eos", None
        err, debug = msg.parse_error()
        return "error", f"{err.message}" + (f" ({debug.splitlines()[-1]})" if debug else "")

    def _capture_ns(self, sample) -> int:
        """Capture time on the monotonic clock: the buffer's running time + the pipeline's base time for live
        sources (GStreamer's system clock is CLOCK_MONOTONIC), else the moment it reached us."""
        now = time.monotonic_ns()
        if not self.live:
            return now
        Gst = load_gst()[0]
        pts = sample.get_buffer().pts
        if pts == Gst.CLOCK_TIME_NONE:
            return now
        t = self._pipeline.get_base_time() + pts
        return t if 0 < t <= now else now

    # --- iteration ---------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Frame]:
        # A consumer that stops early closes the generator: tear the pipeline down then, on the iterating
        # thread, instead of leaving it PLAYING (socket, threads) until garbage collection.
        try:
            yield from self._frames()
        finally:
            self._teardown()

    def _frames(self) -> Iterator[Frame]:
        Gst = load_gst()[0]
        attempt = 0
        while not self._closed.is_set():
            if self._pipeline is None:
                self._build()
            if self._pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
                problem = self._bus_problem()
                reason = problem[1] if problem else "the pipeline refused to start"
                self._teardown()
                if not self._may_retry(reason):
                    return
                attempt = self._backoff(attempt)
                continue
            started = time.monotonic()
            last_frame = None
            outcome = None
            while not self._closed.is_set():
                sample = self._sink.try_pull_sample(100 * Gst.MSECOND)
                now = time.monotonic()
                if sample is not None:
                    image = sample_to_rgb(sample)
                    self._set(SourceState.STREAMING)
                    attempt = 0
                    last_frame = now
                    frame = Frame(image, self._seq, self._capture_ns(sample), time.time_ns(), self.source_id,
                                  meta={"name": f"{self.source_id}_{self._seq:06d}"})
                    self._seq += 1
                    yield frame
                    continue
                problem = self._bus_problem()
                if problem is None and self._sink.is_eos():
                    problem = ("eos", None)
                if problem is not None:
                    outcome = problem
                    break
                if self.live:
                    if last_frame is None and now - started > self.connect_timeout_s:
                        outcome = ("error", f"no frame within {self.connect_timeout_s:g} s")
                        break
                    if last_frame is not None and now - last_frame > self.stall_timeout_s:
                        self._set(SourceState.STALLED)
                        if now - last_frame > 2 * self.stall_timeout_s:
                            outcome = ("error", f"no frame for {now - last_frame:.1f} s")
                            break
            self._teardown()
            if self._closed.is_set() or outcome is None:
                break
            kind, message = outcome
            if kind == "eos" and not self.live:
                expected = self.expected_frames
                if expected and self._seq < expected - 1:  # the index's estimate may be one off, no more
                    self._set(SourceState.FAILED)
                    raise SourceError(f"{self.uri.raw}: the file ended after {self._seq} of {expected} frames",
                                      "it is truncated or damaged; every frame the decoder could read was processed")
                self._set(SourceState.ENDED)
                return
            if not self.live:
                self._set(SourceState.FAILED)
                raise SourceError(f"{self.uri.raw}: stream broken after {self._seq} frames: {message}",
                                  "the file may be truncated or damaged; the frames before were processed")
            if not self._may_retry(message or "end of stream"):
                return
            attempt = self._backoff(attempt)
        self._teardown()
        if self._state not in (SourceState.FAILED, SourceState.ENDED):
            self._set(SourceState.ENDED)

    def _may_retry(self, reason: str) -> bool:
        if self.live and self.reconnect:
            log.warning("%s: %s; reconnecting", self.uri.raw, reason)
            return True
        self._set(SourceState.FAILED)
        raise SourceError(f"{self.uri.raw}: {reason}")

    def _backoff(self, attempt: int) -> int:
        """Exponential backoff with +-20 % jitter (so a fleet does not reconnect in lockstep); interruptible."""
        self._set(SourceState.RECONNECTING)
        self.reconnects += 1
        delay = min(self.max_backoff_s, 0.25 * 2**attempt) * self._jitter.uniform(0.8, 1.2)
        self._closed.wait(delay)
        return attempt + 1

    def close(self) -> None:
        """Stop: safe from another thread (the pipeline's stop request); the iterating thread tears down."""
        self._closed.set()


# --- opening by scheme ------------------------------------------------------------------------------------


def _live_options(uri: SourceURI) -> dict:
    return {
        "stall_timeout_s": float_param(uri, "stall_timeout", 2.0, gt=0),
        "connect_timeout_s": float_param(uri, "connect_timeout", 5.0, gt=0),
        "max_backoff_s": float_param(uri, "max_backoff", 8.0, gt=0),
        "reconnect": uri.params.get("reconnect", "1").lower() not in ("0", "false", "no"),
    }


def probe_file(path: Path) -> dict:
    """Codec, frame rate and frame count (duration × rate) through GStreamer's discoverer."""
    Gst, _, _, GstPbutils = load_gst()
    try:
        info = GstPbutils.Discoverer.new(10 * Gst.SECOND).discover_uri(path.resolve().as_uri())
    except Exception as exc:
        raise SourceError(f"{path} is not a video GStreamer can read: {getattr(exc, 'message', exc)}",
                          "an MP4 whose recording was cut off before its index was written cannot be read") from None
    videos = info.get_video_streams()
    if not videos:
        raise SourceError(f"{path} has no video stream")
    v = videos[0]
    caps = v.get_caps().to_string() if v.get_caps() else ""
    codec = "h264" if caps.startswith("video/x-h264") else "h265" if caps.startswith("video/x-h265") else "other"
    num, den = v.get_framerate_num(), v.get_framerate_denom()
    fps = num / den if num and den else None
    duration_s = info.get_duration() / Gst.SECOND if info.get_duration() else None
    frames = round(duration_s * fps) if (fps and duration_s) else None
    return {"codec": codec, "fps": fps, "frames": frames, "width": v.get_width(), "height": v.get_height()}


def count_encoded_frames(path: Path, timeout_s: float = 30.0) -> int:
    """How many video frames the container holds: demux and parse only (no decoding), count the samples.
    Exact where the discoverer's duration × rate is an estimate (it can be one off)."""
    Gst = load_gst()[0]
    pipeline = Gst.parse_launch(f"filesrc location={gst_uris.quote(str(path))} ! parsebin ! "
                                "appsink name=sink sync=false caps=video/x-h264;video/x-h265;video/mpeg;image/jpeg")
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    n, deadline = 0, time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and sink.try_pull_sample(Gst.SECOND) is not None:
            n += 1
    finally:
        pipeline.set_state(Gst.State.NULL)
    return n


def open_file(uri: SourceURI, *, source_id: str, live: bool = False, options: dict | None = None):
    path = Path(uri.location).expanduser()
    if not path.exists():
        raise SourceError(f"file {path} does not exist")
    if path.is_dir():
        raise SourceError(f"{path} is a folder, not a file", f"use dir://{path}")
    if path.stat().st_size == 0:  # a recording that never got a byte: say so rather than "no data in stream"
        raise SourceError(f"{path} is empty (0 bytes)", "the recording was never written; check the camera or the copy")
    info = probe_file(path)
    registry = GstRegistry()
    description = gst_uris.file_pipeline(str(path), info["codec"], registry)
    if live:  # a file standing in for a camera plays at its own rate
        description = description.replace("sync=false", "sync=true")
    return GstSource(uri, lambda: description, source_id=source_id, live=False, reconnect=False,
                     expected_frames=info["frames"], fps=info["fps"])


def open_live(builder):
    def factory(uri: SourceURI, *, source_id: str, live: bool = True, options: dict | None = None):
        registry = GstRegistry()
        description = builder(uri, registry)
        return GstSource(uri, lambda: description, source_id=source_id, live=True, **_live_options(uri))

    return factory


def open_rtp(uri: SourceURI, *, source_id: str, live: bool = True, options: dict | None = None):
    address, port = gst_uris.rtp_endpoint(uri)
    check_udp_port_free(address, port, uri)
    return open_live(gst_uris.rtp_pipeline)(uri, source_id=source_id, live=live, options=options)


def check_udp_port_free(address: str, port: int, uri: SourceURI) -> None:
    """GStreamer only says 'Could not get/set settings from/on resource'; say what is wrong instead."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("0.0.0.0" if address.startswith(("224.", "239.")) else address, port))
    except OSError as exc:
        raise SourceError(f"{uri.raw}: cannot listen on UDP {address}:{port}: {exc.strerror}",
                          "another program (or another firespotter) already uses that port") from None
    finally:
        probe.close()


def open_gst(uri: SourceURI, *, source_id: str, live: bool = True, options: dict | None = None):
    description = gst_uris.gst_pipeline(uri)
    return GstSource(uri, lambda: description, source_id=source_id, live=live, **_live_options(uri))


def needs(*elements: str) -> Callable[[], Availability]:
    def check() -> Availability:
        if not gst_available():
            return Availability(False, "GStreamer/PyGObject not importable; `make setup` installs them")
        registry = GstRegistry()
        missing = [e for e in elements if not registry.has(e)]
        if missing:
            return Availability(False, f"GStreamer elements missing here: {', '.join(missing)}")
        return Availability(True)

    return check


@hookimpl
def register_sources():
    base = ("appsink", "videoconvert")
    return [
        SourceSpec("file", open_file, "video file through GStreamer (any container/codec the plugins read)",
                   priority=10, available=needs(*base, "filesrc", "parsebin", "decodebin")),
        SourceSpec("v4l2", open_live(lambda uri, registry: gst_uris.v4l2_pipeline(uri)),
                   "V4L2 camera: v4l2:///dev/video0?width=&height=&fps=&format=mjpeg", available=needs(*base, "v4l2src")),
        SourceSpec("csi", open_live(lambda uri, registry: gst_uris.csi_pipeline(uri)),
                   "Jetson CSI camera: csi://0?width=&height=&fps=", available=needs(*base, "nvarguscamerasrc", "nvvidconv")),
        SourceSpec("rtsp", open_live(gst_uris.rtsp_pipeline), "RTSP: rtsp://host:port/path?latency=&transport=tcp|udp",
                   available=needs(*base, "rtspsrc")),
        SourceSpec("rtp", open_rtp, "H.264/H.265 over RTP/UDP: rtp://@:PORT?codec=&latency=&caps=",
                   available=needs(*base, "udpsrc", "rtpjitterbuffer")),
        SourceSpec("gst", open_gst, "your own pipeline ending in appsink: gst://... ! appsink name=sink",
                   available=needs(*base)),
    ]
