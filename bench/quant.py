#!/usr/bin/env python3
"""Quantization: accuracy, size and ONNX Runtime speed of every precision of fireseg-lite, in one run.

    python bench/quant.py [--data DIR] [--synval DIR] [--large DIR] [--calib-frames 16] [--threads 1]
                          [--repeats 15] [--precisions fp32,int8,...] [--unet] [--json PATH]

Each variant is built by its registered builder (firespotter.models.variants) from the zoo's fireseg-lite,
calibrated on real training frames (`flame1_t00*` of --data and, half of them, --large's split=train large
flames; never validation frames), then scored with
the runtime's post-processing on the dev temporal split (`flame1_t01*`, column `iou`) and on synthetic
validation flights (`iou_synth`; generated with `firespotter synth OUT --flights 8 --frames 10 --size 256x256
--seed 9000` when --synval is not given) and on --large's validation fire frames (`iou_large`). `ms` is the median ONNX Runtime CPU time per 512x512 frame,
variants interleaved in the same loop so ratios are fair; only variants that execute at their label get a
time (simulated W8/W4/W2 run dequantized FP32 weights: no speed claim). `--unet` adds fireseg-unet's fp32/int8
speed ratio (random weights: speed only).

JSON: {"rows": [{"variant", "iou", "iou_synth", "size_bytes", "ms", "precision_exec", "weight_bits",
"effective_bits", "simulated", ...}], "unet": {...}, "machine": {...}, "command": ...}
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firespotter.models.arch import MEAN, STD  # noqa: E402
from firespotter.models.datasets import find_pairs  # noqa: E402
from firespotter.models.evaluate import evaluate  # noqa: E402
from firespotter.models.quant.gate import onnx_predictor  # noqa: E402
from firespotter.models.training import collect, read_rgb  # noqa: E402
from firespotter.models.variants import BuildRequest, get_variant  # noqa: E402
from firespotter.runtime.post import PostParams  # noqa: E402

ZOO = ROOT / "firespotter" / "models" / "zoo"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fire-real" / "dev"
DEFAULT_LARGE = ROOT.parent / "shared" / "data" / "fire-real" / "train-extra"
PRECISIONS = ("fp32", "fp16", "int8", "int8-qat", "sq-w8", "w8", "w4", "sq-w4", "w2", "sq-w2")
SIZE = (512, 512)


def calib_frames(data: Path, n: int, large: Path | None = None) -> list[np.ndarray]:
    """n training frames: FLAME flame1_t00*, and half of them large flames (train-extra split=train) when
    given, so that the activation ranges cover both kinds of fire the model sees."""
    items = collect([data], include=["flame1_t00*"])  # training split only
    picks = []
    if large is not None and (large / "labels.csv").is_file():
        from firespotter.models.labels import stems_in_split

        train = stems_in_split(large, "train")
        extra = [it for it in collect([large], include=["khanfire_*"]) if it.image.stem in train]
        picks = extra[:: max(1, len(extra) // (n // 2))][: n // 2]
    step = max(1, len(items) // (n - len(picks)))
    return [read_rgb(it.image) for it in items[::step][: n - len(picks)] + picks]


def large_val_pairs(large: Path | None):
    """The train-extra validation fire frames (split=val), or [] when the folder is absent."""
    if large is None or not (large / "labels.csv").is_file():
        return []
    from firespotter.models.labels import stems_in_split

    val = stems_in_split(large, "val")
    return [p for p in find_pairs(large)[0] if p.name in val and p.name.startswith("khanfire_")]


def synval(path: Path | None) -> Path:
    if path is not None:
        return path
    out = ROOT / "out" / "synval-9000"
    if not (out / "images").is_dir():
        subprocess.run([sys.executable, "-m", "firespotter", "synth", str(out), "--flights", "8", "--frames", "10",
                        "--size", "256x256", "--seed", "9000"], check=True, stdout=subprocess.DEVNULL)
    return out


def iou(onnx: Path, pairs) -> float | None:
    report = evaluate(pairs, onnx_predictor(onnx, SIZE, MEAN, STD, threads=2), PostParams()).report()
    return report.get("iou")


def session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def time_together(paths: dict[str, Path], x: np.ndarray, threads: int, repeats: int) -> dict[str, float]:
    """Median ms per frame of each graph, runs interleaved (same load for all), after one warm-up each."""
    sessions = {k: session(p, threads) for k, p in paths.items()}
    for s in sessions.values():
        s.run(None, {s.get_inputs()[0].name: x})
    times = {k: [] for k in sessions}
    for _ in range(repeats):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {s.get_inputs()[0].name: x})
            times[k].append(time.perf_counter() - t0)
    return {k: round(float(np.median(v)) * 1000, 2) for k, v in times.items()}


def build(precision: str, out: Path, frames, source_onnx: Path, source_torch: Path, options: dict):
    out.mkdir(parents=True, exist_ok=True)
    spec = get_variant(precision)
    req = BuildRequest(source_onnx, source_torch, out, frames, SIZE, MEAN, STD, dict(options),
                       lambda line: print(f"  [{precision}] {line}", file=sys.stderr))
    t0 = time.perf_counter()
    res = spec.build(req)
    return spec, res, time.perf_counter() - t0


def unet_ratio(frames, threads: int, repeats: int, tmp: Path) -> dict:
    import torch

    from firespotter.models.arch import build as build_arch
    from firespotter.models.quant.builders import export_fp32
    from firespotter.models.quant.ptq import make_static, quantize_int8

    torch.manual_seed(0)
    src = export_fp32(build_arch("fireseg-unet").eval(), tmp / "unet.onnx", SIZE)
    static = make_static(src, tmp / "unet.static.onnx")
    q = tmp / "unet.int8.onnx"
    quantize_int8(src, q, frames, input_size=SIZE, mean=MEAN, std=STD)
    x = np.zeros((1, 3, *SIZE), np.float32)
    ms = time_together({"fp32": static, "int8": q}, x, threads, max(3, repeats // 3))
    return {"fp32_ms": ms["fp32"], "int8_ms": ms["int8"], "speedup": round(ms["fp32"] / ms["int8"], 3),
            "weights": "random (speed only)"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--synval", type=Path, default=None)
    ap.add_argument("--large", type=Path, default=DEFAULT_LARGE, help="train-extra: calibration frames (train) "
                    "and the large-flame validation column (val)")
    ap.add_argument("--calib-frames", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--unet", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    torch.set_num_threads(2)
    frames = calib_frames(args.data, args.calib_frames, args.large)
    large_pairs = large_val_pairs(args.large)
    dev_pairs = [p for p in find_pairs(args.data)[0] if p.name.startswith("flame1_t01")]
    syn_pairs = find_pairs(synval(args.synval))[0]
    source_onnx, source_torch = ZOO / "fireseg-lite.onnx", ZOO / "fireseg-lite.pt"
    options = {"qat_data": str(args.data), "qat_include": ["flame1_t00*"], "qat_synthetic": 16, "qat_epochs": 2}
    rows, graphs = [], {}
    with tempfile.TemporaryDirectory(prefix="fs-bench-quant-") as tmp:
        tmp = Path(tmp)
        for precision in args.precisions.split(","):
            spec, res, build_s = build(precision, tmp / precision, frames, source_onnx, source_torch, options)
            onnx = res.files["onnx"]
            stored = res.files.get("packed", onnx)
            row = {"variant": precision, "iou": iou(onnx, dev_pairs), "iou_synth": iou(onnx, syn_pairs),
                   "iou_large": iou(onnx, large_pairs) if large_pairs else None,
                   "size_bytes": stored.stat().st_size, "ms": None, **spec.labels.as_dict(),
                   "effective_bits": res.info.get("effective_bits", spec.labels.weight_bits),
                   "effective_bits_dense_copies": res.info.get("effective_bits_dense_copies"),
                   "stored_file": stored.name, "build_s": round(build_s, 1),
                   "qat": res.info.get("qat")}
            print(f"{precision}: IoU dev {row['iou']:.4f} synth {row['iou_synth']:.4f}", file=sys.stderr)
            rows.append(row)
            if not spec.labels.simulated:
                from firespotter.models.quant.ptq import make_static

                graphs[precision] = make_static(onnx, tmp / f"{precision}.static.onnx") if precision in (
                    "fp32", "fp16") else onnx
        ms = time_together(graphs, np.zeros((1, 3, *SIZE), np.float32), args.threads, args.repeats)
        for row in rows:
            row["ms"] = ms.get(row["variant"])
            if row["ms"] and "fp32" in ms:
                row["speedup_vs_fp32"] = round(ms["fp32"] / row["ms"], 3)
        unet = unet_ratio(frames, args.threads, args.repeats, tmp) if args.unet else None

    ref = next((r for r in rows if r["variant"] == "fp32"), None)
    hdr = (f"{'variant':9s} {'IoU dev':>8s} {'drop%':>7s} {'IoU syn':>8s} {'IoU big':>8s} {'drop%':>7s} {'size KB':>8s} "
           f"{'ms':>7s} {'x fp32':>7s} "
           f"{'exec':>5s} {'wbits':>5s} {'eff.b':>6s} {'sim':>5s}")
    print(hdr)
    for r in rows:
        drop = 100 * (ref["iou"] - r["iou"]) / ref["iou"] if ref and ref["iou"] else float("nan")
        big = r["iou_large"] if r["iou_large"] is not None else float("nan")
        drop_big = 100 * (ref["iou_large"] - big) / ref["iou_large"] if ref and ref["iou_large"] else float("nan")
        print(f"{r['variant']:9s} {r['iou']:8.4f} {drop:7.2f} {r['iou_synth']:8.4f} {big:8.4f} {drop_big:7.2f} "
              f"{r['size_bytes'] / 1024:8.0f} "
              f"{r['ms'] if r['ms'] is not None else '-':>7} {r.get('speedup_vs_fp32', '-'):>7} "
              f"{r['precision_exec']:>5s} {r['weight_bits']:>5d} {r['effective_bits']:>6} {str(r['simulated']):>5s}")
    if unet:
        print(f"fireseg-unet (random weights): fp32 {unet['fp32_ms']} ms, int8 {unet['int8_ms']} ms, "
              f"{unet['speedup']}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "rows": rows, "unet": unet, "size": list(SIZE), "threads": args.threads, "repeats": args.repeats,
            "calibration": f"{len(frames)} frames: {args.data} flame1_t00* and {args.large} split=train khanfire_*",
            "dev_split": "flame1_t01*", "large_val": f"{args.large} split=val khanfire_* ({len(large_pairs)})",
            "synval": str(synval(args.synval)), "command": "python " + shlex.join(sys.argv),
            "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                        "onnxruntime": ort.__version__, "torch": torch.__version__},
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
