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

from firespotter.runtime.errors import FirespotterError

from .console import print_plain, rich_table
from .fleet import write_atomic
from .http import GroundViewServer
from .station import GroundStation

log = logging.getLogger("firespotter.listen")


class Transport(Protocol):
    def close(self) -> None: ...


class LinkError(FirespotterError):
    """The broker or peers were never reached: not a configuration error, so a service manager may retry."""

    exit_code = 1


def report_link(gs: GroundStation, where: str, changed: bool) -> None:
    """One line on stderr (and the log) each time the link comes up or goes down, naming the address."""
    if not changed:
        return
    link = gs.link
    if link["connected"]:
        print(f"listen: connected to {where}", file=sys.stderr, flush=True)
    else:
        print(f"listen: cannot reach {where}: {link['error'] or 'no answer'}; retrying", file=sys.stderr, flush=True)


def run_station(gs: GroundStation, conn: Transport, where: str, *, geojson: Path | None = None,
                duration: float | None = None, print_every: float = 5.0,
                view_server: GroundViewServer | None = None, connect_timeout_s: float | None = 10.0) -> None:
    """connect_timeout_s: give up (LinkError, exit status 1) when the link was never up within it; None waits
    for ever. A link lost later is only reported: the transport keeps reconnecting."""
    stop = threading.Event()
    t_start = time.monotonic()
    seen: tuple = (False, None)  # "connecting": whatever the transport found before the loop is reported in it
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
            poll = getattr(conn, "poll", None)
            if poll is not None:
                poll()
            state = (gs.link["connected"], gs.link["error"])
            report_link(gs, where, state != seen)
            seen = state
            if connect_timeout_s is not None and not gs.link["ever"] and now - t_start >= connect_timeout_s:
                raise LinkError(f"listen: could not reach {where} within {connect_timeout_s:g} s: "
                                f"{gs.link['error'] or 'no answer'}",
                                "start the broker or peer there, or pass --host/--port (--connect for zenoh); "
                                "--connect-timeout 0 waits for ever")
            if now - last_write >= 1.0:  # pruned by its window whether or not a file is written
                with gs.lock:  # only the copy under the lock: the union is computed outside it
                    changed = gs.fleet.prune() or gs.map_dirty
                    snap = gs.fleet.snapshot() if changed and geojson is not None else None
                    gs.map_dirty = False
                last_write = now
                if snap is not None:
                    write_map(geojson, snap.geojson())
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
                snap = gs.fleet.snapshot()
            write_map(geojson, snap.geojson())
        if live is None:
            print_plain(gs)
        print(f"listen: {gs.summary()}", file=sys.stderr, flush=True)


def write_map(path: Path, data: dict[str, Any]) -> None:
    try:
        write_atomic(path, data)
    except OSError as exc:
        log.error("cannot write the fleet map %s: %s", path, exc)
