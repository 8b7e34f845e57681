"""Writing RGB frames as H.264: into MP4/MKV files or over RTP/UDP, through GStreamer with the best encoder
present (nvv4l2h264enc, vah264enc, x264enc, openh264enc). Without GStreamer, MP4 files fall back to OpenCV's
MPEG-4 Part 2 ('mp4v') writer (its pip wheels carry no H.264 encoder) and say so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

log = logging.getLogger("firespotter.video")


def _gst():
    from .gst import load_gst

    try:
        return load_gst()[0]
    except ImportError:
        return None


def output_tail(target: str) -> str:
    """The muxer/transport part of the pipeline for `target`: a .mp4/.mkv path or rtp://HOST:PORT."""
    if target.startswith("rtp://"):
        parts = urlsplit(target)
        if not parts.hostname or not parts.port:
            raise ValueError(f"{target}: expected rtp://HOST:PORT")
        return (f"rtph264pay config-interval=1 pt=96 ! udpsink host={parts.hostname} port={parts.port} "
                f"sync=false async=false")
    suffix = Path(target).suffix.lower()
    mux = {".mp4": "mp4mux", ".mov": "qtmux", ".mkv": "matroskamux"}.get(suffix)
    if mux is None:
        raise ValueError(f"{target}: write .mp4, .mov or .mkv, or stream to rtp://HOST:PORT")
    from .gst import quote

    return f"h264parse ! {mux} name=mux ! filesink location={quote(str(target))}"


QT_EPOCH_OFFSET = 2082844800  # seconds from 1904-01-01 (QuickTime's epoch) to 1970-01-01


def _boxes(data: bytearray, start: int, end: int):
    """(type, payload start, box end) of each ISO-BMFF box in data[start:end]."""
    while start + 8 <= end:
        size = int.from_bytes(data[start : start + 4], "big")
        kind = bytes(data[start + 4 : start + 8])
        header = 8
        if size == 1:
            size, header = int.from_bytes(data[start + 8 : start + 16], "big"), 16
        elif size == 0:
            size = end - start
        if size < header:
            return
        yield kind, start + header, start + size
        start += size


def set_mp4_times(path: Path, unix_s: int) -> None:
    """Overwrite the creation and modification times in the mvhd/tkhd/mdhd boxes of an MP4/MOV file.

    The muxer stamps the current time and offers no way to set it; a fixed time makes the file byte-identical
    for identical frames (synthetic flights: same seed, same bytes). Walks the box tree (moov/trak/mdia), so
    picture data that happens to contain the same letters is never touched."""
    data = bytearray(path.read_bytes())
    t = unix_s + QT_EPOCH_OFFSET

    def visit(start: int, end: int) -> None:
        for kind, body, box_end in _boxes(data, start, end):
            if kind in (b"moov", b"trak", b"mdia"):
                visit(body, box_end)
            elif kind in (b"mvhd", b"tkhd", b"mdhd"):
                if data[body] == 0:
                    data[body + 4 : body + 12] = t.to_bytes(4, "big") * 2
                elif data[body] == 1:
                    data[body + 4 : body + 20] = t.to_bytes(8, "big") * 2

    visit(0, len(data))
    path.write_bytes(bytes(data))


class VideoWriter:
    """write(rgb) frame by frame, then close(). `codec` tells what was actually used.

    leaky=True (live streaming): a frame the encoder cannot take at once is dropped (counted in `dropped`)
    instead of blocking the caller. Files use leaky=False: every frame is written."""

    def __init__(self, target: str | Path, width: int, height: int, fps: float = 10.0, *, prefer_gst: bool = True,
                 leaky: bool = False, kbps: int = 2000, creation_time_s: int | None = None):
        """creation_time_s: a fixed container creation time (Unix seconds), for byte-identical files; the
        muxer writes the current time otherwise."""
        self.target = str(target)
        self.path = Path(target) if not self.target.startswith("rtp://") else None
        self.width, self.height, self.fps = width, height, fps
        self.frames = 0
        self.creation_time_s = creation_time_s
        self._pipeline = self._appsrc = self._cv = None
        Gst = _gst() if prefer_gst else None
        chain = None
        if Gst is not None:
            from .gst import GstRegistry, choose_encoder, encode_chain

            choice = choose_encoder(GstRegistry())
            if choice is not None:
                self.encoder = choice[0]
                chain = encode_chain(GstRegistry(), kbps=kbps)
        if chain is not None:
            self.codec = "h264"
            self._Gst = Gst
            fps_frac = f"{int(round(fps * 1000))}/1000"
            queue = "max-buffers=2 leaky-type=downstream block=false" if leaky else "block=true max-bytes=0"
            desc = (
                f"appsrc name=src is-live={'true' if leaky else 'false'} format=time {queue} "
                f"caps=video/x-raw,format=RGB,width={width},height={height},framerate={fps_frac} "
                f"! {chain} ! {output_tail(self.target)}"
            )
            self._pipeline = Gst.parse_launch(desc)
            self._appsrc = self._pipeline.get_by_name("src")
            self._pipeline.set_state(Gst.State.PLAYING)
        else:
            if self.path is None:
                raise OSError(f"streaming to {self.target} needs GStreamer with an H.264 encoder")
            import cv2

            self.codec = "mp4v"
            self.encoder = "opencv"
            log.warning("GStreamer H.264 encoder not available; writing %s as MPEG-4 Part 2 (mp4v)", self.path)
            self._cv = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            if not self._cv.isOpened():
                raise OSError(f"cannot open {self.path} for writing")

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {rgb.shape[1]}x{rgb.shape[0]}, the video is {self.width}x{self.height}")
        if self._cv is not None:
            import cv2

            self._cv.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        else:
            Gst = self._Gst
            buf = Gst.Buffer.new_wrapped(np.ascontiguousarray(rgb).tobytes())
            duration = int(Gst.SECOND / self.fps)
            buf.pts = self.frames * duration
            buf.duration = duration
            if self._appsrc.push_buffer(buf) != Gst.FlowReturn.OK:
                self._raise_bus_error()
                raise OSError(f"GStreamer refused a frame for {self.target}")
        self.frames += 1

    @property
    def dropped(self) -> int:
        """Frames a leaky writer dropped because the encoder was busy."""
        if self._appsrc is None:
            return 0
        try:
            return int(self._appsrc.get_property("dropped"))
        except TypeError:  # GStreamer < 1.20 has no counter
            return 0

    def _raise_bus_error(self) -> None:
        Gst = self._Gst
        msg = self._pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
        if msg is not None:
            err, _ = msg.parse_error()
            raise OSError(f"GStreamer failed writing {self.target}: {err.message}")

    def close(self) -> None:
        if self._cv is not None:
            self._cv.release()
            self._cv = None
        elif self._pipeline is not None:
            Gst = self._Gst
            self._appsrc.end_of_stream()
            msg = self._pipeline.get_bus().timed_pop_filtered(30 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
            self._pipeline.set_state(Gst.State.NULL)
            self._pipeline = None
            if msg is None:
                raise OSError(f"timed out finishing {self.target}")
            if msg.type == Gst.MessageType.ERROR:
                err, _ = msg.parse_error()
                raise OSError(f"GStreamer failed writing {self.target}: {err.message}")
        if self.creation_time_s is not None and self.path is not None and self.path.suffix.lower() in (".mp4", ".mov"):
            set_mp4_times(self.path, self.creation_time_s)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
