#!/usr/bin/env python3
"""GPU check: torch CUDA FP32 vs AMP FP16 vs channels-last vs torch.compile, latency and IoU parity with FP32.

    python bench/gpu_check.py [--device cuda:0] [--data ../shared/data/fire-real/dev] [--frames N]
                              [--size S] [--batch 1] [--iters 50] [--no-compile] [--json PATH]
    python bench/gpu_check.py --device cpu     # dry run without a GPU: says so, same table, small numbers

PyTorch only (no ONNX Runtime, no TensorRT), so it runs on any machine with a CUDA build of torch. The model is
the shipped fireseg-lite (or `--weights CKPT.pt`, `--arch`), fed the real dev frames resized to its input size.
Variants, each timed with the same input in the same run (ratios are fair):
  fp32           eager, NCHW, float32 (the reference)
  fp32-cl        eager, channels-last
  amp-fp16-cl    channels-last + torch.autocast(float16)   (bfloat16 on the CPU dry run, labelled so)
  compile        torch.compile of the channels-last fp32 model        (--no-compile skips it)
  compile-amp    torch.compile + autocast
Parity: each variant's masks (prob >= 0.5) against FP32's on every frame: pooled IoU and max |Δprob|; plus each
variant's IoU against the ground-truth masks. Latency: per call of `--batch` frames after warm-up, p50/p95 ms,
fps; on CUDA the peak allocated memory. Labels: precision_exec / weight_bits / simulated (never simulated here).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing


def load_frames(data: Path, limit: int | None):
    from firespotter.runtime.images import read_image

    images = data / "images" if (data / "images").is_dir() else data
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if limit:
        paths = paths[:: max(1, len(paths) // limit)][:limit]
    if not paths:
        sys.exit(f"gpu_check: no images in {images} (give --data: a folder with images/ and masks/)")
    frames, truths = [], []
    for p in paths:
        frames.append(read_image(p))
        m = next((q for q in (data / "masks").glob(p.stem + ".*")), None) if (data / "masks").is_dir() else None
        truths.append(None if m is None else read_image(m, "gray") > 0)
    return paths, frames, truths


def load_model(arch: str, weights: Path | None):
    from firespotter.models.checkpoint import load_checkpoint, model_from_checkpoint

    if weights is None:
        from firespotter.models.zoo import load_manifest, manifest_path, verified_files

        weights = verified_files(load_manifest(manifest_path(arch)))["torch"]
    ckpt = load_checkpoint(weights)
    return model_from_checkpoint(ckpt).eval(), ckpt, weights


def to_input(frames, size, mean, std):
    import cv2

    h, w = size
    x = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]).astype(np.float32)
    x = (x / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return x.transpose(0, 3, 1, 2).copy()


def variants(torch, model, device, compile_ok: bool):
    """name -> (callable(x) -> logits, label dict, memory format)."""
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    amp_name = "fp16" if amp_dtype == torch.float16 else "bf16"
    nchw = model
    cl = __import__("copy").deepcopy(model).to(memory_format=torch.channels_last)

    def eager(m, amp):
        def run(x):
            with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                return m(x)[0].float()
        return run

    out = {
        "fp32": (eager(nchw, False), ("fp32", 32), torch.contiguous_format),
        "fp32-cl": (eager(cl, False), ("fp32", 32), torch.channels_last),
        f"amp-{amp_name}-cl": (eager(cl, True), (amp_name, 16), torch.channels_last),
    }
    if compile_ok:
        compiled = torch.compile(cl)
        out["compile"] = (eager(compiled, False), ("fp32", 32), torch.channels_last)
        out[f"compile-amp-{amp_name}"] = (eager(compiled, True), (amp_name, 16), torch.channels_last)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fire-real" / "dev")
    ap.add_argument("--arch", default="fireseg-lite")
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--frames", type=int, help="dev frames used for parity (default: all on CUDA, 8 on the CPU)")
    ap.add_argument("--size", type=int, help="square input side (default: the model's on CUDA, 256 on the CPU; "
                    "the network is fully convolutional)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, help="timed calls per variant (default 50 on CUDA, 5 on the CPU)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.exit(f"gpu_check: --device {args.device} but torch {torch.__version__} sees no CUDA device "
                 f"({'CPU-only build' if torch.version.cuda is None else 'no driver/GPU visible'}); "
                 "use --device cpu for a dry run")
    if not cuda:
        print(f"gpu_check: dry run on the CPU (no CUDA here: torch {torch.__version__}, "
              f"cuda available={torch.cuda.is_available()}); AMP uses bfloat16; timings are not GPU figures")
    device = torch.device(args.device)
    iters = args.iters or (50 if cuda else 5)
    paths, frames, truths = load_frames(args.data, args.frames or (None if cuda else 8))
    model, ckpt, weights = load_model(args.arch, args.weights)
    model = model.to(device)
    size = tuple(ckpt.get("input_size") or (512, 512))
    if args.size or not cuda:
        size = (args.size or 256, args.size or 256)
    from firespotter.models.arch import MEAN, STD

    x_all = to_input(frames, size, ckpt.get("mean") or MEAN, ckpt.get("std") or STD)
    if cuda:
        torch.backends.cudnn.benchmark = True
    table, ref = [], None
    for name, (run, (prec, bits), fmt) in variants(torch, model, device, not args.no_compile).items():
        t_first = time.perf_counter()
        probs = []
        for i in range(0, len(x_all), args.batch):  # parity pass (also the compile's first call)
            x = torch.from_numpy(x_all[i:i + args.batch]).to(device).contiguous(memory_format=fmt)
            probs.append(torch.sigmoid(run(x))[:, 0].cpu().numpy())
        first_s = time.perf_counter() - t_first
        prob = np.concatenate(probs)
        x = torch.from_numpy(np.repeat(x_all[:1], args.batch, axis=0)).to(device).contiguous(memory_format=fmt)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.warmup):
            run(x)
        ms = []
        for _ in range(iters):
            if cuda:
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            run(x)
            if cuda:
                torch.cuda.synchronize(device)
            ms.append((time.perf_counter() - t) * 1e3)
        if ref is None:
            ref = prob
        a, b = ref >= 0.5, prob >= 0.5
        union = np.logical_or(a, b).sum()
        truth_iou = None
        if all(t is not None for t in truths):
            import cv2

            inter = uni = 0
            for p, t in zip(prob, truths):
                m = cv2.resize(p, (t.shape[1], t.shape[0]), interpolation=cv2.INTER_LINEAR) >= 0.5
                inter += np.logical_and(m, t).sum()
                uni += np.logical_or(m, t).sum()
            truth_iou = float(inter / uni) if uni else None
        table.append({
            "variant": name, "precision_exec": prec, "weight_bits": bits, "simulated": False,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "fps": args.batch * 1000.0 / float(np.mean(ms)), "first_pass_s": round(first_s, 2),
            "iou_vs_fp32": float(np.logical_and(a, b).sum() / union) if union else 1.0,
            "max_abs_dprob": float(np.abs(ref - prob).max()), "iou_vs_truth": truth_iou,
            "peak_alloc_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None,
        })
    base = table[0]["p50_ms"]
    for row in table:
        row["speedup_vs_fp32"] = round(base / row["p50_ms"], 3)
    dev_name = torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine())
    print(f"{args.arch} ({weights.name}) on {dev_name}, input {size[1]}x{size[0]}, batch {args.batch}, "
          f"{iters} timed calls; parity on {len(frames)} frames of {args.data}")
    print(f"{'variant':<18}{'exec':>6}{'p50 ms':>9}{'p95 ms':>9}{'fps':>9}{'x fp32':>8}{'IoU/fp32':>10}"
          f"{'max|dp|':>9}{'IoU/truth':>10}{'mem MiB':>9}")
    for r in table:
        truth = "-" if r["iou_vs_truth"] is None else f"{r['iou_vs_truth']:.4f}"
        mem = "-" if r["peak_alloc_mib"] is None else f"{r['peak_alloc_mib']:.0f}"
        print(f"{r['variant']:<18}{r['precision_exec']:>6}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}{r['fps']:>9.1f}"
              f"{r['speedup_vs_fp32']:>8.2f}{r['iou_vs_fp32']:>10.4f}{r['max_abs_dprob']:>9.4f}{truth:>10}{mem:>9}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "device": dev_name, "cuda": cuda, "dry_run": not cuda, "torch": torch.__version__,
            "cuda_version": torch.version.cuda, "arch": args.arch, "weights": str(weights), "input_size": list(size),
            "batch": args.batch, "iters": iters, "frames": len(frames), "data": str(args.data),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "variants": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
