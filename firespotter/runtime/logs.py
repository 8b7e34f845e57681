"""Logging fit for journald: one line per event, no timestamps (journald adds them), and repeated errors
rate-limited with a count instead of flooding the journal.

When stderr is connected to the journal (systemd sets $JOURNAL_STREAM to its device:inode), each line starts
with its syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), which journald strips and
records, so `journalctl -u firespotter -p err` shows the errors only; and info lines (readiness, connections)
are kept, since the journal is where an operator reads them. In a terminal the default level stays warning.
"""

from __future__ import annotations

import logging
import os
import sys
import time

# logging level -> syslog priority (sd-daemon(3) prefixes)
PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def stderr_is_journal() -> bool:
    """True when stderr is the stream systemd connected to journald (not merely a child's inherited variable)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        # every line of a multi-line message gets the prefix, or journald files the rest at the default priority
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines() or [""])


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
    journal = stderr_is_journal()
    fmt = "%(levelname)s %(name)s: %(message)s"
    handler.setFormatter(JournalFormatter(fmt) if journal else logging.Formatter(fmt))
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO if journal else logging.WARNING)
