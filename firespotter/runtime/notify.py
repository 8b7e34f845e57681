"""The systemd notify protocol, spoken directly: datagrams to $NOTIFY_SOCKET (a path, or '@name' for an
abstract socket). Without NOTIFY_SOCKET every call is a no-op, so the same code runs outside systemd."""

from __future__ import annotations

import logging
import os
import socket

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

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
