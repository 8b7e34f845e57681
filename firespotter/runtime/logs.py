"""Logging fit for journald: one line per event, no timestamps (journald adds them), and repeated errors
rate-limited with a count instead of flooding the journal."""

from __future__ import annotations

import logging
import sys
import time


class RateLimit(logging.Filter):
    """Lets the first `burst` records of one (logger, message template) through per `window_s`, then one summary
    line with the number suppressed when the window ends and the message shows up again."""

    def __init__(self, window_s: float = 10.0, burst: int = 3):
        super().__init__()
        self.window_s = window_s
        self.burst = burst
        self._seen: dict[tuple[str, str], list[float | int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] > self.window_s:
            suppressed = int(entry[2]) if entry else 0
            self._seen[key] = [now, 1, 0]
            if suppressed:
                record.msg = f"{record.msg} (and {suppressed} more like it in the last {self.window_s:g} s)"
            return True
        entry[1] += 1
        if entry[1] <= self.burst:
            return True
        entry[2] += 1
        return False


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
