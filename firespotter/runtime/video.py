"""Writing RGB frames as H.264: into MP4/MKV files or over RTP/UDP, through GStreamer with the best encoder
present (nvv4l2h264enc, vah264enc, x264enc, openh264enc). Without GStreamer, MP4 files fall back to OpenCV's
MPEG-4 Part 2 ('mp4v') writer (its pip wheels carry no H.264 encoder) and say so.

Raw RGB in GStreamer has rows padded to a multiple of 4 bytes: a 426-pixel row (1278 bytes) handed over unpadded
shears every row after the first into noise the encoder turns into one flat colour. Rows are padded here, odd
sizes are padded by one edge row/column (H.264 4:2:0 encoders take even sizes only), and the first encoded frame
is decoded again and compared with its input, so such a mismatch is an error instead of a silent blank video.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

log = logging.getLogger("firespotter.video")

# Mean absolute difference (0..255) between the first frame and its decoded encoding, both shrunk to a coarse
# grid so compression noise averages out; a sheared or blank frame differs by far more (measured: ~110).
MISMATCH_LIMIT = 25.0


class EncodedFrameMismatch(OSError):
    """The first encoded frame does not show what was written."""


def gst_rgb_bytes(rgb: np.ndarray) -> bytes:
    """An H×W×3 frame as GStreamer's RGB layout: each row padded to a multiple of 4 bytes."""
    height, width = rgb.shape[:2]
    stride = (width * 3 + 3) & ~3
    if stride == width * 3:
        return np.ascontiguousarray(rgb).tobytes()
    rows = np.zeros((height, stride), np.uint8)
    rows[:, : width * 3] = rgb.reshape(height, width * 3)
    return rows.tobytes()


