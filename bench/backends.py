#!/usr/bin/env python3
"""Backends and precisions side by side, interleaved in one process so their ratios are fair on a busy machine.

    python bench/backends.py [--model fireseg-lite] [--configs onnxruntime:fp32,onnxruntime:fp16,torch:fp32,torch:bf16]
                             [--rounds 5] [--calls 2] [--batch 1] [--threads 2] [--json PATH]

Each config is bound as `firespotter bench` binds it (artifact cache included). Rounds visit every config in turn
and time `--calls` calls of `--batch` frames (synthetic scene, model input size) after one warm-up call each;
medians over all rounds are reported with the ratio to the first config. Labels come from each segmenter.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--model", default="fireseg-lite")
    ap.add_argument("--configs", default="onnxruntime:fp32,onnxruntime:fp16,torch:fp32,torch:bf16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from firespotter.runtime.assemble import bind_segmenter
    from firespotter.runtime.config import ModelSettings
    from firespotter.runtime.plugins import get_registry
    from firespotter.runtime.sources import open_source

    registry = get_registry()
    configs = [tuple(c.split(":", 1)) for c in args.configs.split(",") if c]
    segs = {}
    for backend, precision in configs:
        seg, _ = bind_segmenter(registry, ModelSettings(name=args.model, backend=backend, precision=precision,
                                                        options={"threads": args.threads}))
        segs[(backend, precision)] = seg
    h, w = next(iter(segs.values())).input_spec.size
    src = open_source(f"test://?frames={args.batch}&size={w}x{h}", registry)
    x = np.stack([f.image for f in src])
    src.close()
    times = {c: [] for c in configs}
    for c in configs:
        segs[c].predict(x)  # warm-up
    for _ in range(args.rounds):
        for c in configs:
            for _ in range(args.calls):
                t = time.perf_counter()
                segs[c].predict(x)
                times[c].append((time.perf_counter() - t) * 1e3)
    base = statistics.median(times[configs[0]])
    rows = []
    for c in configs:
        med = statistics.median(times[c])
        rows.append({"backend": c[0], "precision": c[1], **segs[c].precision.as_dict(), "p50_ms": round(med, 2),
                     "p95_ms": round(float(np.percentile(times[c], 95)), 2), "fps": round(args.batch * 1e3 / med, 2),
                     "ratio_vs_first": round(med / base, 3), "samples": len(times[c])})
    print(f"{args.model}, {w}x{h}, batch {args.batch}, threads {args.threads}, {args.rounds} interleaved rounds "
          f"x {args.calls} calls; ratio = p50 / p50 of {configs[0][0]} {configs[0][1]}")
    print(f"{'backend':<13}{'precision':<10}{'exec':>6}{'bits':>5}{'sim':>6}{'p50 ms':>9}{'p95 ms':>9}{'fps':>7}{'ratio':>7}")
    for r in rows:
        print(f"{r['backend']:<13}{r['precision']:<10}{r['precision_exec']:>6}{r['weight_bits']:>5}"
              f"{str(r['simulated']):>6}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}{r['fps']:>7.2f}{r['ratio_vs_first']:>7.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "model": args.model, "size": f"{w}x{h}", "batch": args.batch, "threads": args.threads,
            "rounds": args.rounds, "calls": args.calls, "machine": {"platform": platform.platform(),
                                                                   "processor": platform.processor()},
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
