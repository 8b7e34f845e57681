"""Precision variants: how to build a model's graph at one precision (fp32, fp16, int8, sq-w4, ...).

A variant turns the fp32 source model into files (an ONNX graph, runnable or simulating low-bit weights) with
the three labels of DESIGN §7. The artifact cache (`firespotter.models.build`) decides when to call a builder;
builders only write into `BuildRequest.out_dir`.

Built here: `fp32` (the source graph itself) and `fp16` (weights and activations float16, inputs/outputs kept
float32 so every backend feeds it the same way). `firespotter.models.quant` registers the quantized variants
(int8, int8-qat, sq-w8, w8, w4, ...) when it is installed; `variants()` and `get_variant()` import it lazily.
"""

from __future__ import annotations

import shutil
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


_REGISTRY: dict[str, VariantSpec] = {}


def register_variant(spec: VariantSpec) -> None:
    """Add (or replace: the last registration of a precision wins) a precision variant."""
    if not spec.precision or spec.precision != spec.precision.strip().lower():
        raise VariantError(f"precision names are lower-case and non-empty, not {spec.precision!r}")
    _REGISTRY[spec.precision] = spec


def _load_plugins() -> None:
    try:
        import firespotter.models.quant  # noqa: F401  (registers its variants on import)
    except ModuleNotFoundError as exc:
        if exc.name != "firespotter.models.quant":  # a missing dependency inside it is a real error
            raise


def variants() -> dict[str, VariantSpec]:
    _load_plugins()
    return dict(_REGISTRY)


def get_variant(precision: str) -> VariantSpec:
    known = variants()
    if precision not in known:
        raise VariantError(f"unknown precision {precision!r}; known: {', '.join(known)}",
                           "pick one of those with --precision (or [model] precision)")
    return known[precision]


# --- the two variants built here -----------------------------------------------------------------------


def _copy_source(req: BuildRequest) -> BuildOutput:
    out = req.out_dir / "model.onnx"
    shutil.copyfile(req.source_onnx, out)
    return BuildOutput({"onnx": out}, {"method": "source graph, unchanged", "bytes": out.stat().st_size})


def _to_fp16(req: BuildRequest) -> BuildOutput:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    req.progress(f"fp16: converting {req.source_onnx.name} to float16 (inputs and outputs stay float32)")
    model = onnx.load(str(req.source_onnx))
    # keep_io_types: callers keep feeding float32 and reading float32 logits; Cast nodes sit at the edges.
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    out = req.out_dir / "model.onnx"
    onnx.save(half, str(out))
    return BuildOutput({"onnx": out}, {
        "method": "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)",
        "bytes": out.stat().st_size, "source_bytes": req.source_onnx.stat().st_size,
    })


register_variant(VariantSpec("fp32", _copy_source, PrecisionLabel("fp32", 32, False),
                             description="the source graph as exported (float32)"))
register_variant(VariantSpec("fp16", _to_fp16, PrecisionLabel("fp16", 16, False),
                             description="float16 weights and compute, float32 inputs/outputs; fast on GPUs "
                                         "(TensorRT/CUDA), usually slower than fp32 on CPUs"))