def even_size(rgb: np.ndarray) -> np.ndarray:
    """The frame with its last row/column repeated where the height/width is odd."""
    height, width = rgb.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return rgb
    return np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def frame_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two RGB frames on a coarse grid (block means), 0..255."""
    import cv2

    grid = (max(1, min(32, a.shape[1] // 8)), max(1, min(32, a.shape[0] // 8)))
    small_a = cv2.resize(a, grid, interpolation=cv2.INTER_AREA).astype(np.float32)
    small_b = cv2.resize(b, grid, interpolation=cv2.INTER_AREA).astype(np.float32)
    return float(np.abs(small_a - small_b).mean())


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
    instead of blocking the caller. Files use leaky=False: every frame is written.

    Odd sizes are encoded one row/column larger (the edge repeated). With GStreamer and an H.264 decoder present,
    the first encoded frame is decoded again and compared with its input: a mismatch raises
    EncodedFrameMismatch from write() or close(), once. `verified` tells whether that check ran and passed."""

    def __init__(self, target: str | Path, width: int, height: int, fps: float = 10.0, *, prefer_gst: bool = True,
                 leaky: bool = False, kbps: int = 2000, creation_time_s: int | None = None):
        """creation_time_s: a fixed container creation time (Unix seconds), for byte-identical files; the
        muxer writes the current time otherwise."""
        self.target = str(target)
        self.path = Path(target) if not self.target.startswith("rtp://") else None
        self.width, self.height, self.fps = width, height, fps
        self.encoded_size = (width + width % 2, height + height % 2)
        self.frames = 0
        self.creation_time_s = creation_time_s
        self.verified: bool | None = None  # None: not checked (yet, or no decoder)
        self._pipeline = self._appsrc = self._cv = None
        self._first_input: np.ndarray | None = None
        self._first_decoded: np.ndarray | None = None
        self._first_encoded_pts: int | None = None
        self._checking = False
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
            self._pipeline = Gst.parse_launch(self._describe(chain, leaky))
            self._appsrc = self._pipeline.get_by_name("src")
            check = self._pipeline.get_by_name("check")
            if check is not None:
                self._checking = True
                check.connect("new-sample", self._on_check_sample)
                # Decode only until the first frame is in: later buffers are dropped before the decoder.
                queue = self._pipeline.get_by_name("checkq")
                queue.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self._check_probe)
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

    def _describe(self, chain: str, leaky: bool) -> str:
        from .gst import GstRegistry, choose_decoder

        width, height = self.encoded_size
        fps_frac = f"{int(round(self.fps * 1000))}/1000"
        queue = "max-buffers=2 leaky-type=downstream block=false" if leaky else "block=true max-bytes=0"
        tail = output_tail(self.target).removeprefix("h264parse ! ")
        desc = (f"appsrc name=src is-live={'true' if leaky else 'false'} format=time {queue} "
                f"caps=video/x-raw,format=RGB,width={width},height={height},framerate={fps_frac} "
                f"! {chain} ! h264parse config-interval=-1 ! tee name=t t. ! queue ! {tail}")
        decoder = choose_decoder("h264", GstRegistry())
        if decoder is None:
            log.info("no H.264 decoder: the first encoded frame of %s is not checked", self.target)
            return desc
        # Unbounded and never leaky: a leaky queue drops the oldest buffers while the decoder starts, and the
        # first decoded picture would be a later frame. It holds only what is encoded before the first picture
        # comes out; after that the probe drops every buffer before it.
        return (f"{desc} t. ! queue name=checkq max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! h264parse ! "
                f"{decoder[1]} ! videoconvert "
                f"! video/x-raw,format=RGB ! appsink name=check sync=false async=false emit-signals=true "
                f"max-buffers=1 drop=true")

    def _check_probe(self, pad, info):
        Gst = self._Gst
        if self._first_encoded_pts is None:
            self._first_encoded_pts = info.get_buffer().pts  # the encoder may offset every pts (x264enc: 1000 h)
        return Gst.PadProbeReturn.DROP if self._first_decoded is not None else Gst.PadProbeReturn.OK

    def _on_check_sample(self, appsink):
        from .gst import sample_to_rgb

        sample = appsink.emit("pull-sample")
        if self._first_decoded is None and sample is not None:
            pts = sample.get_buffer().pts
            if pts != self._first_encoded_pts and self._Gst.CLOCK_TIME_NONE not in (pts, self._first_encoded_pts):
                # not the first frame (it cannot be compared with the first input): no verdict rather than a wrong one
                log.debug("%s: first decoded picture has pts %d, the first frame %s; not checked", self.target, pts,
                          self._first_encoded_pts)
                self._checking = False
            self._first_decoded = sample_to_rgb(sample)
        return self._Gst.FlowReturn.OK

    def _verify(self) -> None:
        """Compare the first decoded frame with the first input once both are known."""
        if not self._checking or self._first_decoded is None or self._first_input is None:
            return
        self._checking = False
        decoded, expected = self._first_decoded, self._first_input
        self._first_input = None
        if decoded.shape != expected.shape:
            self.verified = False
            raise EncodedFrameMismatch(f"{self.target}: the first encoded frame is {decoded.shape[1]}x{decoded.shape[0]}, "
                                       f"its input {expected.shape[1]}x{expected.shape[0]}")
        diff = frame_difference(decoded, expected)
        self.verified = diff <= MISMATCH_LIMIT
        if not self.verified:
            raise EncodedFrameMismatch(
                f"{self.target}: the first encoded frame does not show its input (mean difference {diff:.0f} of 255, "
                f"limit {MISMATCH_LIMIT:.0f}) with encoder {self.encoder} at {self.width}x{self.height}; "
                "the video would be unusable: report this with the frame size and encoder")

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {rgb.shape[1]}x{rgb.shape[0]}, the video is {self.width}x{self.height}")
        if self._cv is not None:
            import cv2

            self._cv.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        else:
            Gst = self._Gst
            frame = even_size(rgb)
            if self.frames == 0 and self._checking:
                self._first_input = frame.copy()
            buf = Gst.Buffer.new_wrapped(gst_rgb_bytes(frame))
            duration = int(Gst.SECOND / self.fps)
            buf.pts = self.frames * duration
            buf.duration = duration
            if self._appsrc.push_buffer(buf) != Gst.FlowReturn.OK:
                self._raise_bus_error()
                raise OSError(f"GStreamer refused a frame for {self.target}")
        self.frames += 1
        self._verify()

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
        self._verify()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
