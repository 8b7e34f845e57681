"""The Python API (docs/api.md): `firespotter.open(...)` for scripts and notebooks, `firespotter.pipeline(...)`
with callbacks for live use.

A thin layer on the engine: the arguments become the same validated Settings a TOML file gives, the pipeline
is the one `firespotter replay` and `run` assemble (`runtime.assemble.build_pipeline`), and Results reach
Python through an extra sink. Nothing here knows a model, a backend or a transport.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from firespotter.runtime.assemble import build_pipeline, with_options
from firespotter.runtime.config import Settings, load_settings, parse_settings
from firespotter.runtime.errors import ConfigError
from firespotter.runtime.plugins import get_registry
from firespotter.runtime.protocols import SinkBase
from firespotter.runtime.types import AlertLevel, Result

__all__ = ["open", "pipeline", "Results", "LivePipeline", "settings_for"]

_END = object()


def settings_for(source: str, *, model: str | None = None, backend: str | None = None,
                 precision: str | None = None, adapt: str | None = None, config: str | Path | None = None,
                 mode: str | None = None, threshold: float | None = None, device: str | None = None,
                 drone_id: str | None = None, sinks: Sequence[Mapping[str, Any]] = (),
                 camera: Mapping[str, Any] | None = None, telemetry: Mapping[str, Any] | None = None,
                 source_options: Mapping[str, Any] | None = None, backend_options: Mapping[str, Any] | None = None,
                 **options: Any) -> Settings:
    """The Settings the API runs with: `config` (a TOML file, with its environment overrides) or the defaults,
    then every argument given. `options`: each goes to the table of whoever declares it, the model's ([model]
    options) or, for any other, the backend's ([model] backend_options)."""
    base = load_settings(config).model_dump(mode="json", exclude_none=True)
    base.setdefault("source", {})["uri"] = str(source)
    given = {"model": {"name": model, "backend": backend, "precision": precision, "threshold": threshold,
                       "device": device},
             "runtime": {"mode": mode, "drone_id": drone_id}, "adapt": {"name": adapt}}
    for table, keys in given.items():
        for key, value in keys.items():
            if value is not None:
                base.setdefault(table, {})[key] = value
    if backend_options:
        base.setdefault("model", {}).setdefault("backend_options", {}).update(backend_options)
    if source_options:
        base["source"].setdefault("options", {}).update(source_options)
    if sinks:
        base["sinks"] = list(base.get("sinks", [])) + [dict(s) for s in sinks]
    if camera is not None:
        base["camera"] = dict(camera)
    if telemetry is not None:
        base["telemetry"] = dict(telemetry)
    settings = parse_settings(base, "firespotter.open()" if config is None else f"{config} + firespotter.open()")
    if options:
        settings = settings.model_copy(update={"model": with_options(get_registry(), settings.model, options)})
    return settings


class _InProcessSink(SinkBase):
    """A sink whose results stay in this process: nothing buffered to flush, nothing to close."""

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class _QueueSink(_InProcessSink):
    """Hands each Result to the iterating thread. The queue is bounded, so a replay runs no faster than the
    loop that consumes it (nothing is dropped); once the consumer has gone, results are discarded."""

    def __init__(self, needs_image: bool, maxsize: int = 8):
        self.name = "python"
        self.needs_image = needs_image
        self.queue: queue.Queue = queue.Queue(maxsize)
        self.abandoned = threading.Event()

    def _put(self, item: Any) -> None:
        while not self.abandoned.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def send(self, result: Result) -> None:
        self._put(result)


class _BackgroundRun:
    """A built pipeline run on its own thread: `summary` once it has ended, `error` if it raised."""

    def __init__(self, settings: Settings, sink: tuple[str, Any], *, limit: int | None, where: str,
                 thread_name: str, extra_sinks: Sequence[tuple[str, Any]] = ()):
        self.settings = settings
        self._pipeline = build_pipeline(settings, get_registry(), limit=limit, where=where,
                                        extra_sinks=[sink, *extra_sinks])
        self.summary: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    @property
    def pipeline(self):
        """The engine's Pipeline (runtime/pipeline.py): `describe()`, counters, `request_stop()`."""
        return self._pipeline

    def _run(self) -> None:
        try:
            self.summary = self._pipeline.run()
        except BaseException as exc:  # handed to whoever waits for the run, who raises it
            self.error = exc
        finally:
            self._ended()

    def _ended(self) -> None:
        """Called on the run's thread once it has ended, whatever the outcome."""


class Results(_BackgroundRun):
    """What `firespotter.open` returns: an iterator of frozen Results (numpy `mask`, `regions` with pixel and
    geo polygons and their scores, `alert`, `fire_score`, `pose`, timings), and a context manager that stops
    the pipeline and closes the source. `summary` holds the run's summary once it has ended."""

    def __init__(self, settings: Settings, *, images: bool = False, limit: int | None = None,
                 extra_sinks: Sequence[tuple[str, Any]] = ()):
        self._sink = _QueueSink(images)
        super().__init__(settings, ("python", self._sink), limit=limit, where="firespotter.open()",
                         thread_name="firespotter-api", extra_sinks=extra_sinks)
        self._started = False
        self._closed = False

    def _ended(self) -> None:
        self._sink._put(_END)

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def __iter__(self) -> Iterator[Result]:
        self._start()
        finished = False
        try:
            while True:
                item = self._sink.queue.get()
                if item is _END:
                    finished = True
                    break
                yield item
        finally:
            if not finished:  # the loop ended early (break, an exception): stop and close, as `with` would
                self.close()
        self._thread.join()
        if self.error is not None:
            raise self.error

    def close(self, timeout: float | None = None) -> dict[str, Any] | None:
        """Stop reading the source, let the pipeline drain, close the source and the sinks. Idempotent."""
        if self._closed:
            return self.summary
        self._closed = True
        if not self._started:
            # never iterated: nothing ran, but the source and the sinks are open
            self._pipeline.request_stop()
            self._started = True
            self._thread.start()
        else:
            self._pipeline.request_stop()
        self._sink.abandoned.set()  # a consumer that left early no longer holds the pipeline back
        while True:
            try:
                self._sink.queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout if timeout is not None else self.settings.runtime.drain_timeout_s + 5)
        return self.summary

    def __enter__(self) -> "Results":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self):  # a generator dropped mid-way must not leave a camera open
        try:
            if self._started and not self._closed:
                self.close(timeout=0)
        except Exception:
            pass


