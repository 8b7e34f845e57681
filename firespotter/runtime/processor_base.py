"""A base for processors: the members the engine calls that a processor may not need (stats, close)."""

from __future__ import annotations

from typing import Any

from .types import Result


class ProcessorBase:
    """Subclass and implement `process(result)`; override `stats()` to report counters in the run's summary
    (`processors.<name>`) and `close()` to release files or threads. The post thread calls all three."""

    def process(self, result: Result) -> None:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass
