"""`--jobs N`: flights on N local worker processes, forked from a forkserver that has imported the engine,
NumPy, OpenCV and ONNX Runtime once (a spawned worker pays those imports itself: about a second of CPU each),
yet holds no thread, session or GStreamer state to inherit. The workers' thread pools are sized before any
backend runs. Where there is no forkserver (not Linux), workers are spawned."""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_mod
import signal
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from .flight import FlightTask, run_flight, thread_env

# Worker-process globals (set by _init_worker and the SIGINT handler; not plugin state).
_progress_queue = None
_stop_requested = False  # a Ctrl-C reached this worker: it starts no further flight
_in_flight = False  # a flight is running in this worker


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# Imported once in the forkserver; none of them starts a thread at import (GStreamer and the plugins load later,
# in each worker).
PRELOAD = ["numpy", "cv2", "onnxruntime", "firespotter.runtime.replay", "firespotter.archive.flight"]


def _context():
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")  # pragma: no cover - not Linux


def _init_worker(threads: int, progress_queue) -> None:
    global _progress_queue
    _progress_queue = progress_queue
    os.environ.update(thread_env(threads))
    # Ctrl-C reaches every process of the terminal's group (and the driver passes it on): a worker remembers it
    # and starts no further flight, even one already queued to it. While a replay runs, replay's own handler
    # stops its pipeline gracefully; outside that window (the pipeline being built) this one aborts the flight.
    signal.signal(signal.SIGINT, _on_sigint)


def _on_sigint(_signum, _frame) -> None:
    global _stop_requested
    _stop_requested = True
    if _in_flight:
        raise KeyboardInterrupt


def _interrupted(task: FlightTask) -> dict[str, Any]:
    return {"flight_id": task.flight_id, "status": "interrupted", "error": "stopped by a signal", "row": None,
            "packed": None}


def _run(worker: Callable[..., dict], task: FlightTask) -> dict[str, Any]:
    global _in_flight, _stop_requested
    if _stop_requested:
        return _interrupted(task)
    q = _progress_queue
    _in_flight = True
    try:
        result = worker(task, None if q is None else q.put_nowait)
    except KeyboardInterrupt:
        return _interrupted(task)
    finally:
        _in_flight = False
    if result.get("status") == "interrupted":  # replay's handler took the signal: remember it here too
        _stop_requested = True
    return result


class LocalRunner:
    kind = "local"

    def __init__(self, jobs: int, threads: int, worker: Callable[..., dict] | None = None):
        self.jobs = jobs
        self.threads = threads
        self._ctx = _context()
        self._queue = self._ctx.Queue()
        self._pool = self._new_pool()
        self._worker = worker or run_flight  # worker(task, report) -> result

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.jobs, mp_context=self._ctx, initializer=_init_worker,
                                   initargs=(self.threads, self._queue))

    def recover(self, exc: BaseException) -> None:
        """A worker that died (killed, out of memory) breaks the whole pool: the flights it took down are
        retried on a fresh one."""
        if isinstance(exc, BrokenProcessPool):
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    def describe(self) -> str:
        return f"{self.jobs} local worker{'s' if self.jobs != 1 else ''}, {self.threads} thread(s) each"

    def submit(self, task: FlightTask) -> Future:
        return self._pool.submit(_run, self._worker, task)

    def wait(self, handles: list[Future], timeout: float) -> list[tuple[Future, bool, Any]]:
        done, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        out = []
        for f in done:
            if f.cancelled():  # after Ctrl-C: never started
                out.append((f, False, InterruptedError("cancelled before it started")))
                continue
            exc = f.exception()
            out.append((f, exc is None, f.result() if exc is None else exc))
        return out

    def progress(self) -> list[tuple[str, int]]:
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue_mod.Empty:
                return items

    def interrupt(self) -> None:
        """Ask the replays to stop as Ctrl-C does (also when only this process got the signal)."""
        for p in list(getattr(self._pool, "_processes", {}).values()):
            try:
                os.kill(p.pid, signal.SIGINT)
            except OSError:
                pass

    def cancel(self, handles: list[Future]) -> None:
        for f in handles:
            f.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._queue.close()
