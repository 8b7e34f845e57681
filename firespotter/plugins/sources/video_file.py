"""file://PATH (or a bare path): a video file through OpenCV, or a single image.

The GStreamer issue makes GStreamer the default for video; this reader stays as the dependency-free one.
"""

from __future__ import annotations

import os
from pathlib import Path

# FFmpeg's own log lines ("moov atom not found") would precede our one-line error; we report failures ourselves.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2

from firespotter.runtime.errors import SourceError
from firespotter.runtime.images import IMAGE_SUFFIXES, read_image_or_none
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.source_base import FrameSource
from firespotter.runtime.sources import SourceURI
from firespotter.runtime.specs import SourceSpec


class VideoFileSource(FrameSource):
    def __init__(self, path: Path, source_id: str, *, live: bool):
        super().__init__(source_id, live=live)
        if not path.exists():
            raise SourceError(f"video file {path} does not exist")
        if path.is_dir():
            raise SourceError(f"{path} is a folder, not a file", f"use dir://{path}")
        self.path = path
        self.capture = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise SourceError(f"cannot open {path} as a video", "is it a video file OpenCV can decode?")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 else None
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.expected_frames = count if count > 0 else None

    def _images(self):
        index = 0
        while True:
            ok, bgr = self.capture.read()
            if not ok:
                break
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), {"name": f"{self.path.stem}_{index:06d}"}
            index += 1

    def _release(self) -> None:
        self.capture.release()


class ImageFileSource(FrameSource):
    expected_frames = 1

    def __init__(self, path: Path, source_id: str, *, live: bool):
        super().__init__(source_id, live=live)
        self.path = path
        self.image = read_image_or_none(path)
        if self.image is None:
            raise SourceError(f"cannot read image {path}", "is the file complete and in a format OpenCV reads?")

    def _images(self):
        yield self.image, {"name": self.path.stem}


def open_file(uri: SourceURI, *, source_id: str, live: bool = False, options: dict | None = None):
    path = Path(uri.location).expanduser()
    if not path.exists():
        raise SourceError(f"file {path} does not exist")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFileSource(path, source_id, live=live)
    return VideoFileSource(path, source_id, live=live)


@hookimpl
def register_sources():
    return [SourceSpec("file", open_file, "video file (OpenCV decode) or a single image")]