def open(source: str, *, model: str | None = None, backend: str | None = None, precision: str | None = None,
         adapt: str | None = None, images: bool = False, limit: int | None = None, **kwargs: Any) -> Results:
    """Run firespotter on `source` (a video path, `dir://`, `rtsp://`, `test://`, ... as on the command line)
    and iterate over its Results.

        for result in firespotter.open("flight.mp4", model="fireseg-lite", precision="int8"):
            print(result.seq, result.alert.value, len(result.regions))

    model, backend, precision, adapt: as `--model`, `--backend`, `--precision`, `--adapt` (default: the
    config's, or fireseg-lite on the best available backend at fp32, no adaptation). images: keep each frame's
    RGB image in `result.image`. limit: stop after this many frames. Other keywords: `config` (a TOML file),
    `mode` ("replay", the default: every frame in order; or "live": drop frames to keep up), `threshold`,
    `device`, `drone_id`, `sinks` (a list of [[sinks]] tables as dicts), `camera`, `telemetry`,
    `source_options`, `backend_options`; any other keyword is an option of the model ([model] options) when the
    model declares it, else of the backend ([model] backend_options).
    """
    settings = settings_for(source, model=model, backend=backend, precision=precision, adapt=adapt, **kwargs)
    return Results(settings, images=images, limit=limit)


class _CallbackSink(_InProcessSink):
    """Calls the user's callbacks on the pipeline's own sink thread; an exception is counted and logged by the
    pipeline, and the next result is delivered as usual."""

    def __init__(self, on_result: Callable[[Result], Any] | None, on_alert: Callable[[Result], Any] | None,
                 needs_image: bool):
        self.name = "callbacks"
        self.needs_image = needs_image
        self.on_result = on_result
        self.on_alert = on_alert

    def send(self, result: Result) -> None:
        if self.on_result is not None:
            self.on_result(result)
        if self.on_alert is not None and result.alert == AlertLevel.FIRE:
            self.on_alert(result)


class LivePipeline(_BackgroundRun):
    """What `firespotter.pipeline` returns: `start()` runs it in the background, `join()` waits for the end,
    `stop()` ends it (drained, sinks flushed), `summary` is the run's summary once it has ended. Also a
    context manager (start on enter, stop on exit)."""

    def __init__(self, settings: Settings, *, on_result=None, on_alert=None, on_end=None, images: bool = False,
                 limit: int | None = None):
        if on_result is None and on_alert is None and not settings.sinks:
            raise ConfigError("firespotter.pipeline(): nothing would see the results",
                              "pass on_result= or on_alert=, or sinks=")
        for label, fn in (("on_result", on_result), ("on_alert", on_alert), ("on_end", on_end)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"firespotter.pipeline(): {label} must be callable, got {type(fn).__name__}")
        self.on_end = on_end
        super().__init__(settings, ("callbacks", _CallbackSink(on_result, on_alert, images)), limit=limit,
                         where="firespotter.pipeline()", thread_name="firespotter-pipeline")

    def _ended(self) -> None:
        if self.on_end is not None:
            self.on_end(self.summary)

    def start(self) -> "LivePipeline":
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> dict[str, Any] | None:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.summary

    def stop(self, timeout: float | None = None) -> dict[str, Any] | None:
        """End the run: the source stops, what was accepted drains, the sinks flush and close."""
        self._pipeline.request_stop()
        if self._thread.ident is None:  # never started: run the (empty) drain so the source and sinks close
            self._thread.start()
        return self.join(timeout if timeout is not None else self.settings.runtime.drain_timeout_s + 5)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> "LivePipeline":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def pipeline(source: str, *, on_result: Callable[[Result], Any] | None = None,
             on_alert: Callable[[Result], Any] | None = None, on_end: Callable[[dict | None], Any] | None = None,
             model: str | None = None, backend: str | None = None, precision: str | None = None,
             adapt: str | None = None, images: bool = False, limit: int | None = None, mode: str = "live",
             **kwargs: Any) -> LivePipeline:
    """A pipeline that calls `on_result(result)` for every processed frame and `on_alert(result)` for frames
    whose alert is FIRE, on its own thread, until the source ends or `stop()`; `on_end(summary)` at the end.
    Live by default: frames are dropped (and counted) rather than queued when processing falls behind.
    Other arguments as `firespotter.open`."""
    settings = settings_for(source, model=model, backend=backend, precision=precision, adapt=adapt, mode=mode,
                            **kwargs)
    return LivePipeline(settings, on_result=on_result, on_alert=on_alert, on_end=on_end, images=images, limit=limit)
