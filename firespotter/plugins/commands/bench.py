"""`firespotter bench`: latency and throughput of one model on one backend at one precision, on this machine.

The segmenter is bound exactly as a run binds it (artifact cache included), fed frames of `--size` from the
synthetic scene source (`test://`; the backend resizes them to the model input as it would camera frames),
warmed up, then timed call by call for each batch size. Reported: latency p50/p95/p99 per call, frames per
second, peak RSS of the process, and on CUDA the `torch.cuda` allocator statistics (active/allocated/reserved
peaks) when the backend runs on torch. Every result carries the labels precision_exec, weight_bits, simulated.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from firespotter import __version__
from firespotter.models.build import parse_option_pairs
from firespotter.runtime.artifacts import library_versions
from firespotter.runtime.assemble import bind_segmenter, with_options
from firespotter.runtime.config import apply_overrides, load_settings
from firespotter.runtime.errors import ConfigError
from firespotter.runtime.plugins import get_registry, hookimpl
from firespotter.runtime.sources import open_source, parse_wxh
from firespotter.runtime.specs import CommandSpec

VERSIONS = ("onnxruntime", "onnxruntime-gpu", "torch", "torch-tensorrt", "tensorrt", "numpy", "opencv-python-headless")


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "mean": round(float(a.mean()), 3)}


def _batches(text: str) -> list[int]:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise ConfigError(f"--batch {text!r}: expected batch sizes like 1,2,4,8 (each at least 1)")
    return out


def _frames(registry, width: int, height: int, n: int = 4) -> list[np.ndarray]:
    source = open_source(f"test://?frames={n}&size={width}x{height}", registry)
    try:
        return [f.image for f in source]
    finally:
        source.close()


def _cuda_torch(info: dict):
    """torch, when the segmenter runs on a CUDA device through torch (its allocator statistics are meaningful)."""
    if not str(info.get("device", "")).startswith("cuda") or "torch" not in sys.modules:
        return None
    import torch

    return torch if torch.cuda.is_available() else None


def _cuda_memory(torch) -> dict:
    s = torch.cuda.memory_stats()
    mib = 1 << 20
    return {"active_peak_mib": round(s.get("active_bytes.all.peak", 0) / mib, 1),
            "allocated_peak_mib": round(s.get("allocated_bytes.all.peak", 0) / mib, 1),
            "reserved_peak_mib": round(s.get("reserved_bytes.all.peak", 0) / mib, 1),
            "device": torch.cuda.get_device_name()}


def time_calls(predict, frames: list[np.ndarray], batch: int, calls: int, warmup: int) -> list[float]:
    """Milliseconds per `predict` call on `batch` frames, after `warmup` untimed calls."""
    x = np.stack([frames[i % len(frames)] for i in range(batch)])
    for _ in range(warmup):
        predict(x)
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        predict(x)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def bench_command(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name (default: config or fireseg-lite)."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="Backend (default: config or auto)."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp32, fp16, bf16, int8, ..."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda[:N]."),
    size: Optional[str] = typer.Option(None, "--size", help="Frame size WIDTHxHEIGHT fed to the segmenter "
                                       "(default: the model's input size; others are resized as camera frames are)."),
    batch: str = typer.Option("1", "--batch", help="Batch sizes, comma-separated, e.g. 1,2,4,8."),
    frames: int = typer.Option(30, "--frames", "-n", min=1, help="Timed calls per batch size."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed calls first, per batch size."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Model or backend option KEY=VALUE "
                                               "(repeatable), e.g. threads=2, compile=true, providers=cuda,cpu; a key "
                                               "the model declares goes to [model] options, any other to "
                                               "backend_options."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration frames, for precisions that need them."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config ([model] is used)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the results here."),
) -> None:
    """Latency p50/p95/p99, fps per batch size, peak memory, with the precision labels."""
    settings = apply_overrides(load_settings(config), {
        "model.name": model, "model.backend": backend, "model.precision": precision, "model.device": device})
    extra = parse_option_pairs(option)
    if calib is not None:
        extra["calib"] = str(calib)
    settings = settings.model_copy(update={"model": with_options(get_registry(), settings.model, extra)})
    batches = _batches(batch)
    registry = get_registry()
    t0 = time.perf_counter()
    segmenter, backend_name = bind_segmenter(registry, settings.model, str(config or "command line"))
    load_s = time.perf_counter() - t0
    info = segmenter.info()
    model_hw = tuple(segmenter.input_spec.size or (512, 512))
    try:
        width, height = parse_wxh(size) if size else (model_hw[1], model_hw[0])
    except ValueError as exc:
        raise ConfigError(f"--size: {exc}") from None
    images = _frames(registry, width, height)
    torch = _cuda_torch(info)
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()
    predict = segmenter.predict_scored if segmenter.frame_head else segmenter.predict
    rows = []
    for b in batches:
        ms = time_calls(predict, images, b, frames, warmup)
        row = {"batch": b, "calls": frames, "latency_ms": _percentiles(ms),
               "fps": round(b * len(ms) / (sum(ms) / 1000.0), 2)}
        row["ms_per_frame_p50"] = round(row["latency_ms"]["p50"] / b, 3)
        rows.append(row)
    labels = segmenter.precision.as_dict()
    report = {
        "model": settings.model.name, "model_id": segmenter.model_id, "backend": backend_name,
        "device": settings.model.device, "precision": settings.model.precision, **labels,
        "size": f"{width}x{height}", "frame_hw": [height, width], "model_input_hw": list(model_hw),
        "latency_ms": rows[0]["latency_ms"], "fps": rows[0]["fps"], "batch": rows[0]["batch"], "batches": rows,
        "warmup": warmup, "load_s": round(load_s, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "cuda_memory": _cuda_memory(torch) if torch is not None else None,
        "providers": info.get("providers"), "provider_fallback": info.get("provider_fallback"),
        "threads": info.get("threads"), "artifact": info.get("artifact"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": {"firespotter": __version__, **dict(library_versions(VERSIONS))},
        "command": "firespotter " + shlex.join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"{report['model']} ({report['model_id']}) on {backend_name} [{labels['precision_exec']}, "
             f"{labels['weight_bits']}-bit weights, simulated={labels['simulated']}], frames {report['size']} -> "
             f"model {model_hw[1]}x{model_hw[0]}, device {report['device']}"
             + (f" ({', '.join(info['providers'])})" if info.get("providers") else "") + f", loaded in {load_s:.2f} s",
             f"{'batch':>5} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'ms/frame':>9} {'fps':>8}"]
    for r in rows:
        lat = r["latency_ms"]
        lines.append(f"{r['batch']:>5} {lat['p50']:>9.2f} {lat['p95']:>9.2f} {lat['p99']:>9.2f} "
                     f"{r['ms_per_frame_p50']:>9.2f} {r['fps']:>8.1f}")
    lines.append(f"peak RSS {report['peak_rss_mib']:.0f} MiB" + (
        f"; CUDA peak active {report['cuda_memory']['active_peak_mib']} MiB, allocated "
        f"{report['cuda_memory']['allocated_peak_mib']} MiB, reserved {report['cuda_memory']['reserved_peak_mib']} MiB"
        if report["cuda_memory"] else ""))
    if info.get("provider_fallback"):
        lines.append(f"warning: {info['provider_fallback']}")
    typer.echo("\n".join(lines))


@hookimpl
def register_commands():
    return [CommandSpec("bench", bench_command,
                        help="Latency p50/p95/p99 and fps of a model on a backend at a precision (--json PATH).")]
