"""video: the frames with fire tinted and outlined, into an H.264 MP4 (RTP/UDP output comes with the
GStreamer issue). One output frame per result, so a replay's overlay has as many frames as its input."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from firespotter.runtime.overlay import draw_overlay
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import SinkSpec
from firespotter.runtime.video import VideoWriter


class VideoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path = Field(description="output .mp4")
    fps: float | None = Field(None, gt=0, description="frame rate written into the file; default: the source's, else 10")
    label: bool = Field(True, description="caption each frame with its sequence number and alert")


class VideoSink:
    needs_image = True

    def __init__(self, options: VideoOptions, name: str = "video"):
        self.name = name
        self.options = options
        self.writer: VideoWriter | None = None
        self.fps = options.fps or 10.0
        options.path.parent.mkdir(parents=True, exist_ok=True)

    def start(self, info: dict) -> None:
        if self.options.fps is None and info.get("source_fps"):
            self.fps = float(info["source_fps"])

    def send(self, result) -> None:
        image = result.image
        if self.writer is None:  # the size is known only with the first frame
            self.writer = VideoWriter(self.options.path, image.shape[1], image.shape[0], self.fps)
        label = f"#{result.seq} {result.alert.value}" if self.options.label else None
        self.writer.write(draw_overlay(image, result.mask, result.regions, label=label))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@hookimpl
def register_sinks():
    return [SinkSpec("video", lambda options, name="video": VideoSink(options, name),
                     "overlay video (fire tinted and outlined) into an H.264 MP4", options_model=VideoOptions)]
