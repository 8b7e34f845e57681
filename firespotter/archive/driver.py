"""The archive driver: submit every flight still to do, retry failures a bounded number of times, show
progress over flights and frames, stop cleanly on Ctrl-C, mark finished flights done, and say what happened."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .flight import FlightTask, clear_outputs, unpack
from .plan import Flight, Plan, write_marker

log = logging.getLogger("firespotter.archive")
GRACE_S = 60.0  # after Ctrl-C: how long running flights get to stop and flush their sinks


@dataclass
class ArchiveResult:
    rows: list[dict[str, Any]]
    wall_s: float
    interrupted: bool = False
    frames: int = 0
    counts: dict[str, int] = field(default_factory=dict)


class ArchiveProgress:
    """Two bars on a terminal (flights done of all, frames replayed), a plain line every few seconds otherwise."""

    def __init__(self, total: int, done: int, *, enabled: bool = True, stream=None, every_s: float = 5.0):
        self.total, self.done, self.frames = total, done, 0
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.rich = None
        self._t0 = self._last = 0.0

    def __enter__(self) -> "ArchiveProgress":
        self._t0 = self._last = time.monotonic()
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.rich = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                 console=Console(file=self.stream), transient=True)
            self.rich.__enter__()
            self._flights = self.rich.add_task("flights", total=self.total, completed=self.done, rate="")
            self._frames = self.rich.add_task("frames", total=None, rate="")
        return self

    def update(self, *, done: int | None = None, frames: int | None = None) -> None:
        if done is not None:
            self.done = done
        if frames is not None:
            self.frames = frames
        if not self.enabled:
            return
        now = time.monotonic()
        fps = self.frames / max(now - self._t0, 1e-9)
        if self.rich is not None:
            self.rich.update(self._flights, completed=self.done)
            self.rich.update(self._frames, completed=self.frames, rate=f"{fps:.1f} fps")
        elif now - self._last >= self.every_s or done is not None:
            self._last = now
            print(f"archive: {self.done}/{self.total} flights, {self.frames} frames, {fps:.1f} fps",
                  file=self.stream, flush=True)

    def __exit__(self, *exc) -> None:
        if self.rich is not None:
            self.rich.__exit__(*exc)


def _error_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc  # Ray wraps what the task raised
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}".strip(": ")


def _base_row(f: Flight, out: Path) -> dict[str, Any]:
    return {"flight_id": f.flight_id, "input": f.source, "input_hash": f.input_hash, "telemetry": f.telemetry,
            "report": f"{f.flight_id}/report.html", "folder": str(out / f.flight_id)}


def run_archive(plan: Plan, runner, out: Path, make_task: Callable[[Flight, int], FlightTask], *, retries: int,
                progress: bool = True, echo: Callable[[str], None] = print) -> ArchiveResult:
    t0 = time.monotonic()
    rows: dict[str, dict[str, Any]] = {}
    for f, marker in plan.done:
        rows[f.flight_id] = {**_base_row(f, out), **(marker.get("row") or {}), "status": "skipped",
                             "attempts": 0, "error": None}
    for f in plan.unreadable:
        rows[f.flight_id] = {**_base_row(f, out), "status": "failed", "attempts": 0, "error": f.error}
        echo(f"failed      {f.flight_id}: {f.error}")
    running: dict[Any, tuple[Flight, int]] = {}
    frames: dict[str, int] = {}
    finished = len(plan.done) + len(plan.unreadable)
    bar = ArchiveProgress(len(plan.flights), finished, enabled=progress)

    def settle(handle, ok: bool, value: Any) -> None:
        nonlocal finished
        f, attempt = running.pop(handle)
        row = {**_base_row(f, out), "attempts": attempt}
        if not ok:
            runner.recover(value)
            if attempt <= retries and not interrupted:
                log.warning("flight %s failed (attempt %d of %d): %s; retrying", f.flight_id, attempt, retries + 1,
                            _error_line(value))
                running[runner.submit(make_task(f, attempt + 1))] = (f, attempt + 1)
                return
            row.update(status="interrupted" if interrupted else "failed", error=_error_line(value))
        elif value["status"] == "done":
            folder = out / f.flight_id
            if value.get("packed") is not None:  # outputs came back through the driver
                folder.mkdir(parents=True, exist_ok=True)
                clear_outputs(folder)
                unpack(value["packed"], folder)
                _fix_out(folder)
            row.update(value["row"], status="replayed", error=None)
            frames[f.flight_id] = value["row"].get("frames") or 0
            write_marker(folder, {"flight_id": f.flight_id, "input": f.source, "input_hash": f.input_hash,
                                  "input_stat": f.stat,
                                  "model_id": plan.model_id, "config_hash": plan.config_hash, "attempts": attempt,
                                  "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                  "row": value["row"]})
        else:  # failed on bad input (not retried: it would fail the same way) or interrupted
            row.update(value.get("row") or {}, status=value["status"], error=value.get("error"))
        rows[f.flight_id] = row
        finished += 1
        if row["status"] == "failed":
            echo(f"failed      {f.flight_id}: {row['error']}")
        bar.update(done=finished, frames=sum(frames.values()))

    interrupted = False
    try:
        with bar:
            try:
                for f in plan.todo:
                    running[runner.submit(make_task(f, 1))] = (f, 1)
                while running:
                    for handle, ok, value in runner.wait(list(running), timeout=0.5):
                        settle(handle, ok, value)
                    for fid, n in runner.progress():
                        frames[fid] = n
                    bar.update(frames=sum(frames.values()))
            except KeyboardInterrupt:
                interrupted = True
                echo(f"interrupted: stopping {len(running)} running flight(s); Ctrl-C again to abandon them")
                runner.interrupt()
                runner.cancel(list(running))
                deadline = time.monotonic() + GRACE_S
                while running and time.monotonic() < deadline:
                    for handle, ok, value in runner.wait(list(running), timeout=0.5):
                        settle(handle, ok, value)
    finally:
        for handle, (f, attempt) in list(running.items()):
            rows[f.flight_id] = {**_base_row(f, out), "attempts": attempt, "status": "interrupted",
                                 "error": "stopped before it finished"}
        runner.close()
    for f in plan.flights:  # never started (interrupted before their turn)
        rows.setdefault(f.flight_id, {**_base_row(f, out), "attempts": 0, "status": "interrupted",
                                      "error": "not started"})
    ordered = [rows[f.flight_id] for f in plan.flights]
    counts: dict[str, int] = {}
    for r in ordered:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    replayed = sum(r.get("frames") or 0 for r in ordered if r["status"] == "replayed")
    return ArchiveResult(ordered, time.monotonic() - t0, interrupted, replayed, counts)


def _fix_out(folder: Path) -> None:
    """summary.json names the folder it was written to: the worker's temporary one, until here."""
    import json

    p = folder / "summary.json"
    try:
        summary = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    summary["out"] = str(folder)
    p.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
