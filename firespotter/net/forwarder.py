"""The thread that drains an Outbox through a transport. A resend carries the same bytes, hence the same id,
so receivers drop duplicates."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Iterable

from .outbox import Outbox, OutboxItem

log = logging.getLogger("firespotter.outbox")


class Forwarder:
    """Drains an Outbox through a transport: oldest first, at most `window` in flight, resend after
    `resend_after_s` without an ack (doubling per attempt up to `max_backoff_s`), delete on ack."""

    def __init__(self, outbox: Outbox, send: Callable[[OutboxItem], None], *, ready: Callable[[], bool],
                 window: int = 32, resend_after_s: float = 10.0, max_backoff_s: float = 120.0, name: str = "forwarder",
                 collect_acks: Callable[[], None] | None = None):
        self.outbox = outbox
        self.collect_acks = collect_acks  # called on the forwarder thread before acks are applied
        self.send = send
        self.ready = ready
        self.window = max(1, window)
        self.resend_after_ns = int(resend_after_s * 1e9)
        self.max_backoff_ns = int(max_backoff_s * 1e9)
        self.name = name
        self.sent = 0
        self.resent = 0
        self.acked_total = 0
        self.send_errors = 0
        self.last_error: str | None = None
        self._inflight: dict[str, int] = {}  # id -> resend deadline (monotonic ns)
        self._attempts: dict[str, int] = {}
        self._acks: deque[str] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"forward-{name}", daemon=True)
        self.ack_listeners: list[Callable[[list[str]], None]] = []

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def acked(self, ids: Iterable[str]) -> None:
        """Thread-safe; called from transport callbacks."""
        self._acks.extend(ids)
        self._wake.set()

    def reset_backoff(self) -> None:
        """The link came back (a subscriber appeared, a reconnect): resend what is in flight now."""
        self._inflight.clear()
        self._wake.set()

    def drained(self) -> bool:
        return self.outbox.pending() == 0 and not self._acks

    def wait_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.drained():
                return True
            self._wake.set()
            time.sleep(0.02)
        return self.drained()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._apply_acks()

    def _apply_acks(self) -> None:
        if self.collect_acks is not None:
            self.collect_acks()
        batch = []
        while self._acks:
            try:
                batch.append(self._acks.popleft())
            except IndexError:
                break
        if batch:
            self.outbox.ack(batch)
            self.acked_total += len(batch)
            for i in batch:
                self._inflight.pop(i, None)
                self._attempts.pop(i, None)
            for fn in self.ack_listeners:
                try:
                    fn(batch)
                except Exception as exc:
                    log.debug("ack listener failed: %s", exc)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            try:
                self._apply_acks()
                now = time.monotonic_ns()
                for i, deadline in list(self._inflight.items()):
                    if deadline <= now:
                        del self._inflight[i]  # due again
                if not self.ready():
                    continue
                free = self.window - len(self._inflight)
                if free <= 0:
                    continue
                items = self.outbox.due(free, exclude=self._inflight.keys())
                for item in items:
                    if self._stop.is_set() or not self.ready():
                        break
                    n = self._attempts.get(item.id, 0)
                    self.send(item)
                    self._attempts[item.id] = n + 1
                    if n:
                        self.resent += 1
                    self.sent += 1
                    wait = min(self.resend_after_ns * (2 ** min(n, 16)), max(self.max_backoff_ns, self.resend_after_ns))
                    self._inflight[item.id] = time.monotonic_ns() + wait
                if len(items) == free:
                    self._wake.set()  # more may be waiting
                backoff = 0.1
            except Exception as exc:  # a transport that raises: back off, keep the messages
                self.send_errors += 1
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                if self.send_errors <= 3 or self.send_errors % 100 == 0:
                    log.warning("%s: send failed (%d so far), retrying in %.1f s: %s", self.name, self.send_errors,
                                backoff, self.last_error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
