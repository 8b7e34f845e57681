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


APPSINK = "videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false max-buffers=2 drop=false"


def sample_to_rgb(sample) -> np.ndarray:
    """A GStreamer sample of raw RGB video -> a C-contiguous H×W×3 uint8 copy (rows may be padded)."""
    Gst, _, GstVideo, _ = load_gst()
    caps = sample.get_caps()
    info = GstVideo.VideoInfo.new_from_caps(caps)
    width, height, stride = info.width, info.height, info.stride[0]
    fmt = info.finfo.name if info.finfo is not None else "?"
    if fmt != "RGB":
        raise ValueError(f"appsink delivered {fmt} frames; end the pipeline with video/x-raw,format=RGB")
    buf = sample.get_buffer()
    ok, mapinfo = buf.map(Gst.MapFlags.READ)
    if not ok:
        raise ValueError("could not map a GStreamer buffer")
    try:
        rows = np.frombuffer(mapinfo.data, np.uint8, count=stride * height).reshape(height, stride)
        return np.ascontiguousarray(rows[:, : width * 3]).reshape(height, width, 3)
    finally:
        buf.unmap(mapinfo)
