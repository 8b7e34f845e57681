"""`firespotter doctor`: what this machine can run. Each check is independent and never raises."""

from __future__ import annotations

import importlib
import platform
import shutil
import socket
import subprocess
from typing import Any, Callable

GST_ELEMENTS = (
    "appsink", "appsrc", "decodebin", "videoconvert", "x264enc", "openh264enc", "avdec_h264", "h264parse",
    "rtspsrc", "rtph264pay", "rtph264depay", "udpsrc", "udpsink", "mp4mux", "qtdemux", "v4l2src",
    "nvarguscamerasrc", "nvv4l2decoder", "nvv4l2h264enc",
)
BROKERS = {"mqtt": ("127.0.0.1", 1883), "zenoh": ("127.0.0.1", 7447)}


def _check(name: str, fn: Callable[[], tuple[str, str]]) -> dict[str, Any]:
    try:
        status, detail = fn()
    except Exception as exc:
        status, detail = "error", f"{exc.__class__.__name__}: {exc}"
    return {"name": name, "status": status, "detail": detail}


def _python() -> tuple[str, str]:
    from firespotter import __version__

    return "ok", f"firespotter {__version__}, Python {platform.python_version()} on {platform.platform()}"


def _onnxruntime() -> tuple[str, str]:
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError as exc:
        return "missing", f"{exc}; pip install onnxruntime"
    return "ok", f"onnxruntime {ort.__version__}; providers: {', '.join(ort.get_available_providers())}"


def _torch() -> tuple[str, str]:
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return "missing", "not installed; pip install 'firespotter[torch]'"
    cuda = torch.cuda.is_available()
    dev = f", CUDA {torch.version.cuda}: {torch.cuda.get_device_name(0)}" if cuda else ", no CUDA device"
    return "ok", f"torch {torch.__version__}{dev}"


def _tensorrt() -> tuple[str, str]:
    for mod in ("tensorrt", "torch_tensorrt"):
        try:
            m = importlib.import_module(mod)
            return "ok", f"{mod} {getattr(m, '__version__', '?')}"
        except Exception:
            continue
    return "missing", "TensorRT not installed (Jetson/GPU machines only; pip install 'firespotter[tensorrt]')"


def _gstreamer() -> tuple[str, str]:
    from .gst import GstRegistry, load_gst

    try:
        Gst = load_gst()[0]
    except ImportError as exc:
        return "missing", f"{exc}; video sources fall back to OpenCV (files only)"
    registry = GstRegistry()
    have = [e for e in GST_ELEMENTS if registry.has(e)]
    lacking = [e for e in GST_ELEMENTS if e not in have]
    detail = f"GStreamer {Gst.version_string().split()[-1]}; elements: {', '.join(have)}"
    if lacking:
        detail += f"; absent: {', '.join(lacking)}"
    return "ok", detail


def _codecs() -> tuple[str, str]:
    from .gst import GstRegistry, choose_decoder, choose_encoder, gst_available

    if not gst_available():
        return "missing", "no GStreamer: no decoder/encoder choice"
    registry = GstRegistry()
    parts = []
    for codec in ("h264", "h265"):
        choice = choose_decoder(codec, registry)
        parts.append(f"{codec} decoder: {choice[0] if choice else 'none (decodebin decides)'}")
    enc = choose_encoder(registry)
    parts.append(f"h264 encoder: {enc[0] if enc else 'none'}")
    return ("ok" if enc else "missing"), "; ".join(parts)


def _video_sources(registry) -> Callable[[], tuple[str, str]]:
    def check() -> tuple[str, str]:
        offers = registry.alternatives("sources", "file")
        if not offers:
            return "missing", "no plugin reads file:// sources"
        chosen = registry.provider("sources", "file")
        others = [f"{plugin} ({'available' if spec.available() else spec.available().reason})"
                  for spec, plugin in offers if plugin != chosen]
        return "ok", f"file:// is read by {chosen}" + (f"; fallback: {', '.join(others)}" if others else "")

    return check


def _gpu() -> tuple[str, str]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "missing", "no NVIDIA GPU driver (nvidia-smi not found); CPU backends only"
    out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True,
                         text=True, timeout=10)
    if out.returncode != 0:
        return "error", out.stderr.strip() or "nvidia-smi failed"
    return "ok", out.stdout.strip().replace("\n", "; ")


def _broker(kind: str) -> Callable[[], tuple[str, str]]:
    host, port = BROKERS[kind]

    def check() -> tuple[str, str]:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return "ok", f"{kind} broker/router reachable at {host}:{port}"
        except OSError as exc:
            return "missing", f"nothing listening at {host}:{port} ({exc.strerror or exc})"

    return check


def _plugins(registry) -> Callable[[], tuple[str, str]]:
    def check() -> tuple[str, str]:
        failed = [f"{p.name}: {p.error}" for p in registry.plugins.values() if p.error]
        registry.specs("sources")
        n = len(registry.plugins)
        if failed:
            return "error", f"{len(failed)} of {n} plugins failed to load: {'; '.join(failed)}"
        return "ok", f"{n} plugins loaded"

    return check


def run_checks(registry) -> list[dict[str, Any]]:
    checks = [
        ("firespotter", _python),
        ("plugins", _plugins(registry)),
        ("onnxruntime", _onnxruntime),
        ("torch", _torch),
        ("tensorrt", _tensorrt),
        ("gstreamer", _gstreamer),
        ("codecs", _codecs),
        ("video files", _video_sources(registry)),
        ("gpu", _gpu),
        ("mqtt broker", _broker("mqtt")),
        ("zenoh router", _broker("zenoh")),
    ]
    return [_check(name, fn) for name, fn in checks]
