"""The ground station's main loop: until a signal or the duration, keep the fleet map file current (atomically,
at most once a second, when it changed) and show the table; on the way out close the transport and the ground
view, write the map a last time and print the summary."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from .console import print_plain, rich_table
from .fleet import write_atomic
from .http import GroundViewServer
from .station import GroundStation

log = logging.getLogger("firespotter.listen")


class Transport(Protocol):
    def close(self) -> None: ...


def run_station(gs: GroundStation, conn: Transport, where: str, *, geojson: Path | None = None,
                duration: float | None = None, print_every: float = 5.0,
                view_server: GroundViewServer | None = None) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, lambda *_: stop.set())
        except ValueError:  # not the main thread
            pass
    t_end = None if duration is None else time.monotonic() + duration
    live = None
    if sys.stdout.isatty():
        from rich.live import Live

        live = Live(rich_table(gs, where), refresh_per_second=2, transient=False)
        live.start()
    last_print = 0.0
    last_write = 0.0
    try:
        while not stop.is_set() and (t_end is None or time.monotonic() < t_end):
            stop.wait(0.2)
            now = time.monotonic()
            if now - last_write >= 1.0:  # pruned by its window whether or not a file is written
                with gs.lock:
                    changed = gs.fleet.prune() or gs.map_dirty
                    data = gs.fleet.geojson() if changed and geojson is not None else None
                    gs.map_dirty = False
                last_write = now
                if data is not None:
                    write_map(geojson, data)
            if live is not None:
                live.update(rich_table(gs, where))
            elif now - last_print >= print_every and gs.drones:
                print_plain(gs)
                last_print = now
    finally:
        if live is not None:
            live.stop()
        try:
            conn.close()
        except Exception as exc:
            log.debug("close: %s", exc)
        gs.stop()
        if view_server is not None:
            view_server.close()
        if geojson is not None:
            with gs.lock:
                gs.fleet.prune()
                data = gs.fleet.geojson()
            write_map(geojson, data)
        if live is None:
            print_plain(gs)
        print(f"listen: {gs.summary()}", file=sys.stderr, flush=True)


def write_map(path: Path, data: dict[str, Any]) -> None:
    try:
        write_atomic(path, data)
    except OSError as exc:
        log.error("cannot write the fleet map %s: %s", path, exc)
