"""Weight-only low-bit quantization (8/4/2 bits), plain or SplitQuant, and its ONNX exports.

One quantizer for both arms (the scheme the SplitQuant paper used through quanto): per output channel,
asymmetric min/max with the range widened to contain 0, so the zeros of a split copy stay exactly 0:
scale = (max - min) / (2^b - 1), zero_point = round(-min / scale), q = clip(round(w / scale) + zp, 0, 2^b - 1).

Exports from an FP32 graph (plain, or the split graph from `splitquant.split_model`):
- `simulate_onnx`: every Conv/ConvTranspose/Gemm weight replaced by its dequantized values (runs at FP32 in any
  runtime: accuracy, never speed, `simulated=True`);
- `pack_int4_onnx`: the same weights stored as packed UINT4 initialisers (two per byte) feeding a per-channel
  DequantizeLinear (opset 21), for storage. 2-bit codes are stored in 4-bit containers (ONNX has no 2-bit type
  in opset 21), so the file holds 4 bits per stored weight; `effective_bits` reports the scheme's own count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .calibration import QuantError

BITS = (8, 4, 2)
WEIGHT_OPS = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0}  # op -> output-channel axis of its weight (Gemm transB=1)
CLUSTER_ID_BITS = 2  # a split weight lives in exactly one of three copies: a 2-bit id names which


def check_bits(bits) -> int:
    if bits not in BITS:
        raise QuantError(f"unsupported weight bit width {bits!r}; supported: {', '.join(map(str, BITS))}",
                         "use --precision w8, w4 or w2 (sq-w8, sq-w4, sq-w2 for SplitQuant)")
    return int(bits)


def quant_params(w: np.ndarray, bits: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice (scale, zero_point) along `axis` for asymmetric min/max with 0 inside the range."""
    bits = check_bits(bits)
    rows = np.moveaxis(np.asarray(w, np.float64), axis, 0).reshape(w.shape[axis], -1)
    lo = np.minimum(rows.min(axis=1), 0.0)
    hi = np.maximum(rows.max(axis=1), 0.0)
    qmax = (1 << bits) - 1
    scale = (hi - lo) / qmax
    scale = np.where(scale > 0, scale, 1.0)  # an all-zero channel: any scale reproduces it
    zp = np.clip(np.round(-lo / scale), 0, qmax)
    return scale, zp


def _bshape(w: np.ndarray, axis: int) -> list[int]:
    shape = [1] * w.ndim
    shape[axis] = -1
    return shape


