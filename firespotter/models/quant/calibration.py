"""Calibration inputs: real RGB frames (never random tensors: they calibrate ranges no real frame has) -> the model's normalised input.

Frames are read from a folder or a video by `firespotter.models.calibration.load_calibration` (the build
command's loader); here they are checked, resized to the model's input size when they differ (INTER_AREA, as
the backends do, and said through `progress`), normalised, and fed to ONNX Runtime's calibrator one by one.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from firespotter.runtime.errors import FirespotterError

METHODS = ("minmax", "entropy", "percentile")


class QuantError(FirespotterError):
    """A quantization request that cannot be carried out: bad calibration data, bit width, model or option."""


def check_frames(frames) -> list[np.ndarray]:
    if frames is None or len(frames) == 0:
        raise QuantError("this precision needs calibration frames and none were given",
                         "pass --calib DIR (an image folder or a video of real frames)")
    out = []
    for i, f in enumerate(frames):
        f = np.asarray(f)
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise QuantError(f"calibration frame {i} is {f.dtype} {tuple(f.shape)}; expected H×W×3 uint8 RGB")
        out.append(f)
    return out


def to_inputs(frames, size: tuple[int, int], mean, std,
              progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Normalised float32 N×3×H×W at the model's (height, width); frames of another size are resized (and said)."""
    frames = check_frames(frames)
    h, w = size
    other = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames if f.shape[:2] != (h, w)})
    if other and progress is not None:
        progress(f"calibration: {sum(f.shape[:2] != (h, w) for f in frames)} of {len(frames)} frames are "
                 f"{', '.join(other)}, resized to the model's {w}x{h}")
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1) * 255.0
    s = 1.0 / (np.asarray(std, np.float32).reshape(1, 3, 1, 1) * 255.0)
    x = np.stack([f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
                  for f in frames]).transpose(0, 3, 1, 2).astype(np.float32)
    return np.ascontiguousarray((x - m) * s)


class FrameReader:
    """onnxruntime.quantization.CalibrationDataReader over prepared inputs, one frame per batch."""

    def __init__(self, inputs: np.ndarray, input_name: str = "image"):
        self.inputs = inputs
        self.name = input_name
        self.i = 0

    def get_next(self):
        if self.i >= len(self.inputs):
            return None
        x = self.inputs[self.i : self.i + 1]
        self.i += 1
        return {self.name: x}

    def rewind(self) -> None:
        self.i = 0
