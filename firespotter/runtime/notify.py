"""The systemd notify protocol, spoken directly: datagrams to $NOTIFY_SOCKET (a path, or '@name' for an
abstract socket). Without NOTIFY_SOCKET every call is a no-op, so the same code runs outside systemd."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable

log = logging.getLogger("firespotter.notify")


class Notifier:
    def __init__(self, address: str | None = None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self.address = None
        self.sock = None
        if address:
            # '@' marks Linux's abstract namespace, which the socket API spells with a leading NUL.
            self.address = "\0" + address[1:] if address.startswith("@") else address
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_s = self._watchdog_interval()

    @staticmethod
    def _watchdog_interval() -> float | None:
        """WatchdogSec as systemd passes it (WATCHDOG_USEC, for our PID); None when no watchdog is set."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 1e6
        except ValueError:
            return None

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, *fields: str) -> bool:
        if self.sock is None:
            return False
        try:
            self.sock.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError as exc:  # systemd gone or socket full: never fatal
            log.debug("sd_notify failed: %s", exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *( [f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        return self.send("RELOADING=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask systemd for `seconds` more from now before the start (or stop) times out."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class StartExtender:
    """Keeps systemd's TimeoutStartSec from killing a daemon that is still starting for a good reason (a camera
    that boots late, a first TensorRT engine build): until stop(), every `period_s` it extends the timeout by
    3 periods and says why in STATUS=. After `limit_s` it stops extending and logs an error, so a start that
    never finishes still ends (systemd's timeout then applies) instead of hanging for ever."""

    def __init__(self, notifier: Notifier, limit_s: float, status: Callable[[], str], period_s: float = 20.0):
        self.notifier = notifier
        self.limit_s = limit_s
        self.status = status
        self.period_s = max(0.2, min(period_s, limit_s / 3))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="start-extender", daemon=True)

    def start(self) -> "StartExtender":
        if self.notifier.enabled:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            waited = time.monotonic() - t0
            if waited >= self.limit_s:
                log.error("still not ready after %.0f s ([daemon] start_timeout_s): no more start-timeout "
                          "extensions; systemd stops the service if it does not become ready", waited)
                return
            why = self.status()
            self.notifier.extend_timeout(3 * self.period_s)
            self.notifier.status(f"starting ({waited:.0f} s): {why}")
            self._stop.wait(self.period_s)
