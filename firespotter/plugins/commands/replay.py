"""`firespotter replay FLIGHT... --out DIR`: recorded footage through the pipeline, every frame, in order.

One flight (and neither --jobs nor --ray): its outputs go straight into DIR, as always. Several flights (or a
glob, --jobs, --ray): each goes into DIR/<flight-id>/ exactly as a single replay, on local worker processes or
Ray tasks, and DIR/index.json + index.html (+ a fire map with telemetry) sum the archive up (firespotter/archive/).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from firespotter.archive.api import replay_archive
from firespotter.archive.plan import is_uri
from firespotter.runtime.config import ModelSettings, apply_overrides, load_settings
from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.plugins import get_registry, hookimpl
from firespotter.runtime.replay import finish, print_summary, replay_one
from firespotter.runtime.specs import CommandSpec


DEFAULT_MODEL = ModelSettings.model_fields["name"].default  # the help text reads it: it cannot drift


def _single(sources: list[str], jobs, ray) -> bool:
    if len(sources) != 1 or jobs is not None or ray is not None:
        return False
    s = sources[0]
    return is_uri(s) or not (set("*?[") & set(s)) or Path(s).exists()


def replay(
    sources: List[str] = typer.Argument(..., metavar="FLIGHT...", help="Flights: videos, image folders, URIs "
                                        "(test://, dir://...) or globs ('flights/**/*.mp4', quoted)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for masks, events.jsonl and summary.json "
                             "(several flights: one folder each, plus index.json and index.html)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name (default: the config's [model] "
                                        f"name, else {DEFAULT_MODEL})."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="Backend name, or auto."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp32, fp16, int8, ..."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="Stop after N frames (of each flight)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Fire probability threshold."),
    overlay: bool = typer.Option(True, "--overlay/--no-overlay", help="Write OUT/overlay.mp4."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write OUT/report.html."),
    adapt: Optional[str] = typer.Option(None, "--adapt", help="Test-time adaptation: bnstats, tent, ostta, "
                                        "or default (bnstats)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Local worker processes for several flights "
                                       "(default: one per core, each backend on its share of the cores)."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="[ADDRESS]", help="Run each flight as a Ray task: "
                                      "ray://HOST:10001, HOST:PORT, auto, or nothing for a local Ray."),
    flight_cpus: float = typer.Option(1.0, "--flight-cpus", help="--ray: CPUs each flight's task asks for "
                                      "(also its backend threads)."),
    flight_gpus: Optional[float] = typer.Option(None, "--flight-gpus", help="--ray: GPUs each flight's task asks "
                                                "for (default 1 with a cuda device, else 0)."),
    outputs: str = typer.Option("auto", "--outputs", help="--ray: shared (workers write DIR, mounted at the same "
                                "path on every node) or driver (outputs come back through this process); auto: "
                                "shared for a local Ray, driver for a cluster."),
    retries: int = typer.Option(2, "--retries", help="Times a failed flight is tried again (crashes, lost workers; "
                                "not bad input)."),
    force: bool = typer.Option(False, "--force", help="Replay flights whose outputs are already complete."),
) -> None:
    """Process every frame of recorded flights, in order, and write the results to OUT."""
    settings = load_settings(config)
    single = _single(sources, jobs, ray)
    settings = apply_overrides(settings, {
        "runtime.mode": "replay", "source.uri": sources[0] if single else None, "model.name": model,
        "model.backend": backend, "model.precision": precision, "model.threshold": threshold, "adapt.name": adapt,
    })
    if single:
        out = out.expanduser()
        summary = replay_one(settings, out, get_registry(), limit=limit, overlay=overlay, report=report,
                             where=str(config or "command line"))
        print_summary(summary, out)
        finish(summary)
        return
    result, written = replay_archive(sources, out, settings, limit=limit, overlay=overlay, report=report, jobs=jobs,
                                     ray=ray, flight_cpus=flight_cpus, flight_gpus=flight_gpus, outputs=outputs,
                                     retries=retries, force=force, echo=typer.echo)
    c = result.counts
    typer.echo(f"flights     {len(result.rows)}: {c.get('replayed', 0)} replayed, {c.get('skipped', 0)} skipped "
               f"(done before), {c.get('failed', 0)} failed, {c.get('interrupted', 0)} interrupted")
    typer.echo(f"frames      {result.frames} replayed in {result.wall_s:.1f} s "
               f"({result.frames / max(result.wall_s, 1e-9):.1f} fps over the archive)")
    typer.echo(f"index       {written['html']}  ({', '.join(p.name for p in written.values())})")
    if result.interrupted:
        typer.echo("interrupted: run the same command again to replay the rest (finished flights are skipped)",
                   err=True)
        sys.exit(130)
    failed = [r for r in result.rows if r["status"] in ("failed", "interrupted")]
    if failed:
        names = ", ".join(r["flight_id"] for r in failed[:5]) + (", ..." if len(failed) > 5 else "")
        raise FirespotterError(f"{len(failed)} of {len(result.rows)} flights failed ({names}); the others are in "
                               f"{out}", "see index.html for each error; rerun the same command to retry only them")


@hookimpl
def register_commands():
    return [CommandSpec("replay", replay, help="Process every frame of recorded flights (one, or an archive on "
                                               "local workers or a Ray cluster) and write the results.")]
