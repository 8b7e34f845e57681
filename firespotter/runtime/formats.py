"""Model artifact formats that backends accept. A model hands one of these to a backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OnnxArtifact:
    """An ONNX file and how to feed it: NCHW float32 input, RGB scaled to [0, 1] then (x - mean) / std."""

    path: Path
    input_size: tuple[int, int] | None  # (height, width) the graph expects; None = dynamic, any size
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    output: str = "logits"  # "logits" (sigmoid applied by the backend) or "prob"
