"""GStreamer helpers shared by sources, sinks and `doctor`: loading, element choice, samples to numpy.

Element choice asks an element registry which decoders/encoders exist and takes the best one, so the same code
builds a Jetson pipeline (nvv4l2decoder, nvv4l2h264enc), an Intel one (VA-API) or a plain CPU one (avdec,
x264enc). The registry is injectable: tests pass a fake one to check the Jetson strings without a Jetson.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

import numpy as np


def _pin_libgcc_unwinder() -> None:
    """libgstreamer pulls in libunwind, whose _Unwind_* symbols then shadow libgcc's for every C++ library
    loaded later: the first C++ exception in ONNX Runtime (e.g. a corrupt .onnx file) aborts the process.
    Loading libgcc_s globally first keeps its unwinder the one that C++ code binds to."""
    import ctypes

    try:
        ctypes.CDLL("libgcc_s.so.1", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        pass


@functools.lru_cache(maxsize=1)
def load_gst():
    """(Gst, GstApp, GstVideo, GstPbutils) or raises ImportError with how to get them."""
    _pin_libgcc_unwinder()
    try:
        import gi

        for name in ("Gst", "GstApp", "GstVideo", "GstPbutils"):
            gi.require_version(name, "1.0")
        from gi.repository import Gst, GstApp, GstPbutils, GstVideo
    except (ImportError, ValueError) as exc:
        raise ImportError(f"GStreamer/PyGObject not available ({exc}); `make setup` installs them "
                          "(apt: gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0; pip: PyGObject<3.51)") from None
    Gst.init(None)
    return Gst, GstApp, GstVideo, GstPbutils


def gst_available() -> bool:
    try:
        load_gst()
        return True
    except ImportError:
        return False


def quote(value: str) -> str:
    """A property value for gst_parse_launch: double-quoted, with quotes and backslashes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ElementRegistry(Protocol):
    def has(self, element: str) -> bool: ...


class GstRegistry:
    """The real registry: what this machine's GStreamer can create."""

    def has(self, element: str) -> bool:
        Gst = load_gst()[0]
        return Gst.ElementFactory.find(element) is not None


@dataclass(frozen=True)
class FakeRegistry:
    """A registry that has exactly the named elements (tests, dry runs for other machines)."""

    elements: frozenset[str]

    def has(self, element: str) -> bool:
        return element in self.elements


# Best first. Each decoder comes with what turns its output into system-memory raw video.
DECODERS: dict[str, list[tuple[str, str]]] = {
    "h264": [
        ("nvv4l2decoder", "nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx"),  # Jetson
        ("vah264dec", "vah264dec"),  # Intel/AMD VA-API (GStreamer >= 1.22 "va" plugin)
        ("vaapih264dec", "vaapih264dec"),  # older gstreamer-vaapi
        ("avdec_h264", "avdec_h264 max-threads=2"),
        ("openh264dec", "openh264dec"),
    ],
    "h265": [
        ("nvv4l2decoder", "nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx"),
        ("vah265dec", "vah265dec"),
        ("vaapih265dec", "vaapih265dec"),
        ("avdec_h265", "avdec_h265 max-threads=2"),
    ],
}
PARSERS = {"h264": "h264parse", "h265": "h265parse"}
DEPAYLOADERS = {"h264": "rtph264depay", "h265": "rtph265depay"}

ENCODERS: list[tuple[str, str]] = [
    ("nvv4l2h264enc", "nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! nvv4l2h264enc insert-sps-pps=true "
                      "idrinterval=30 bitrate={bitrate}"),
    ("vah264enc", "videoconvert ! vah264enc bitrate={kbps}"),
    ("x264enc", "videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast "
                "key-int-max=30 bitrate={kbps}"),
    ("openh264enc", "videoconvert ! video/x-raw,format=I420 ! openh264enc bitrate={bitrate}"),
]


def choose_decoder(codec: str, registry: ElementRegistry) -> tuple[str, str] | None:
    """(element, chain) of the best decoder for `codec` present in `registry`, or None."""
    for element, chain in DECODERS.get(codec, []):
        if registry.has(element):
            return element, chain
    return None


def choose_encoder(registry: ElementRegistry) -> tuple[str, str] | None:
    for element, chain in ENCODERS:
        if registry.has(element):
            return element, chain
    return None


def decode_chain(codec: str, registry: ElementRegistry) -> str:
    """parser ! decoder for an elementary H.264/H.265 stream; decodebin for anything else."""
    choice = choose_decoder(codec, registry)
    if choice is None:
        return "decodebin"
    return f"{PARSERS[codec]} ! {choice[1]}"


