"""null: accepts and counts results, writes nothing. For benchmarks and dry runs."""

from __future__ import annotations

from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import SinkSpec


class NullSink:
    needs_image = False

    def __init__(self, name: str = "null"):
        self.name = name
        self.count = 0

    def send(self, result) -> None:
        self.count += 1

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_null_sink(options=None, name: str = "null"):
    return NullSink(name)


@hookimpl
def register_sinks():
    return [SinkSpec("null", make_null_sink, "discards results (benchmarks, dry runs)")]
