"""Progress for long runs: a rich bar (frames, fps, ETA) on a terminal, a plain line every few seconds
otherwise (CI logs, systemd journal)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int | None, limit: int | None = None, *, stream=None, every_s: float = 5.0,
                 enabled: bool = True):
        self.label = label
        self.enabled = enabled  # off under systemd: STATUS= and metrics say it there
        self.total = min(x for x in (total, limit) if x is not None) if (total or limit) else None
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.rich = None
        self._task = None
        self._t0 = 0.0
        self._last_line = 0.0

    def __enter__(self) -> "Progress":
        self._t0 = self._last_line = time.monotonic()
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.rich = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[fps]:.1f} fps"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(file=self.stream), transient=True,
            )
            self.rich.__enter__()
            self._task = self.rich.add_task(self.label, total=self.total, fps=0.0)
        return self

    def update(self, frames: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.rich is not None:
            if now - self._last_line >= 0.1:  # rich refreshes on its own; keep the hot path cheap
                self._last_line = now
                self.rich.update(self._task, completed=frames, fps=frames / max(now - self._t0, 1e-9))
            return
        if now - self._last_line >= self.every_s:
            self._last_line = now
            fps = frames / max(now - self._t0, 1e-9)
            of = f"/{self.total}" if self.total else ""
            eta = f", ETA {(self.total - frames) / fps:.0f} s" if self.total and fps > 0 else ""
            print(f"{self.label}: {frames}{of} frames, {fps:.1f} fps{eta}", file=self.stream, flush=True)

    def __exit__(self, *exc) -> None:
        if self.rich is not None:
            self.rich.__exit__(*exc)
