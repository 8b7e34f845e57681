"""INT8 post-training quantization through ONNX Runtime static quantization (Q/DQ, per-channel weights).

Two profiles:
- `cpu`: uint8 activations (asymmetric), int8 per-channel weights, `reduce_range` (7-bit weights) because
  this project's CPUs are AVX2 without VNNI, where u8×s8 products saturate in vpmaddubsw;
- `tensorrt`: symmetric int8 activations and weights (zero point 0), as TensorRT's explicit quantization
  expects.

Before quantizing, the graph is made static (batch 1, the model's input size), optimised offline so that the
shape arithmetic in front of every Resize folds into constants, and pre-processed (`quant_pre_process`). What
stays float is a measured choice, not a guess: see docs/quantization.md (`KEEP_FLOAT`).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .calibration import METHODS, FrameReader, QuantError, to_inputs

PROFILES = ("cpu", "tensorrt")
# Node-name patterns kept in float by default. Measured on fireseg-lite at 512x512 (docs/quantization.md):
# every float island (stem, depthwise convs, Resize, the stride-2 decoder) costs more in Q/DQ and layout
# changes than its INT8 kernel loses, so the fastest graph on the CPU EP is the fully quantized one.
KEEP_FLOAT: tuple[str, ...] = ()


def make_static(src: Path, dst: Path, batch: int = 1) -> Path:
    """Fix the batch axis, then let ORT fold constants (Shape→Gather→Resize sizes) into a clean graph."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(src))
    for io in list(model.graph.input) + list(model.graph.output):
        dims = io.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = batch
    fixed = dst.with_suffix(".fixed.onnx")
    onnx.save(model, str(fixed))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # portable ops only, no layouts
    so.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(fixed), so, providers=["CPUExecutionProvider"])
    fixed.unlink()
    return dst


def _calibration_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    if method not in table:
        raise QuantError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}")
    return table[method]


def excluded_nodes(model_path: Path, keep_float) -> list[str]:
    import onnx

    pats = [re.compile(p) for p in keep_float]
    return [n.name for n in onnx.load(str(model_path)).graph.node if any(p.search(n.name) for p in pats)]


def quantize_int8(src_onnx: Path, out_onnx: Path, frames, *, input_size: tuple[int, int], mean, std,
                  profile: str = "cpu", method: str = "minmax", keep_float=KEEP_FLOAT,
                  progress: Callable[[str], None] | None = None) -> dict:
    """Write an INT8 Q/DQ ONNX model calibrated on `frames` (real RGB uint8 frames). -> info for the manifest."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if profile not in PROFILES:
        raise QuantError(f"unknown quantization profile {profile!r}; known: {', '.join(PROFILES)}")
    calib = _calibration_method(method)
    say = progress or (lambda line: None)
    inputs = to_inputs(frames, input_size, mean, std, progress)
    out_onnx = Path(out_onnx)
    with tempfile.TemporaryDirectory(prefix="fs-ptq-") as tmp:
        static = make_static(Path(src_onnx), Path(tmp) / "static.onnx")
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(static), str(pre), skip_optimization=True)
        exclude = excluded_nodes(pre, keep_float)
        symmetric = profile == "tensorrt"
        # TensorRT's explicit quantization takes int8 Q/DQ only: biases stay float there (no int32 DQ).
        extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": not symmetric}
        if method == "percentile":
            extra["CalibPercentile"] = 99.999
        say(f"calibrating INT8 ({profile} profile, {method}) on {len(inputs)} real frames"
            + (f", {len(exclude)} nodes kept float" if exclude else ""))
        input_name = _input_name(pre)
        try:
            quantize_static(str(pre), str(out_onnx), FrameReader(inputs, input_name), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=not symmetric,
                            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=exclude, calibrate_method=calib,
                            extra_options=extra)
        except QuantError:
            raise
        except Exception as exc:  # ORT raises plain exceptions; give the user the model and the reason
            raise QuantError(f"ONNX Runtime could not quantize {src_onnx}: {exc.__class__.__name__}: {exc}") from None
    n_q = count_qdq(out_onnx)
    if n_q["weights_int8"] == 0:
        raise QuantError(f"{src_onnx} has no quantizable layer (no Conv, ConvTranspose, MatMul or Gemm weight "
                         "was quantized)", "INT8 needs a network with convolution or linear layers")
    copy_metadata(Path(src_onnx), out_onnx)
    return {"method": method, "profile": profile, "frames": int(len(inputs)), "kept_float": exclude,
            "activation_type": "int8" if symmetric else "uint8", "weights": "int8 per-channel",
            "reduce_range": not symmetric, **n_q}


def _input_name(path: Path) -> str:
    import onnx

    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in inits)


def count_qdq(path: Path) -> dict:
    """How many Q/DQ nodes the graph has and how many weight initialisers are int8."""
    import onnx

    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    w8 = sum(1 for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2)
    return {"quantize_nodes": ops.count("QuantizeLinear"), "dequantize_nodes": ops.count("DequantizeLinear"),
            "weights_int8": w8}


def copy_metadata(src: Path, dst: Path, extra: dict | None = None) -> None:
    """Carry the firespotter.* metadata (arch, input size, normalisation) over to a derived graph."""
    import json

    import onnx

    s, d = onnx.load(str(src)), onnx.load(str(dst))
    keep = {p.key: p.value for p in s.metadata_props}
    for k, v in (extra or {}).items():
        keep[f"firespotter.{k}"] = v if isinstance(v, str) else json.dumps(v)
    del d.metadata_props[:]
    for k, v in keep.items():
        e = d.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(d, str(dst))


def qdq_zero_points(path: Path) -> list[tuple[str, str, list[int]]]:
    """(node, zero-point dtype, zero-point values) of every Q/DQ node: the `tensorrt` profile check."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant" and n.attribute}
    out = []
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) >= 3:
            t = inits.get(n.input[2]) or consts.get(n.input[2])
            if t is None:
                continue
            arr = numpy_helper.to_array(t)
            out.append((n.name, str(arr.dtype), np.atleast_1d(arr).astype(int).tolist()))
    return out
