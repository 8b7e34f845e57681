"""A base for sources that produce images one by one: sequence numbers, timestamps, state, pacing.

Subclasses implement `_images()` yielding (rgb_image, meta) pairs. In live mode a source with a known
rate (`fps`) is paced to it, as a camera would be; replay reads as fast as the consumer takes frames.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import numpy as np

from .protocols import SourceBase
from .types import Frame, SourceState


class FrameSource(SourceBase):
    carries_poses = False  # True: frames come with a Pose (Frame.pose), which implies the `geo` processor

    def __init__(self, source_id: str, *, live: bool = False, paced: bool | None = None):
        self.source_id = source_id
        self._state = SourceState.CONNECTING
        self._closed = False
        self._iterating = False
        self._released = False
        self._lock = threading.Lock()
        self.paced = live if paced is None else paced
        self.skipped: list[str] = []  # inputs that could not be read (reported, not fatal)

    @property
    def state(self) -> SourceState:
        return self._state

    def _images(self) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        period_ns = int(1e9 / self.fps) if (self.paced and self.fps) else 0
        next_due = time.monotonic_ns()
        seq = 0
        self._state = SourceState.STREAMING
        with self._lock:
            self._iterating = True
        try:
            for image, meta in self._images():
                if self._closed:
                    break
                if period_ns:
                    wait = next_due - time.monotonic_ns()
                    if wait > 0:
                        time.sleep(wait / 1e9)
                    next_due += period_ns
                yield Frame(
                    image=np.ascontiguousarray(image),
                    seq=seq,
                    t_capture_ns=time.monotonic_ns(),
                    t_wall_ns=time.time_ns(),
                    source_id=self.source_id,
                    meta=meta,
                )
                seq += 1
        except Exception:
            self._state = SourceState.FAILED
            raise
        finally:
            with self._lock:
                self._iterating = False
            self._release_once()
        if self._state is not SourceState.FAILED:
            self._state = SourceState.ENDED

    def _release(self) -> None:
        """Free what the subclass opened (a capture handle). Runs once, on the iterating thread if there is one."""

    def _release_once(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._release()

    def close(self) -> None:
        """Stop. Safe from any thread: the iterating thread notices, stops and releases."""
        self._closed = True
        with self._lock:
            iterating = self._iterating
        if not iterating:
            self._release_once()
