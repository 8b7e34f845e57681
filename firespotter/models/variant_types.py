"""What a precision variant is: the request a builder gets, what it returns, and the spec that names it.

Kept apart from the table of variants (`firespotter.models.variants`) so that the builders in
`firespotter.models.quant` can use these types without importing the table that lists them (no import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from firespotter.runtime.errors import PluginError
from firespotter.runtime.types import PrecisionLabel


@dataclass
class BuildRequest:
    source_onnx: Path  # the fp32 model (weights inside)
    source_torch: Path | None  # the checkpoint (.pt) when the model has one (QAT, SplitQuant need it)
    out_dir: Path  # write files here (a temp dir the cache moves into place)
    calibration: list[np.ndarray] | None  # real RGB uint8 HxWx3 frames (never random), or None
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    options: dict  # free-form (calibration method, profile "cpu"/"tensorrt", ...)
    progress: Callable[[str], None]  # one-line progress messages


@dataclass
class BuildOutput:
    files: dict[str, Path]  # role -> file in out_dir; "onnx" required (runnable or simulated graph)
    info: dict  # anything for the manifest (method, sizes, effective_bits, ...)


@dataclass(frozen=True)
class VariantSpec:
    precision: str  # "fp32", "fp16", "int8", "sq-w4", ...
    build: Callable[[BuildRequest], BuildOutput]
    labels: PrecisionLabel  # precision_exec / weight_bits / simulated
    needs_calibration: bool = False
    description: str = ""


class VariantError(PluginError):
    """An unknown precision, or a variant that cannot be built from what it was given."""
