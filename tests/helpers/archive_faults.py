"""A flight runner for the archive tests: the real one (firespotter.archive.flight.run_flight), except that a
flight whose id contains FAIL_ID crashes on its first attempt. The crash is an OSError, as a lost mount or a
full disk would give, so the driver's retry path runs for real; the second attempt replays the flight."""

from __future__ import annotations

from pathlib import Path

FAIL_ID = "seed-2"


def fail_once(task, report=None):
    from firespotter.archive.flight import run_flight

    if FAIL_ID in task.flight_id:
        marker = Path(task.out).parent / f".failed-once-{task.flight_id}"
        if not marker.exists():
            marker.write_text(f"attempt {task.attempt}\n")
            raise OSError(f"injected fault: {task.flight_id} attempt {task.attempt}")
    return run_flight(task, report)


def killed_once(task, report=None):
    """As fail_once, but the worker process itself dies (SIGKILL, as the kernel's OOM killer does)."""
    import os
    import signal

    from firespotter.archive.flight import run_flight

    if FAIL_ID in task.flight_id:
        marker = Path(task.out).parent / f".killed-once-{task.flight_id}"
        if not marker.exists():
            marker.write_text(f"attempt {task.attempt}\n")
            os.kill(os.getpid(), signal.SIGKILL)
    return run_flight(task, report)
