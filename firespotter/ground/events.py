"""Server-Sent Events for the ground view: encoded events fanned out to every connected page."""

from __future__ import annotations

import queue
import threading
from typing import Any

from .export import to_json


MAX_CLIENT_BYTES = 16 << 20  # queued for one page; a page that falls further behind is dropped


class _Client:
    def __init__(self, maxsize: int):
        self.q: queue.Queue[bytes] = queue.Queue(maxsize)
        self.evicted = False
        self.queued_bytes = 0
        self.lock = threading.Lock()

    def offer(self, payload: bytes) -> bool:
        """Queue an event; False when the page is too far behind (by count or by bytes)."""
        with self.lock:
            if self.queued_bytes + len(payload) > MAX_CLIENT_BYTES:
                return False
            try:
                self.q.put_nowait(payload)
            except queue.Full:
                return False
            self.queued_bytes += len(payload)
            return True

    def take(self, timeout: float) -> bytes:
        item = self.q.get(timeout=timeout)
        with self.lock:
            self.queued_bytes -= len(item)
        return item


class EventBus:
    """Fan-out of encoded SSE events to connected pages; a page that cannot keep up is dropped (its
    EventSource reconnects and starts again from a snapshot)."""

    def __init__(self, max_clients: int = 32, queue_size: int = 500):
        self.max_clients = max_clients
        self.queue_size = queue_size
        self.clients: set[_Client] = set()
        self.lock = threading.Lock()

    def subscribe(self) -> _Client | None:
        with self.lock:
            if len(self.clients) >= self.max_clients:
                return None
            c = _Client(self.queue_size)
            self.clients.add(c)
            return c

    def unsubscribe(self, c: _Client) -> None:
        with self.lock:
            self.clients.discard(c)

    def publish(self, event: str, data: Any) -> None:
        with self.lock:
            if not self.clients:
                return
            clients = list(self.clients)
        payload = sse(event, data)
        for c in clients:
            if not c.offer(payload):
                c.evicted = True
                self.unsubscribe(c)


def sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode("ascii") + b"\ndata: " + to_json(data) + b"\n\n"
