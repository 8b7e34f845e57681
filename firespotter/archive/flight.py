"""One flight, run inside a worker (a local pool process or a Ray task): the replay itself, exactly as
`firespotter replay SOURCE --out DIR/<flight-id>` does it, then the flight's index row.

The worker never writes the done-marker: the driver does, once it holds the outputs (shared storage or
unpacked from the task's result), so a flight is marked done only where the index can see it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# What a replay writes into its folder; a rerun removes exactly these before replaying a flight again.
OUTPUTS = ("summary.json", "events.jsonl", "masks", "overlay.mp4", "report.html", "archive.json")
# Thread pools that size themselves from the core count when their library is imported.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class FlightTask:
    flight_id: str
    source: str
    out: str                 # DIR/<flight-id> as the driver sees it
    settings: Any            # runtime.config.Settings, source.uri already set to `source`
    limit: int | None
    overlay: bool
    report: bool
    threads: int             # intra-op threads of the backend in this worker
    ship: bool = False       # True: replay into a local temporary folder and return the outputs packed
    attempt: int = 1


def thread_env(threads: int) -> dict[str, str]:
    return {k: str(threads) for k in THREAD_ENV}


def clear_outputs(folder: Path) -> None:
    """Remove a previous (incomplete or out-of-date) replay's outputs, and nothing else of the folder."""
    for name in OUTPUTS:
        p = folder / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _with_threads(settings, threads: int):
    """Each worker's backend gets its share of the cores, unless the config already says how many (or the
    backend that runs the model takes no `threads`)."""
    from firespotter.runtime.assemble import model_and_backend
    from firespotter.runtime.options import option_keys
    from firespotter.runtime.plugins import get_registry

    m = settings.model
    if "threads" in m.backend_options or "threads" not in option_keys(model_and_backend(get_registry(), m)[2]):
        return settings
    backend_options = {**m.backend_options, "threads": threads}
    return settings.model_copy(update={"model": m.model_copy(update={"backend_options": backend_options})})


def _throttled(report: Callable[[tuple[str, int]], Any] | None, flight_id: str, every_s: float = 0.5):
    if report is None:
        return None, lambda: None
    last = [0.0, 0]

    def on_progress(frames: int) -> None:
        last[1] = frames
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            report((flight_id, frames))

    return on_progress, lambda: report((flight_id, last[1]))


def flight_row(folder: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The index row of one replayed flight, from its summary and events.jsonl."""
    fps = summary.get("source_fps") or None
    largest_px = 0
    largest_m2: float | None = None
    first = last = None
    geo = False
    events = folder / "events.jsonl"
    if events.is_file():
        with open(events, encoding="utf-8") as f:
            for line in f:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                regions = e.get("regions") or []
                if not regions:
                    continue
                seq = e.get("seq")
                first = seq if first is None else first
                last = seq
                largest_px = max(largest_px, sum(int(r.get("area_px") or 0) for r in regions))
                areas = [r["area_m2"] for r in regions if r.get("area_m2") is not None]
                if areas:
                    largest_m2 = max(largest_m2 or 0.0, float(sum(areas)))
                geo = geo or any(r.get("geo_polygon") for r in regions)

    def t(seq):
        return None if seq is None or not fps else round(seq / fps, 3)

    return {
        "frames": summary.get("frames"), "fire_frames": summary.get("fire_frames"),
        "alert_frames": summary.get("alert_frames"),
        "largest_fire_px": largest_px, "largest_fire_m2": None if largest_m2 is None else round(largest_m2, 1),
        "first_fire_frame": first, "last_fire_frame": last, "first_fire_s": t(first), "last_fire_s": t(last),
        "source_fps": fps, "geo": geo,
        "model": summary.get("model"), "model_id": summary.get("model_id"), "backend": summary.get("backend"),
        "precision_exec": summary.get("precision_exec"), "weight_bits": summary.get("weight_bits"),
        "simulated": summary.get("simulated"), "wall_s": summary.get("wall_s"), "fps": summary.get("fps"),
    }


def pack(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:  # PNG masks and H.264 are compressed already
        for p in sorted(folder.iterdir()):
            tar.add(p, arcname=p.name)
    return buf.getvalue()


def unpack(data: bytes, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(folder, filter="data")  # no absolute paths, no links out of the folder


def run_flight(task: FlightTask, report: Callable[[tuple[str, int]], Any] | None = None) -> dict[str, Any]:
    """Replay one flight. Returns {flight_id, status: done|failed|interrupted, error, row, packed}.
    Bad input (FirespotterError: a corrupt file, a source that fails) comes back as `failed`; anything else
    (a crash, a full disk) is raised, and the driver retries the flight."""
    from firespotter.runtime.errors import FirespotterError
    from firespotter.runtime.plugins import get_registry
    from firespotter.runtime.replay import failure, replay_one

    os.environ.update(thread_env(task.threads))
    on_progress, final = _throttled(report, task.flight_id)
    tmp = Path(tempfile.mkdtemp(prefix=f"firespotter-{task.flight_id}-")) if task.ship else None
    out = tmp / task.flight_id if tmp else Path(task.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        clear_outputs(out)
        cpu0 = time.process_time()  # every thread of this worker: what the flight cost in CPU
        try:
            summary = replay_one(_with_threads(task.settings, task.threads), out, get_registry(), limit=task.limit,
                                 overlay=task.overlay, report=task.report, where=task.source, progress=False,
                                 on_progress=on_progress)
        except FirespotterError as exc:
            return {"flight_id": task.flight_id, "status": "failed", "error": str(exc), "row": None, "packed": None}
        final()
        if summary.get("stopped_by_request"):
            return {"flight_id": task.flight_id, "status": "interrupted", "error": "stopped by a signal",
                    "row": None, "packed": None}
        error = failure(summary)
        row = flight_row(out, summary)
        row["cpu_s"] = round(time.process_time() - cpu0, 2)
        return {"flight_id": task.flight_id, "status": "failed" if error else "done", "error": error, "row": row,
                "packed": pack(out) if tmp else None}
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