def quantize(w: np.ndarray, bits: int, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes uint8, scale, zero_point) of `w` per output channel."""
    scale, zp = quant_params(w, bits, axis)
    s, z = scale.reshape(_bshape(w, axis)), zp.reshape(_bshape(w, axis))
    q = np.clip(np.round(np.asarray(w, np.float64) / s) + z, 0, (1 << bits) - 1)
    return q.astype(np.uint8), scale, zp


def fake_quantize(w: np.ndarray, bits: int, axis: int = 0) -> np.ndarray:
    """Quantize then dequantize (float32), the values a simulated low-bit layer computes with."""
    q, scale, zp = quantize(w, bits, axis)
    s, z = scale.reshape(_bshape(w, axis)), zp.reshape(_bshape(w, axis))
    return ((q.astype(np.float64) - z) * s).astype(np.float32)


def layer_error(layer, bits: int) -> dict:
    """Weight quantization MSE of one torch layer: plain, and summed over its three SplitQuant copies."""
    from .splitquant import SplitLayer, out_axis

    if isinstance(layer, SplitLayer):
        parts = layer.parts()
        w = sum(p.weight.detach().double().numpy() for p in parts)
        axis = out_axis(parts[0])
        wq = sum(fake_quantize(p.weight.detach().numpy(), bits, axis).astype(np.float64) for p in parts)
    else:
        w = layer.weight.detach().double().numpy()
        axis = out_axis(layer)
        wq = fake_quantize(w, bits, axis).astype(np.float64)
    return {"mse": float(np.mean((w - wq) ** 2)), "max_abs": float(np.abs(w - wq).max())}


# --------------------------------------------------------------------------------------------- ONNX graphs


def _weight_inputs(model) -> list[tuple[str, int]]:
    """(initializer name, output-channel axis) of every Conv/ConvTranspose/Gemm weight in the graph."""
    inits = {i.name for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in inits:
            axis = WEIGHT_OPS[n.op_type]
            if n.op_type == "Gemm":
                trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
                axis = 0 if trans_b else 1
            out.append((n.input[1], axis))
    return out


def _count_weights(model, names) -> int:
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    return sum(numpy_helper.to_array(inits[n]).size for n, _ in names)


def simulate_onnx(src: Path, dst: Path, bits: int) -> dict:
    """Copy of an FP32 graph whose layer weights are fake-quantized (dequantized) at `bits`."""
    import onnx
    from onnx import numpy_helper

    check_bits(bits)
    model = onnx.load(str(src))
    targets = _weight_inputs(model)
    if not targets:
        raise QuantError(f"{src} has no quantizable layer (no Conv, ConvTranspose or Gemm weight)")
    axis_of = dict(targets)
    for init in model.graph.initializer:
        if init.name in axis_of:
            w = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(fake_quantize(w, bits, axis_of[init.name]), init.name))
    onnx.save(model, str(dst))
    return {"layers": len(targets), "weights": _count_weights(model, targets)}


def _pack4(codes: np.ndarray) -> bytes:
    """4-bit codes packed two per byte, low nibble first (ONNX's INT4/UINT4 layout)."""
    flat = np.asarray(codes, np.uint8).reshape(-1)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return ((flat[0::2] & 0x0F) | ((flat[1::2] & 0x0F) << 4)).astype(np.uint8).tobytes()


def pack_int4_onnx(src: Path, dst: Path, bits: int) -> dict:
    """Storage form: UINT4 weights (packed two per byte) + per-channel DequantizeLinear, opset 21."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if check_bits(bits) > 4:
        raise QuantError(f"the packed INT4 file holds weights of at most 4 bits, not {bits}")
    from onnx import version_converter

    model = onnx.load(str(src))
    targets = dict(_weight_inputs(model))
    if not targets:
        raise QuantError(f"{src} has no quantizable layer (no Conv, ConvTranspose or Gemm weight)")
    model = version_converter.convert_version(model, 21)  # UINT4 Q/DQ needs opset 21 (ReduceMax etc. upgraded)
    new_inits, dq_nodes = [], []
    for init in model.graph.initializer:
        if init.name not in targets:
            new_inits.append(init)
            continue
        w = numpy_helper.to_array(init)
        axis = targets[init.name]
        q, scale, zp = quantize(w, bits, axis)
        qn, sn, zn = f"{init.name}_q4", f"{init.name}_scale", f"{init.name}_zp"
        new_inits.append(helper.make_tensor(qn, TensorProto.UINT4, list(w.shape), _pack4(q), raw=True))
        new_inits.append(numpy_helper.from_array(scale.astype(np.float32), sn))
        new_inits.append(helper.make_tensor(zn, TensorProto.UINT4, [len(zp)], _pack4(zp.astype(np.uint8)), raw=True))
        dq_nodes.append(helper.make_node("DequantizeLinear", [qn, sn, zn], [init.name], axis=axis,
                                         name=f"{init.name}_DequantizeLinear"))
    del model.graph.initializer[:]
    model.graph.initializer.extend(new_inits)
    nodes = dq_nodes + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.ir_version = max(model.ir_version, 10)
    onnx.save(model, str(dst))
    return {"layers": len(targets), "opset": 21}


def effective_bits(model_weights: dict[str, int], bits: int, split_layers: set[str] | None = None) -> dict:
    """Storage per original weight. `model_weights`: original layer -> weight count; split layers cost either
    three dense copies (3·b) or one b-bit code plus a 2-bit cluster id (b + 2), whichever the store uses."""
    split_layers = split_layers or set()
    total = sum(model_weights.values())
    dense = sum(n * (3 * bits if name in split_layers else bits) for name, n in model_weights.items())
    coded = sum(n * (bits + CLUSTER_ID_BITS if name in split_layers else bits) for name, n in model_weights.items())
    return {"effective_bits": round(coded / total, 3), "effective_bits_dense_copies": round(dense / total, 3),
            "original_weights": total, "split_weight_fraction": round(
                sum(n for k, n in model_weights.items() if k in split_layers) / total, 4)}
