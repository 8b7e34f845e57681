"""Calibration frames for quantized builds: real frames from an image folder or a video, never random tensors.

N frames are taken evenly spaced over the source (so a flight's start, middle and end are all seen), resized to
the model's input size, and hashed: the hash is part of the artifact's cache key, so a different calibration
set is a different artifact.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from firespotter.runtime.errors import ConfigError
from firespotter.runtime.images import list_images, read_image_or_none

VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".ts", ".h264", ".webm"}
DEFAULT_FRAMES = 32


@dataclass
class CalibrationSet:
    frames: list[np.ndarray]  # RGB uint8 H×W×3 at the model's input size
    sha256: str
    description: str  # one line: what was read and how it was resized


def _spaced(n_total: int, n: int) -> list[int]:
    if n >= n_total:
        return list(range(n_total))
    return sorted({int(round(i * (n_total - 1) / max(n - 1, 1))) for i in range(n)})


def _from_folder(folder: Path, n: int) -> tuple[list[np.ndarray], int]:
    if (folder / "images").is_dir():  # the images/ + masks/ layout of labelled sets
        folder = folder / "images"
    paths = list_images(folder)
    if not paths:
        raise ConfigError(f"--calib {folder}: no images in this folder (.jpg, .png, ...)",
                          "point --calib at a folder of real frames or a video file")
    frames = []
    for i in _spaced(len(paths), n):
        rgb = read_image_or_none(paths[i])
        if rgb is None:
            raise ConfigError(f"--calib: {paths[i]} is not a readable image", "remove it or fix the file")
        frames.append(rgb)
    return frames, len(paths)


def _from_video(path: Path, n: int) -> tuple[list[np.ndarray], int]:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ConfigError(f"--calib {path}: OpenCV cannot open this video", "convert it to MP4/H.264")
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        wanted = set(_spaced(total, n)) if total > 0 else None
        frames, i = [], 0
        while wanted is None or i <= max(wanted):
            ok, bgr = cap.read()
            if not ok:
                break
            if wanted is None or i in wanted:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                if wanted is None and len(frames) >= n:
                    break
            i += 1
    finally:
        cap.release()
    if not frames:
        raise ConfigError(f"--calib {path}: no frame could be decoded", "check the file plays")
    return frames, max(total, len(frames))


def load_calibration(source: Path, n: int, size: tuple[int, int]) -> CalibrationSet:
    """`n` real frames from `source` (folder or video), resized to `size` (height, width)."""
    source = Path(source).expanduser()
    if n < 1:
        raise ConfigError(f"--calib-frames must be at least 1, got {n}")
    if source.is_dir():
        frames, total = _from_folder(source, n)
    elif source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        frames, total = _from_video(source, n)
    elif source.is_file():
        raise ConfigError(f"--calib {source}: not a folder of images or a video ({', '.join(sorted(VIDEO_SUFFIXES))})")
    else:
        raise ConfigError(f"--calib {source} does not exist", "give a folder of real frames or a video file")
    h, w = size
    shapes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames})
    resized = [f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]
    digest = hashlib.sha256()
    for f in resized:
        digest.update(np.ascontiguousarray(f).tobytes())
    desc = (f"calibration: {len(resized)} of {total} frames from {source}, "
            f"{'/'.join(shapes)} resized to the model input {w}x{h}")
    return CalibrationSet(resized, digest.hexdigest(), desc)