def encode_chain(registry: ElementRegistry, kbps: int = 2000) -> str:
    choice = choose_encoder(registry)
    if choice is None:
        raise RuntimeError("no H.264 encoder element (nvv4l2h264enc, vah264enc, x264enc, openh264enc) is installed")
    return choice[1].format(kbps=kbps, bitrate=kbps * 1000)


# Decoders hand out I420 almost always; pulling I420 and converting with OpenCV is about twice as fast as
# videoconvert to RGB (measured: 640x512 H.264, bench/gst_decode.py). videoconvert stays for other formats.
APPSINK = ("videoconvert ! video/x-raw,format={I420,RGB} ! appsink name=sink sync=false max-buffers=2 drop=false "
           "caps=video/x-raw,format={I420,RGB}")


@dataclass(frozen=True)
class FrameLayout:
    fmt: str
    width: int
    height: int
    strides: tuple[int, ...]
    offsets: tuple[int, ...]

    @property
    def packed_i420(self) -> bool:
        """I420 planes back to back with no row padding: the buffer is already what OpenCV wants."""
        w, h = self.width, self.height
        cw, ch = w // 2, h // 2
        return (self.fmt == "I420" and w % 2 == 0 and h % 2 == 0 and self.strides[:3] == (w, cw, cw)
                and self.offsets[:3] == (0, w * h, w * h + cw * ch))


@functools.lru_cache(maxsize=32)
def _layout(caps_string: str) -> FrameLayout:
    # Reading caps through introspection costs ~1 ms; caps change rarely, so their layout is cached.
    Gst, _, GstVideo, _ = load_gst()
    info = GstVideo.VideoInfo.new_from_caps(Gst.Caps.from_string(caps_string))
    fmt = info.finfo.name if info.finfo is not None else "?"
    return FrameLayout(fmt, info.width, info.height, tuple(info.stride), tuple(info.offset))


def sample_to_rgb(sample) -> np.ndarray:
    """A GStreamer sample of raw video -> a C-contiguous H×W×3 uint8 RGB array (our own copy).

    I420 is converted with OpenCV (BT.601, as OpenCV does); RGB/BGR/RGBx/BGRx/RGBA/BGRA/GRAY8 (an expert's
    gst:// pipeline) are converted too; anything else is refused with the format named."""
    import cv2

    lay = _layout(sample.get_caps().to_string())
    buf = sample.get_buffer()
    data = np.frombuffer(buf.extract_dup(0, buf.get_size()), np.uint8)
    width, height = lay.width, lay.height
    if lay.fmt == "I420":
        if lay.packed_i420:
            return cv2.cvtColor(data[: width * height * 3 // 2].reshape(height * 3 // 2, width), cv2.COLOR_YUV2RGB_I420)
        planes = []
        for i, (w, h) in enumerate(((width, height), ((width + 1) // 2, (height + 1) // 2),
                                    ((width + 1) // 2, (height + 1) // 2))):
            planes.append(data[lay.offsets[i] : lay.offsets[i] + lay.strides[i] * h].reshape(h, lay.strides[i])[:, :w])
        # Padded rows or odd sizes: upsample the chroma ourselves and convert the interleaved YUV.
        yuv = np.dstack([planes[0]] + [cv2.resize(np.ascontiguousarray(p), (width, height),
                                                  interpolation=cv2.INTER_NEAREST) for p in planes[1:]])
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB)
    channels = {"RGB": 3, "BGR": 3, "RGBx": 4, "BGRx": 4, "RGBA": 4, "BGRA": 4, "xRGB": 4, "GRAY8": 1}.get(lay.fmt)
    if channels is None:
        raise ValueError(f"appsink delivered {lay.fmt} frames; end the pipeline with video/x-raw,format=RGB")
    stride = lay.strides[0]
    rows = data[: stride * height].reshape(height, stride)[:, : width * channels].reshape(height, width, channels)
    if lay.fmt == "RGB":
        return np.ascontiguousarray(rows)
    if lay.fmt == "xRGB":
        return np.ascontiguousarray(rows[:, :, 1:])
    convert = {"BGR": cv2.COLOR_BGR2RGB, "RGBx": cv2.COLOR_RGBA2RGB, "RGBA": cv2.COLOR_RGBA2RGB,
               "BGRx": cv2.COLOR_BGRA2RGB, "BGRA": cv2.COLOR_BGRA2RGB, "GRAY8": cv2.COLOR_GRAY2RGB}[lay.fmt]
    return cv2.cvtColor(np.ascontiguousarray(rows), convert)
