"""dir://PATH: every image in a folder, sorted by name. Unreadable files are reported and skipped."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from firespotter.runtime.errors import SourceError
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.source_base import FrameSource
from firespotter.runtime.sources import SourceURI, float_param
from firespotter.runtime.specs import SourceSpec

log = logging.getLogger("firespotter.sources.dir")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_rgb(path: Path):
    """RGB uint8 image, or None when the file cannot be decoded."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class FolderSource(FrameSource):
    def __init__(self, folder: Path, source_id: str, *, live: bool, fps: float | None):
        super().__init__(source_id, live=live)
        if not folder.exists():
            raise SourceError(f"image folder {folder} does not exist")
        if not folder.is_dir():
            raise SourceError(f"{folder} is not a folder", "use file://PATH for a single file")
        self.paths = list_images(folder)
        if not self.paths:
            raise SourceError(
                f"image folder {folder} has no images",
                f"looked for {', '.join('*' + s for s in IMAGE_SUFFIXES)}",
            )
        self.folder = folder
        self.fps = fps
        self.expected_frames = len(self.paths)

    def _images(self):
        delivered = 0
        for path in self.paths:
            image = read_rgb(path)
            if image is None:
                self.skipped.append(path.name)
                log.warning("skipping %s: not a readable image (%d skipped so far)", path, len(self.skipped))
                continue
            delivered += 1
            yield image, {"name": path.stem}
        if not delivered:  # a run with nothing in it is a failure, not an empty report with exit status 0
            names = ", ".join(self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else "")
            raise SourceError(f"image folder {self.folder}: none of its {len(self.paths)} image file(s) could be "
                              f"decoded ({names})", "check that the files are complete PNG/JPEG/... images")


def open_dir(uri: SourceURI, *, source_id: str, live: bool = False, options: dict | None = None):
    return FolderSource(Path(uri.location).expanduser(), source_id, live=live, fps=float_param(uri, "fps", None, gt=0))


@hookimpl
def register_sources():
    return [SourceSpec("dir", open_dir, "image folder, sorted by file name (?fps=N paces it in live mode)")]
