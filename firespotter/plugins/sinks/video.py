"""video: frames with fire tinted and outlined plus a small HUD (frame, alert, fps, source state), encoded to
H.264 with the best encoder present, into an MP4/MKV file or over RTP/UDP to a ground station.

Files get every frame (a replay's overlay has as many frames as its input). A stream never blocks: the
encoder's input queue is leaky, and what it drops is counted.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from firespotter.runtime.overlay import draw_overlay
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import SinkSpec
from firespotter.runtime.video import VideoWriter


class VideoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path | None = Field(None, description="output .mp4, .mov or .mkv")
    url: str | None = Field(None, pattern=r"^rtp://[^:/]+:\d+$", description="stream to rtp://HOST:PORT")
    fps: float | None = Field(None, gt=0, description="frame rate written into the file; default: the source's, else 10")
    hud: bool = Field(True, description="caption each frame with sequence number, alert, fps and source state")
    kbps: int = Field(2000, ge=100, le=100_000)

    @model_validator(mode="after")
    def _one_target(self):
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of `path` (a file) or `url` (rtp://HOST:PORT)")
        return self


class VideoSink:
    needs_image = True

    def __init__(self, options: VideoOptions, name: str = "video"):
        self.name = name
        self.options = options
        self.writer: VideoWriter | None = None
        self.fps = options.fps or 10.0
        self._t_prev_ns = 0
        self._rate = 0.0  # smoothed results per second, for the HUD
        if options.path is not None:
            options.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def dropped(self) -> int:
        return self.writer.dropped if self.writer is not None else 0

    def start(self, info: dict) -> None:
        if self.options.fps is None and info.get("source_fps"):
            self.fps = float(info["source_fps"])

    def _hud(self, result) -> str | None:
        if not self.options.hud:
            return None
        if self._t_prev_ns:
            dt = (result.t_capture_ns - self._t_prev_ns) / 1e9
            if dt > 0:
                self._rate = 1 / dt if not self._rate else 0.9 * self._rate + 0.1 / dt
        self._t_prev_ns = result.t_capture_ns
        return f"#{result.seq} {result.alert.value} | {self._rate:.1f} fps | {result.source_state.value}"

    def send(self, result) -> None:
        image = result.image
        if self.writer is None:  # the size is known only with the first frame
            target = self.options.url or self.options.path
            self.writer = VideoWriter(target, image.shape[1], image.shape[0], self.fps,
                                      leaky=self.options.url is not None, kbps=self.options.kbps)
        self.writer.write(draw_overlay(image, result.mask, result.regions, label=self._hud(result)))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@hookimpl
def register_sinks():
    return [SinkSpec("video", lambda options, name="video": VideoSink(options, name),
                     "overlay video (fire tinted and outlined, HUD) to MP4/MKV or RTP/UDP", options_model=VideoOptions)]
