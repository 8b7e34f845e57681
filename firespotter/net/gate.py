"""Which results become `fire` messages: a rate limit that lets material changes (and the end of a fire) through."""

from __future__ import annotations

import time

import numpy as np

from firespotter.runtime.types import AlertLevel, Result

from .wire import ALERT_RANK


class FireGate:
    """Decides which results become `fire` messages: at most one every `min_interval_ms` per drone, unless
    the fire changed materially since the last one sent (alert level, number of regions, total area or total
    perimeter by more than `change_frac`), and one message with no regions when a fire disappears (so a
    ground station sees it end). Results below `min_alert` never send, except that "fire ended" message."""

    def __init__(self, min_interval_ms: float = 1000.0, change_frac: float = 0.2, min_alert: str = "suspect"):
        self.min_interval_ns = int(min_interval_ms * 1e6)
        self.change_frac = change_frac
        self.min_rank = ALERT_RANK[min_alert]
        self._last_ns: int | None = None
        self._last: tuple[int, int, float, float] | None = None  # alert rank, regions, area, perimeter
        self.suppressed = 0

    @staticmethod
    def _signature(result: Result) -> tuple[int, int, float, float]:
        import cv2

        area = float(sum(r.area_px for r in result.regions))
        perim = 0.0
        for r in result.regions:
            poly = np.asarray(r.polygon, np.int32).reshape(-1, 1, 2)
            if len(poly) >= 2:
                perim += cv2.arcLength(poly, True)
        return ALERT_RANK[AlertLevel(result.alert).value], len(result.regions), area, perim

    def _changed(self, sig: tuple[int, int, float, float]) -> bool:
        last = self._last
        if last is None:
            return True
        if sig[0] != last[0] or sig[1] != last[1]:
            return True
        for i in (2, 3):
            if abs(sig[i] - last[i]) > self.change_frac * max(last[i], 1.0):
                return True
        return False

    def admit(self, result: Result, now_ns: int | None = None) -> bool:
        now = time.monotonic_ns() if now_ns is None else now_ns
        sig = self._signature(result)
        active = sig[0] >= self.min_rank and sig[1] > 0
        if not active:
            was_active = self._last is not None and self._last[1] > 0
            if was_active:  # the fire ended (or fell below min_alert): say so once
                self._last, self._last_ns = (sig[0], 0, 0.0, 0.0), now
                return True
            return False
        due = self._last_ns is None or now - self._last_ns >= self.min_interval_ns
        if due or self._changed(sig):
            self._last, self._last_ns = sig, now
            return True
        self.suppressed += 1
        return False
