"""Quantized precision variants: INT8 PTQ and QAT (Q/DQ ONNX), SplitQuant W8/W4/W2, weight-only W8/W4/W2.

`quant_variants()` lists them for the table in `firespotter.models.variants` (labels as in docs/quantization.md):
int8, int8-qat and sq-w8 execute as int8 in ONNX Runtime; w8, w4, sq-w4, w2 and sq-w2 are simulated
(dequantized weights in an FP32 graph): accuracy and storage results, never speed claims.
"""

from __future__ import annotations

from functools import partial

from firespotter.models.variant_types import VariantSpec
from firespotter.runtime.types import PrecisionLabel

from . import builders
from .calibration import QuantError  # noqa: F401  (re-exported)

_INT8 = PrecisionLabel("int8", 8, False)


def quant_variants() -> list[VariantSpec]:
    """The quantized precisions, in the order `firespotter.models.variants` lists them."""
    out = [VariantSpec("int8", builders.build_int8, _INT8, needs_calibration=True,
                       description="INT8 PTQ, ONNX Runtime static Q/DQ, per-channel weights, calibrated on "
                                   "real frames (options: method minmax|entropy|percentile, profile cpu|tensorrt)"),
           VariantSpec("int8-qat", builders.build_qat, _INT8, needs_calibration=True,
                       description="INT8 QAT (PyTorch fake-quantize, STE), exported as symmetric Q/DQ"),
           VariantSpec("sq-w8", builders.build_sq_w8, _INT8, needs_calibration=True,
                       description="SplitQuant (three copies per layer) + INT8 Q/DQ; 3x the conv work")]
    for bits in (8, 4, 2):
        label = PrecisionLabel("fp32", bits, True)
        out.append(VariantSpec(f"w{bits}", partial(builders.build_lowbit, bits=bits, split=False), label,
                               description=f"weight-only {bits}-bit per-channel asymmetric, simulated"))
        if bits < 8:
            out.append(VariantSpec(f"sq-w{bits}", partial(builders.build_lowbit, bits=bits, split=True), label,
                                   description=f"SplitQuant + weight-only {bits}-bit, simulated; packed "
                                               "INT4 ONNX for storage"))
    return out
