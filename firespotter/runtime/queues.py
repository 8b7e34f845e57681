"""Bounded queues between pipeline stages.

`leaky=True` (live mode): put never blocks; when full the oldest item is dropped and handed back so the
caller can count it. `leaky=False` (replay mode): put waits for room, so nothing is lost.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


class Closed(Exception):
    """Raised by a blocking put after the queue was aborted (shutdown past its deadline)."""


class StageQueue:
    def __init__(self, maxsize: int, *, leaky: bool):
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self.leaky = leaky
        self.max_depth = 0
        self._items: deque[Any] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._aborted = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any, *, force: bool = False) -> Any:
        """Enqueue. Returns the item dropped to make room (leaky queues), else None.
        force=True never drops and never waits (used for the end-of-stream marker)."""
        dropped = None
        with self._cond:
            if not force:
                if self.leaky:
                    if len(self._items) >= self.maxsize:
                        dropped = self._items.popleft()
                else:
                    while len(self._items) >= self.maxsize and not self._aborted:
                        self._cond.wait(0.1)
                    if self._aborted:
                        raise Closed()
            self._items.append(item)
            depth = len(self._items)
            if depth > self.max_depth and not force:  # the end marker is not a buffered item
                self.max_depth = depth
            self._cond.notify_all()
        return dropped

    def get(self, timeout: float | None = None) -> Any:
        """Next item; raises TimeoutError when none arrives within `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                self._cond.wait(remaining if remaining is not None else 0.5)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def abort(self) -> None:
        """Wake and fail every blocked producer: used when the drain deadline passed."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()
