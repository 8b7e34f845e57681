"""`firespotter build`: build (or find) a model's artifact for a backend and precision, and say where it is.

It binds the model exactly as a run would (same backend, same options), so what it builds is what `replay`,
`run`, `eval` and `bench` will load from the artifact cache. A second build of the same thing is a verified hit.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from firespotter.models.build import parse_option_pairs
from firespotter.runtime.assemble import bind_segmenter, with_options
from firespotter.runtime.config import apply_overrides, load_settings
from firespotter.runtime.plugins import get_registry, hookimpl
from firespotter.runtime.specs import CommandSpec


def build_command(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name (default: config or fireseg-lite)."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="Backend (default: config or auto)."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp16, int8, ... (any registered)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda[:N]."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Real calibration frames: an image folder or a video."),
    calib_frames: int = typer.Option(32, "--calib-frames", min=1, help="How many frames to take from --calib."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Model or backend option KEY=VALUE "
                                               "(repeatable), e.g. providers=cuda,cpu or threads=2; a key the model "
                                               "declares goes to [model] options, any other to backend_options."),
    build_option: Optional[list[str]] = typer.Option(None, "--build-option", help="Variant builder option "
                                                     "KEY=VALUE (repeatable), e.g. method=entropy."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Build even when the cache has it."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config ([model] is used)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write what was built (or found) here."),
    gate: Optional[Path] = typer.Option(None, "--gate", help="Accuracy gate: labelled images/ + masks/ to measure "
                                        "IoU against fp32 on; the artifact is refused when it loses too much."),
    gate_include: Optional[list[str]] = typer.Option(None, "--gate-include", help="Only gate images matching "
                                                     "this glob (repeatable), e.g. 'flame1_t01*'."),
    budget: float = typer.Option(0.01225, "--budget", help="Largest relative IoU drop the gate accepts."),
    fallback: Optional[str] = typer.Option(None, "--fallback", help="Precision to use when the gate fails "
                                           "(e.g. fp32); without it a failed gate is an error."),
) -> None:
    """Build a model artifact into the content-addressed cache (or verify the cached one) and print where it is."""
    settings = apply_overrides(load_settings(config), {
        "model.name": model, "model.backend": backend, "model.precision": precision, "model.device": device})
    extra = parse_option_pairs(option)
    if calib is not None:
        extra.update(calib=str(calib), calib_frames=calib_frames)
    if build_option:
        earlier = extra.get("build") or settings.model.backend_options.get("build") or {}
        extra["build"] = {**earlier, **parse_option_pairs(build_option, "--build-option")}
    if rebuild:
        extra["rebuild"] = True
    settings = settings.model_copy(update={"model": with_options(get_registry(), settings.model, extra)})
    t0 = time.perf_counter()
    segmenter, backend_name = bind_segmenter(get_registry(), settings.model, str(config or "command line"))
    load_s = time.perf_counter() - t0
    accuracy = None
    if gate is not None:  # issue 7: measure against fp32, record in the manifest, refuse or fall back
        from firespotter.models.quant.gate import gate_build

        accuracy, segmenter = gate_build(lambda ms: bind_segmenter(get_registry(), ms), settings.model, segmenter,
                                         gate, gate_include or (), budget, fallback, typer.echo)
        settings = settings.model_copy(update={"model": settings.model.model_copy(
            update={"precision": accuracy.get("fallback") or settings.model.precision})})
    info = segmenter.info()
    art = info.get("artifact")
    m = settings.model
    labels = f"precision_exec={info['precision_exec']} weight_bits={info['weight_bits']} simulated={info['simulated']}"
    report = {"model": m.name, "model_id": segmenter.model_id, "backend": backend_name, "precision": m.precision,
              "device": m.device, **segmenter.precision.as_dict(), "artifact": art, "load_s": round(load_s, 3),
              "providers": info.get("providers"), "provider_fallback": info.get("provider_fallback"),
              "accuracy": accuracy}
    if art is None:
        where = info.get("path") or info.get("checkpoint")
        lines = [f"{m.name} {m.precision} on {backend_name} runs the model file itself: {where} (nothing to build)"]
    else:
        state = (f"hit (verified in {art.get('seconds', 0):.2f} s, nothing rebuilt)" if art["hit"]
                 else f"built in {art.get('seconds', art.get('build_s', 0)):.1f} s")
        lines = [f"artifact  {art['dir']}", f"cache     {state}"]
    lines.append(f"labels    {labels}; {backend_name} on {m.device}"
                 + (f" ({', '.join(info['providers'])})" if info.get("providers") else "") + f"; ready in {load_s:.2f} s")
    if art is not None and art.get("accuracy") and accuracy is None:  # the gate result recorded at build time
        from firespotter.models.quant.gate import describe

        lines.append("gate      " + describe(art["accuracy"], m.precision))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    typer.echo("\n".join(lines))


@hookimpl
def register_commands():
    return [CommandSpec("build", build_command,
                        help="Build a model artifact (fp16, int8, TensorRT engine, ...) into the cache; print where.")]
