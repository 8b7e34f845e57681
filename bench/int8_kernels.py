#!/usr/bin/env python3
"""Does ONNX Runtime's CPU INT8 convolution beat FP32 on this machine? Per layer shape, and per fireseg-lite layout.

    python bench/int8_kernels.py [--threads 1] [--repeats 20] [--layouts] [--json PATH]

Part 1 (kernels): stacks of four identical convolutions (+ReLU) in the shapes fire segmenters use (dense 3x3,
1x1, depthwise, the 3-channel stem), exported to ONNX and quantized by `onnxruntime.quantization.quantize_static`
with every format and type pairing ORT offers on x86 (QDQ and QOperator; u8 activations with s8 weights,
with and without reduce_range; u8u8; s8s8). The stacks amortise the input QuantizeLinear and output
DequantizeLinear, so the ratio is the kernels'. Calibration data: |N(0,1)| activations (these are kernel
timings, not accuracy results; the model benchmarks calibrate on real frames).

Part 2 (`--layouts`): fireseg-lite's first layout, an intermediate one and the current one (no depthwise
blocks at stride 2, decoder and logit at stride 4), random weights with BN statistics from real frames, FP32 vs the
project's own PTQ (`firespotter.models.quant.ptq`, cpu profile, calibrated on 8 real `flame1_t00*` frames).

Times are medians of interleaved runs (same load for all), 1 intra-op thread by default.
JSON: {"kernels": [{"shape", "macs", "fp32_ms", "<config>_ms", ...}], "layouts": [...], "machine": {...}}
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

from quant import DEFAULT_DATA, SIZE, calib_frames, time_together  # noqa: E402

# (name, cin, cout, kernel, stride, spatial, depthwise)
SHAPES = [
    ("stem 3->16 3x3/2 @512", 3, 16, 3, 2, 512, False),
    ("dense 16->32 3x3/2 @256", 16, 32, 3, 2, 256, False),
    ("dense 32 3x3 @128", 32, 32, 3, 1, 128, False),
    ("dense 64 3x3 @64", 64, 64, 3, 1, 64, False),
    ("dense 128 3x3 @32", 128, 128, 3, 1, 32, False),
    ("pointwise 32 1x1 @128", 32, 32, 1, 1, 128, False),
    ("pointwise 64 1x1 @128", 64, 64, 1, 1, 128, False),
    ("pointwise 128 1x1 @32", 128, 128, 1, 1, 32, False),
    ("pointwise 256 1x1 @16", 256, 256, 1, 1, 16, False),
    ("depthwise 16 3x3 @256", 16, 16, 3, 1, 256, True),
    ("depthwise 64 3x3 @64", 64, 64, 3, 1, 64, True),
]


def _configs():
    from onnxruntime.quantization import QuantFormat, QuantType

    return {"qdq_u8s8_rr": (QuantFormat.QDQ, QuantType.QUInt8, QuantType.QInt8, True),  # the project's cpu profile
            "qdq_u8s8": (QuantFormat.QDQ, QuantType.QUInt8, QuantType.QInt8, False),
            "qop_u8s8": (QuantFormat.QOperator, QuantType.QUInt8, QuantType.QInt8, False),
            "qdq_u8u8": (QuantFormat.QDQ, QuantType.QUInt8, QuantType.QUInt8, False),
            "qdq_s8s8": (QuantFormat.QDQ, QuantType.QInt8, QuantType.QInt8, False)}  # the tensorrt profile's types


class _Reader:
    def __init__(self, batches):
        self.batches, self.i = list(batches), 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {"x": self.batches[self.i - 1][None]}

    def rewind(self):
        self.i = 0


def kernels(tmp: Path, threads: int, repeats: int) -> list[dict]:
    import torch
    from onnxruntime.quantization import quantize_static
    from torch import nn

    rows = []
    for name, cin, cout, k, stride, hw, dw in SHAPES:
        layers: list[nn.Module] = []
        c = cin
        for i in range(4):  # the first layer sets the shape; the rest keep it (stride 1, cout channels)
            s = stride if i == 0 else 1
            groups = c if dw else 1
            layers += [nn.Conv2d(c, cout, k, s, k // 2, groups=groups), nn.ReLU()]
            c = cout
        model = nn.Sequential(*layers).eval()
        src = tmp / f"k{len(rows)}.onnx"
        torch.onnx.export(model, torch.randn(1, cin, hw, hw), str(src), input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False)
        rng = np.random.default_rng(0)
        calib = np.abs(rng.standard_normal((4, cin, hw, hw))).astype(np.float32)
        paths = {"fp32": src}
        for cname, (fmt, act, wt, rr) in _configs().items():
            dst = tmp / f"k{len(rows)}.{cname}.onnx"
            quantize_static(str(src), str(dst), _Reader(calib), quant_format=fmt, per_channel=True,
                            reduce_range=rr, activation_type=act, weight_type=wt)
            paths[cname] = dst
        ms = time_together(paths, calib[:1], threads, repeats)
        out = hw // stride
        macs = sum((cin if i == 0 else cout) * cout * k * k * out * out // ((cin if i == 0 else cout) if dw else 1)
                   for i in range(4))
        row = {"shape": name, "mmac": round(macs / 1e6, 1), "fp32_ms": ms["fp32"]}
        for cname in _configs():
            row[f"{cname}_ms"] = ms[cname]
            row[f"{cname}_x"] = round(ms["fp32"] / ms[cname], 3)
        rows.append(row)
        print(f"{name:26s} {row['mmac']:7.1f} MMAC fp32 {ms['fp32']:6.2f} ms  "
              + "  ".join(f"{c} x{row[f'{c}_x']:.2f}" for c in _configs()), flush=True)
    return rows


LAYOUTS = {  # where fireseg-lite's stride-2 work goes: depthwise blocks (ds) or one dense conv; logit stride
    "first (ds@2, logit@2)": {"early": "ds", "logit_stride": 2},
    "ds@2, logit@4": {"early": "ds", "logit_stride": 4},
    "current (dense@2, logit@4)": {"early": "dense", "logit_stride": 4},
}


def layouts(tmp: Path, threads: int, repeats: int) -> list[dict]:
    import torch

    from firespotter.models.arch import MEAN, STD, FireSegLite, count_flops
    from firespotter.models.quant.builders import export_fp32
    from firespotter.models.quant.calibration import to_inputs
    from firespotter.models.quant.ptq import make_static, quantize_int8

    frames = calib_frames(DEFAULT_DATA, 8)
    x = torch.from_numpy(to_inputs(frames, SIZE, MEAN, STD))
    paths, flops = {}, {}
    for i, (name, kw) in enumerate(LAYOUTS.items()):
        torch.manual_seed(0)
        model = FireSegLite(**kw)
        model.train()
        with torch.no_grad():  # BN statistics of real frames, so the activations have realistic ranges
            model(x)
        model.eval()
        src = export_fp32(model, tmp / f"l{i}.onnx", SIZE)
        paths[f"{name}|fp32"] = make_static(src, tmp / f"l{i}.static.onnx")
        paths[f"{name}|int8"] = tmp / f"l{i}.int8.onnx"
        quantize_int8(src, paths[f"{name}|int8"], frames, input_size=SIZE, mean=MEAN, std=STD)
        flops[name] = count_flops(model)
    ms = time_together(paths, to_inputs(frames[:1], SIZE, MEAN, STD), threads, repeats)
    rows = []
    for name in LAYOUTS:
        f, q = ms[f"{name}|fp32"], ms[f"{name}|int8"]
        rows.append({"layout": name, "gflops": round(flops[name] / 1e9, 3), "fp32_ms": f, "int8_ms": q,
                     "int8_x": round(f / q, 3)})
        print(f"{name:26s} {flops[name] / 1e9:5.2f} GFLOP fp32 {f:6.2f} ms int8 {q:6.2f} ms x{f / q:.2f}", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--layouts", action="store_true", help="also time fireseg-lite layouts (part 2)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import onnxruntime as ort

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in flags]
    print(f"CPU {cpu} ({', '.join(isa) or 'no AVX2'}), onnxruntime {ort.__version__}, {args.threads} thread(s)")
    result = {"machine": {"cpu": cpu, "isa": isa, "onnxruntime": ort.__version__, "threads": args.threads},
              "command": "python bench/int8_kernels.py " + " ".join(sys.argv[1:])}
    with tempfile.TemporaryDirectory() as tmp:
        result["kernels"] = kernels(Path(tmp), args.threads, args.repeats)
        if args.layouts:
            result["layouts"] = layouts(Path(tmp), args.threads, max(5, args.repeats // 2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
