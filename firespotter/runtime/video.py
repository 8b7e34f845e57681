"""Writing H.264 MP4 files from RGB frames: GStreamer (x264enc/openh264enc) when present, else OpenCV.

OpenCV's pip wheels carry no H.264 encoder, so the fallback writes MPEG-4 Part 2 ('mp4v') and says so.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("firespotter.video")


def _gst():
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstApp", "1.0")
        from gi.repository import Gst, GstApp  # noqa: F401

        Gst.init(None)
        return Gst
    except Exception:
        return None


class VideoWriter:
    """write(rgb) frame by frame, then close(). `codec` tells what was actually used."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float = 10.0, *, prefer_gst: bool = True):
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, fps
        self.frames = 0
        self._pipeline = self._appsrc = self._cv = None
        Gst = _gst() if prefer_gst else None
        encoder = None
        if Gst is not None:
            for name, props in (("x264enc", "speed-preset=veryfast tune=zerolatency key-int-max=30"),
                                ("openh264enc", "")):
                if Gst.ElementFactory.find(name) is not None:
                    encoder = f"{name} {props}".strip()
                    break
        if encoder is not None:
            self.codec = "h264"
            self._Gst = Gst
            fps_frac = f"{int(round(fps * 1000))}/1000"
            desc = (
                f"appsrc name=src is-live=false format=time block=true "
                f"caps=video/x-raw,format=RGB,width={width},height={height},framerate={fps_frac} "
                f"! videoconvert ! video/x-raw,format=I420 ! {encoder} ! h264parse ! mp4mux "
                f"! filesink location=\"{self.path}\""
            )
            self._pipeline = Gst.parse_launch(desc)
            self._appsrc = self._pipeline.get_by_name("src")
            self._pipeline.set_state(Gst.State.PLAYING)
        else:
            import cv2

            self.codec = "mp4v"
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
                raise OSError(f"GStreamer refused a frame for {self.path}")
        self.frames += 1

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
                raise OSError(f"timed out finishing {self.path}")
            if msg.type == Gst.MessageType.ERROR:
                err, _ = msg.parse_error()
                raise OSError(f"GStreamer failed writing {self.path}: {err.message}")

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
