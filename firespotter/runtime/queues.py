"""Bounded queues between pipeline stages.

`leaky=True` (live mode): put never blocks; when full the oldest item is dropped and handed back so the
caller can count it. `leaky=False` (replay mode): put waits for room, so nothing is lost.

Thread wake-ups, not queue operations, are what cost most per frame in CPython (each one is a GIL hand-off
that stalls the inference thread mid-model). So a consumer can ask to be woken only once `wake_at` items
wait (or `linger_s` passed), and a blocked producer is woken only when the queue has drained to half.
Replay uses both; live mode wakes on every item to keep latency low.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


class Closed(Exception):
    """Raised by a blocking put after the queue was aborted (shutdown past its deadline)."""


class StageQueue:
    def __init__(self, maxsize: int, *, leaky: bool, wake_at: int = 1, linger_s: float = 0.05):
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self.leaky = leaky
        self.wake_at = max(1, min(wake_at, maxsize))
        self.linger_s = linger_s
        self.max_depth = 0
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._producers_waiting = 0
        self._closing = False  # an end marker arrived: wake the consumer for whatever is left
        self._aborted = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any, *, force: bool = False) -> Any:
        """Enqueue. Returns the item dropped to make room (leaky queues), else None.
        force=True never drops and never waits (used for the end-of-stream marker)."""
        dropped = None
        with self._lock:
            if force:
                self._closing = True
            elif self.leaky:
                if len(self._items) >= self.maxsize:
                    dropped = self._items.popleft()
            else:
                while len(self._items) >= self.maxsize and not self._aborted:
                    self._producers_waiting += 1
                    self._not_full.wait(0.1)
                    self._producers_waiting -= 1
                if self._aborted:
                    raise Closed()
            self._items.append(item)
            depth = len(self._items)
            if depth > self.max_depth and not force:  # the end marker is not a buffered item
                self.max_depth = depth
            if depth >= self.wake_at or self._closing:
                self._not_empty.notify()
        return dropped

    def get_many(self, max_items: int = 64) -> list[Any]:
        """Wait for items (at least `wake_at`, or fewer after `linger_s`) and take up to `max_items`."""
        with self._lock:
            if len(self._items) < self.wake_at and not self._closing:
                deadline = time.monotonic() + self.linger_s
                while not self._items or (len(self._items) < self.wake_at and not self._closing):
                    remaining = deadline - time.monotonic()
                    if self._items and remaining <= 0:
                        break
                    self._not_empty.wait(remaining if remaining > 0 else 0.5)
            n = min(max_items, len(self._items))
            batch = [self._items.popleft() for _ in range(n)]
            if self._producers_waiting and len(self._items) <= self.maxsize // 2:
                self._not_full.notify_all()
            return batch

    def get(self, timeout: float | None = None) -> Any:
        """One item; raises TimeoutError when none arrives within `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._items:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                self._not_empty.wait(remaining if remaining is not None else 0.5)
            item = self._items.popleft()
            if self._producers_waiting and len(self._items) <= self.maxsize // 2:
                self._not_full.notify_all()
            return item

    def abort(self) -> None:
        """Wake and fail every blocked producer: used when the drain deadline passed."""
        with self._lock:
            self._aborted = True
            self._not_full.notify_all()
            self._not_empty.notify_all()
