#!/usr/bin/env python3
"""Pipeline overhead: the same frames through (a) a bare loop calling the segmenter and (b) the full replay
pipeline (source thread, inference, post-processing, a `null` sink). Prints both throughputs and their ratio.

    python bench/pipeline_overhead.py [--frames 300] [--size 256] [--repeats 5] [--model fireseg-lite] [--json PATH]

Frames are rendered once, before timing, and served from memory to both variants, so the difference is what
the pipeline adds (queues, threads, post-processing, result building, the sink hand-off). Variants alternate
within each repeat and the medians are compared, so a noisy shared machine affects both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from firespotter import __version__
from firespotter.models.synthetic import SyntheticScene
from firespotter.runtime.assemble import bind_segmenter
from firespotter.runtime.config import ModelSettings
from firespotter.runtime.pipeline import Pipeline, PipelineOptions
from firespotter.runtime.plugins import new_registry
from firespotter.runtime.types import Frame, SourceState


class MemorySource:
    def __init__(self, images):
        self.images = images
        self.source_id = "bench"
        self.state = SourceState.STREAMING
        self.expected_frames = len(images)

    def __iter__(self):
        for i, image in enumerate(self.images):
            yield Frame(image, i, time.monotonic_ns(), time.time_ns(), "bench")
        self.state = SourceState.ENDED

    def close(self):
        pass


def bare_loop(segmenter, images) -> float:
    predict = segmenter.predict
    t0 = time.perf_counter()
    for image in images:
        predict(image[None])
    return time.perf_counter() - t0


def full_pipeline(segmenter, images, registry) -> tuple[float, dict]:
    null = registry.get("sinks", "null").factory(None, name="null")
    pipeline = Pipeline(MemorySource(images), segmenter, [("null", null)], PipelineOptions(mode="replay"))
    t0 = time.perf_counter()
    summary = pipeline.run()
    elapsed = time.perf_counter() - t0
    assert summary["frames"] == len(images), summary
    return elapsed, summary


def measure(name, segmenter, backend, images, registry, repeats) -> dict:
    bare_loop(segmenter, images[:20])  # warm-up: caches, lazy initialisation
    bare_s, pipe_s, summary = [], [], {}
    for _ in range(repeats):
        bare_s.append(bare_loop(segmenter, images))
        elapsed, summary = full_pipeline(segmenter, images, registry)
        pipe_s.append(elapsed)
    bare_med, pipe_med = statistics.median(bare_s), statistics.median(pipe_s)
    n = len(images)
    return {
        "model": name,
        "backend": backend,
        **segmenter.precision.as_dict(),
        "ratio": round(bare_med / pipe_med, 4),  # pipeline fps / bare fps
        "overhead_ms_per_frame": round((pipe_med - bare_med) / n * 1e3, 4),
        "bare_fps": round(n / bare_med, 2),
        "pipeline_fps": round(n / pipe_med, 2),
        "bare_ms_per_frame": round(bare_med / n * 1e3, 4),
        "bare_s": [round(x, 4) for x in bare_s],
        "pipeline_s": [round(x, 4) for x in pipe_s],
        "stages_ms_last_run": summary.get("stages_ms"),
    }


def cnn_segmenter(size: int):
    """The CNN-sized ONNX stand-in on the onnxruntime backend (see bench/cnn_standin.py)."""
    import tempfile

    from cnn_standin import build
    from firespotter.plugins.backends.onnxruntime_backend import OrtSegmenter
    from firespotter.runtime.formats import OnnxArtifact
    from firespotter.runtime.types import InputSpec

    path = build(Path(tempfile.mkdtemp()) / "cnn_standin.onnx", size=size)

    class StandIn:
        model_id = "cnn-standin"
        input_spec = InputSpec(size=(size, size))

    artifact = OnnxArtifact(path, (size, size))
    return OrtSegmenter(StandIn(), artifact, threads=os.cpu_count() or 1), "onnxruntime"


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, default=256, help="square frame side, px")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", default="fireseg-lite", help="the default model's row decides the top-level ratio")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--no-cnn", action="store_true", help="skip the CNN-sized ONNX stand-in row")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    registry = new_registry()
    scene = SyntheticScene(args.size, args.size, frames=args.frames, seed=0)
    images = [scene.render(i)[0] for i in range(args.frames)]
    variants = [(args.model, *bind_segmenter(registry, ModelSettings(name=args.model, backend=args.backend)))]
    if not args.no_cnn:
        variants.append(("cnn-standin", *cnn_segmenter(args.size)))

    rows = [measure(name, segmenter, backend, images, registry, args.repeats) for name, segmenter, backend in variants]
    main_row = rows[0]
    result = {
        "ratio": main_row["ratio"],
        "overhead_ms_per_frame": main_row["overhead_ms_per_frame"],
        "frames": args.frames,
        "size": [args.size, args.size],
        "repeats": args.repeats,
        "model": args.model,
        "variants": rows,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "versions": {"firespotter": __version__, "numpy": np.__version__, "onnxruntime": ort_version()},
    }
    print(f"{'model':<14}{'backend':<13}{'bare fps':>10}{'pipeline fps':>14}{'ratio':>8}{'overhead ms':>13}"
          f"  precision_exec/weight_bits/simulated")
    for r in rows:
        print(f"{r['model']:<14}{r['backend']:<13}{r['bare_fps']:>10.1f}{r['pipeline_fps']:>14.1f}{r['ratio']:>8.3f}"
              f"{r['overhead_ms_per_frame']:>13.3f}  {r['precision_exec']}/{r['weight_bits']}/{r['simulated']}")
    print(f"({args.frames} frames {args.size}x{args.size}, medians of {args.repeats} alternating runs)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
