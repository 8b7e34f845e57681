"""replay_archive(): many flights, each replayed into OUT/<flight-id>/, then the archive's index. The
`replay` command calls it with the parsed options; scripts and tests call it directly."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any, Callable

from firespotter.runtime.assemble import bind_segmenter
from firespotter.runtime.plugins import get_registry

from .driver import ArchiveResult, run_archive
from .flight import FlightTask
from .index import write_index
from .local import LocalRunner, cores
from .plan import ArchiveError, Flight, config_hash, make_plan

OUTPUTS_MODES = ("auto", "shared", "driver")


def model_id_of(settings) -> str:
    """The model id a replay of these settings writes into every event (the weights' hash is part of it).
    Binding the model here also stops a typo in --model or --backend before any worker starts."""
    segmenter, backend = bind_segmenter(get_registry(), settings.model)
    info = segmenter.info()
    segmenter.close()
    return str(info.get("model_id") or f"{settings.model.name}@{backend}")


def check_options(jobs: int | None, ray: str | None, retries: int, outputs: str, flight_cpus: float,
                  flight_gpus: float | None) -> None:
    if jobs is not None and jobs < 1:
        raise ArchiveError(f"--jobs must be at least 1, got {jobs}",
                           "give the number of worker processes, or leave --jobs out for one per core")
    if jobs is not None and ray is not None:
        raise ArchiveError("--jobs and --ray both given", "--jobs runs local workers, --ray runs Ray tasks: pick one")
    if retries < 0:
        raise ArchiveError(f"--retries must be 0 or more, got {retries}")
    if outputs not in OUTPUTS_MODES:
        raise ArchiveError(f"--outputs {outputs!r}: expected one of {', '.join(OUTPUTS_MODES)}")
    if ray is None and (outputs != "auto" or flight_gpus is not None):
        raise ArchiveError("--outputs and --flight-gpus apply to Ray tasks only",
                           "add --ray [ADDRESS], or drop them: local workers write OUT themselves and use no GPU quota")
    if flight_cpus <= 0 or (flight_gpus is not None and flight_gpus < 0):
        raise ArchiveError("--flight-cpus must be above 0 and --flight-gpus 0 or more")


def replay_archive(inputs: list[str], out: Path, settings, *, limit: int | None = None, overlay: bool = True,
                   report: bool = True, jobs: int | None = None, ray: str | None = None, flight_cpus: float = 1.0,
                   flight_gpus: float | None = None, outputs: str = "auto", retries: int = 2, force: bool = False,
                   progress: bool = True, worker: Callable[..., dict] | None = None,
                   echo: Callable[[str], None] = print) -> tuple[ArchiveResult, dict[str, Path]]:
    """Replay every flight of `inputs` (paths, globs, URIs) into OUT/<flight-id>/ and write the index.
    `worker(task, report) -> result` replaces the flight runner (flight.run_flight) in the workers."""
    check_options(jobs, ray, retries, outputs, flight_cpus, flight_gpus)
    out = out.expanduser()
    model_id = model_id_of(settings)
    dump = settings.model_dump(mode="json")
    dump.get("source", {}).pop("uri", None)
    cfg_hash = config_hash(dump, {"limit": limit, "overlay": overlay, "report": report})
    out.mkdir(parents=True, exist_ok=True)
    tel = settings.telemetry
    per_flight = tel.source if tel is not None and tel.path is None else None  # each flight's own sidecar
    plan = make_plan(inputs, out, model_id=model_id, cfg_hash=cfg_hash, force=force, telemetry_reader=per_flight)
    gpus = flight_gpus if flight_gpus is not None else (1.0 if str(settings.model.device).startswith("cuda") else 0.0)
    ship = False
    runner: Any = None
    if plan.todo:
        if ray is not None:
            from .cluster import RayRunner

            ship = outputs == "driver" or (outputs == "auto" and ray != "local")
            runner = RayRunner(ray, cpus=flight_cpus, gpus=gpus, threads=max(1, int(flight_cpus)), worker=worker,
                               progress=progress)
        else:
            n = min(jobs or cores(), len(plan.todo))  # no idle workers: three flights need three at most
            # Each worker's share of the cores: a process per core with one intra-op thread each, no oversubscription.
            threads = max(1, cores() // n)
            runner = LocalRunner(n, threads, worker=worker)
    how = runner.describe() + (", outputs back through the driver" if ship else "") if runner else "nothing to run"
    echo(f"archive     {len(plan.flights)} flights: {len(plan.todo)} to replay, {len(plan.done)} done before "
         f"(skipped), {len(plan.unreadable)} unreadable; {how}")

    def make_task(f: Flight, attempt: int) -> FlightTask:
        update: dict[str, Any] = {"source": settings.source.model_copy(update={"uri": f.source})}
        if per_flight is not None:  # this flight's sidecar, or no telemetry when it has none
            update["telemetry"] = tel.model_copy(update={"path": Path(f.telemetry)}) if f.telemetry else None
        s = settings.model_copy(update=update)
        return FlightTask(f.flight_id, f.source, str(out / f.flight_id), s, limit, overlay, report,
                          threads=runner.threads, ship=ship, attempt=attempt)

    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (systemd, a batch scheduler) stops an archive as Ctrl-C does: cleanly, resumable.
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if runner is None:
            result = run_archive(plan, _NoRunner(), out, make_task, retries=retries, progress=False, echo=echo)
        else:
            result = run_archive(plan, runner, out, make_task, retries=retries, progress=progress, echo=echo)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    written = write_index(out, result.rows, {
        "out": str(out), "model_id": model_id, "config_hash": cfg_hash, "runner": how,
        "totals": {"flights": len(plan.flights), **result.counts, "frames_replayed": result.frames,
                   "wall_s": round(result.wall_s, 2)}})
    return result, written


class _NoRunner:
    """Every flight is done already: nothing starts (no pool, no Ray)."""

    threads = 1

    def close(self) -> None:
        pass
