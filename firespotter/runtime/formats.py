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


@dataclass(frozen=True)
class FireOnnxArtifact(OnnxArtifact):
    """An ONNX fire model with a frame-level head: its second output `fire_output` is one logit per frame.

    `encoder` (image -> fire_output, skip tensors) and `decoder` (skip tensors -> mask) are the same network
    split in two, so a backend can skip the decoder on frames the head calls fire-free (the `gate` option)."""

    fire_output: str | None = "fire_logit"
    encoder: Path | None = None
    decoder: Path | None = None
    arch: str | None = None


@dataclass(frozen=True)
class TorchArtifact:
    """A PyTorch network: architecture name (built by firespotter.models.arch) + a firespotter checkpoint.

    Input preprocessing as for OnnxArtifact: RGB scaled to [0, 1], then (x - mean) / std, resized to
    `input_size` (height, width). Outputs `(mask, fire_logit)`; `output` says whether the mask is logits."""

    arch: str
    checkpoint: Path
    input_size: tuple[int, int]
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    output: str = "logits"
