"""Precision variants: how to build a model's graph at one precision (fp32, fp16, int8, sq-w4, ...).

A variant turns the fp32 source model into files (an ONNX graph, runnable or simulating low-bit weights) with
three labels: precision_exec, weight_bits, simulated (docs/quantization.md). The artifact cache
(`firespotter.models.build`) decides when to call a builder; builders only write into `BuildRequest.out_dir`.

Built here: `fp32` (the source graph itself) and `fp16` (weights and activations float16, inputs/outputs kept
float32 so every backend feeds it the same way). The quantized variants (int8, int8-qat, sq-w8, w8, w4, ...)
come from `firespotter.models.quant.quant_variants()`: one static table, no registration by import side effect.
"""

from __future__ import annotations

import shutil

from firespotter.runtime.types import PrecisionLabel

from .variant_types import BuildOutput, BuildRequest, VariantError, VariantSpec

__all__ = ["BuildOutput", "BuildRequest", "VariantError", "VariantSpec", "get_variant", "register_variant", "variants"]

# Variants added at run time (a test's, an experiment's); they override the static table by precision name.
_EXTRA: dict[str, VariantSpec] = {}


def register_variant(spec: VariantSpec) -> None:
    """Add (or replace: the last registration of a precision wins) a precision variant."""
    if not spec.precision or spec.precision != spec.precision.strip().lower():
        raise VariantError(f"precision names are lower-case and non-empty, not {spec.precision!r}")
    _EXTRA[spec.precision] = spec


def _table() -> dict[str, VariantSpec]:
    """The static table: the two variants built here, then the quantized ones (imported here, on first use,
    so that importing this module stays cheap; `quant` never imports this module back)."""
    from firespotter.models.quant import quant_variants

    return {v.precision: v for v in (*_BUILT_HERE, *quant_variants())}


def variants() -> dict[str, VariantSpec]:
    known = _table()
    known.update(_EXTRA)
    return known


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


_BUILT_HERE = (
    VariantSpec("fp32", _copy_source, PrecisionLabel("fp32", 32, False),
                description="the source graph as exported (float32)"),
    VariantSpec("fp16", _to_fp16, PrecisionLabel("fp16", 16, False),
                description="float16 weights and compute, float32 inputs/outputs; fast on GPUs "
                            "(TensorRT/CUDA), usually slower than fp32 on CPUs"),
)
