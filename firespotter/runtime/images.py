"""Reading images: one bounded reader for every place that does (the `dir://` and single-image sources, training
and evaluation data, evaluation suites, calibration frames).

Bounded: a file larger than `MAX_IMAGE_BYTES` is refused before it is read, and a decoded image larger than
`MAX_IMAGE_PIXELS` is refused too (OpenCV's decoder has its own, larger limit). Files are read by Python and
decoded from memory, so any path works (OpenCV's imread mangles some non-ASCII paths). Images come back in the
project's conventions: H×W×3 uint8 RGB, or H×W uint8 for masks.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import FirespotterError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_IMAGE_BYTES = 256 << 20  # far above any camera frame or mask, far below what would hurt a drone's computer
MAX_IMAGE_PIXELS = 1 << 27  # 134 M pixels (e.g. 16384 × 8192)

# "rgb": H×W×3 RGB; "gray": H×W luminance; "mask": H×W, the largest channel of whatever is stored (a mask saved
# as colour or with alpha counts where any channel is set); "any": as stored (its shape is what the file holds).
_FLAGS = {"rgb": cv2.IMREAD_COLOR, "gray": cv2.IMREAD_GRAYSCALE, "mask": cv2.IMREAD_UNCHANGED,
          "any": cv2.IMREAD_UNCHANGED}


class ImageError(FirespotterError):
    """A file that is not an image this project reads: missing, too large, or not decodable."""


def list_images(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def decode_image(data: bytes | np.ndarray, mode: str = "rgb") -> np.ndarray | None:
    """An encoded image (PNG, JPEG, ... bytes) -> the image in `mode`, or None when it does not decode."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    image = cv2.imdecode(buf, _FLAGS[mode])
    if image is None:
        return None
    if mode == "rgb":
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if mode == "mask" and image.ndim == 3:
        return image.max(axis=2)
    return image


def read_image(path: Path, mode: str = "rgb", *, error: type[FirespotterError] = ImageError,
               what: str = "") -> np.ndarray:
    """The image at `path` in `mode` ("rgb", "gray", "mask", "any"), or `error` saying why not:
    "{what}{path} is not a readable image" (missing or not decodable) or that it is too large."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise error(f"{what}{path} is not a readable image (no such file)") from None
    if size > MAX_IMAGE_BYTES:
        raise error(f"{what}{path} is not a readable image: {size >> 20} MiB, over the {MAX_IMAGE_BYTES >> 20} MiB "
                    "an image may have")
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise error(f"{what}{path} is not a readable image ({exc.strerror})") from None
    image = decode_image(data, mode) if data.size else None
    if image is None:
        raise error(f"{what}{path} is not a readable image")
    if image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise error(f"{what}{path} is not a readable image: {image.shape[1]}x{image.shape[0]} pixels, over the "
                    f"{MAX_IMAGE_PIXELS >> 20} M an image may have")
    return image


def read_image_or_none(path: Path, mode: str = "rgb") -> np.ndarray | None:
    """As read_image, None instead of an error (for readers that skip unreadable files and count them)."""
    try:
        return read_image(path, mode)
    except ImageError:
        return None
