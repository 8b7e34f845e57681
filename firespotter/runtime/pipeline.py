"""The engine: source -> infer (-> adapt) -> post (-> processors) -> freeze -> one queue and thread per sink.

live:   the source queue is leaky (drop-oldest) and frames older than the deadline at dequeue are dropped;
        every drop is counted. Sink queues are leaky too, so a slow sink never stalls inference.
replay: every queue blocks instead of dropping: every frame is processed, in order, deterministically.
        A slow sink slows the replay down (it must not lose results); a failing sink does not.

Shutdown (request_stop(), end of input, fatal error) drains what was accepted, in order, then flushes and
closes every sink; the whole drain is bounded by drain_timeout_s.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .post import PostParams, postprocess
from .protocols import Adapter, Processor, Segmenter, Sink, Source
from .queues import Closed, StageQueue
from .timing import StageTimes
from .types import AlertLevel, Frame, Prediction, Result, SourceState

log = logging.getLogger("firespotter.pipeline")

_END = object()  # end-of-stream marker, travels through every queue
MAX_CONSECUTIVE_INFER_ERRORS = 25  # past this the model is broken, not one frame
REPLAY_BATCH = 8  # replay: post and sink threads wake once per this many results


@dataclass
class PipelineOptions:
    mode: str = "replay"  # "live" | "replay"
    deadline_ms: float = 1000.0
    queue_size: int = 4
    sink_queue_size: int = 64
    drain_timeout_s: float = 10.0
    post: PostParams = field(default_factory=PostParams)
    limit: int | None = None  # stop after this many source frames
    # The stages already run in parallel; OpenCV's own thread pool on small frames only fights them for cores
    # (measured: post-processing 0.56 -> 0.38 ms at 256x256 with 1 thread). None leaves OpenCV alone.
    opencv_threads: int | None = 1


class _SinkWorker:
    """One sink, its queue and its thread. Errors are counted and logged; the sink keeps receiving."""

    def __init__(self, sink: Sink, name: str, maxsize: int, leaky: bool, wake_at: int):
        self.sink = sink
        self.name = name
        self.queue = StageQueue(maxsize, leaky=leaky, wake_at=wake_at)
        self.sent = 0
        self.errors = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.times = StageTimes()
        self.thread = threading.Thread(target=self._run, name=f"sink-{name}", daemon=True)

    def _fail(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{what}: {exc.__class__.__name__}: {exc}"
        if self.errors <= 3 or self.errors % 100 == 0:
            log.error("sink %s: %s failed (%d errors so far): %s", self.name, what, self.errors, exc)

    def start(self, info: dict[str, Any]) -> None:
        """Optional `sink.start(info)` before the first result (e.g. a video sink learns the source's rate)."""
        start = getattr(self.sink, "start", None)
        if start is not None:
            try:
                start(info)
            except Exception as exc:
                self._fail("start", exc)
        self.thread.start()

    def _run(self) -> None:
        send = self.sink.send
        ended = False
        while not ended:
            for item in self.queue.get_many():
                if item is _END:
                    ended = True
                    break
                t0 = time.perf_counter()
                try:
                    send(item)
                    self.sent += 1
                except Exception as exc:
                    self._fail("send", exc)
                self.times.add((time.perf_counter() - t0) * 1e3)
        for what, fn in (("flush", self.sink.flush), ("close", self.sink.close)):
            try:
                fn()
            except Exception as exc:
                self._fail(what, exc)

    def stats(self) -> dict[str, Any]:
        out = {
            "sent": self.sent,
            "errors": self.errors,
            "dropped": self.dropped,
            "last_error": self.last_error,
            "send_ms": self.times.summary(),
            "max_queue_depth": self.queue.max_depth,
        }
        own = getattr(self.sink, "stats", None)  # network sinks: messages stored, sent, acknowledged, outbox
        if callable(own):
            try:
                out["delivery"] = own()
            except Exception as exc:
                out["delivery"] = {"error": f"{exc.__class__.__name__}: {exc}"}
        return out


def _processor_stats(processor: Processor) -> dict[str, Any]:
    try:
        return dict(processor.stats())
    except Exception as exc:
        return {"stats_error": f"{exc.__class__.__name__}: {exc}"}


class Pipeline:
    def __init__(
        self,
        source: Source,
        segmenter: Segmenter,
        sinks: Sequence[tuple[str, Sink]],
        options: PipelineOptions | None = None,
        *,
        adapters: Sequence[Adapter] = (),
        processors: Sequence[tuple[str, Processor]] = (),
        hook: Any = None,
        info: dict[str, Any] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ):
        self.source = source
        self.segmenter = segmenter
        self.options = options or PipelineOptions()
        if self.options.mode not in ("live", "replay"):
            raise ValueError(f"mode must be 'live' or 'replay', not {self.options.mode!r}")
        self.live = self.options.mode == "live"
        self.adapters = list(adapters)
        self.processors = list(processors)  # owned by the post thread, which closes them when it ends
        self.processor_errors = {name: 0 for name, _ in self.processors}
        self.hook = hook
        self.info = dict(info or {})
        self.on_progress = on_progress
        self.needs_image = any(getattr(s, "needs_image", False) for _, s in sinks)

        # Replay trades latency for fewer thread wake-ups (see queues.py): deeper queues, batched hand-offs.
        # Live mode hands every frame on at once: latency is the point there.
        batch = 1 if self.live else REPLAY_BATCH
        frames_size = self.options.queue_size if self.live else max(self.options.queue_size, 2 * REPLAY_BATCH)
        self.q_frames = StageQueue(frames_size, leaky=self.live)
        self.q_post = StageQueue(max(2, self.options.queue_size, 2 * batch), leaky=False, wake_at=batch)
        sink_size = max(self.options.sink_queue_size, 2 * batch)
        self.sinks = [_SinkWorker(s, n, sink_size, self.live, batch) for n, s in sinks]

        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        # counters; each has a single writer thread
        self.frames_in = 0
        self.frames_out = 0
        self.dropped_queue = 0
        self.dropped_deadline = 0
        self.infer_errors = 0
        self.dropped_thermal = 0
        self.skip_every = 1  # live mode: process 1 of every N frames (set by the daemon when the board throttles)
        self.observers: list[Callable[[Result], None]] = []  # cheap per-result callbacks (metrics)
        self.hook_errors = 0
        self.nonfinite_frames = 0
        self.fire_frames = 0
        self.alert_frames = 0
        self.source_error: str | None = None
        self.fatal_error: str | None = None
        self.stage = {name: StageTimes() for name in ("source", "infer", "adapt", "post", "latency")}
        # (seq, fire_fraction, n_regions, alert, t_capture_ns)
        self.timeline: list[tuple[int, float, int, str, int]] = []
        # The source's state when a frame was read, where it was not "streaming" (rare): a Result carries the
        # state of its frame, not the state of the source when the frame reaches the end of the pipeline (the
        # last frames of a replay would all say "ended").
        self._read_states: dict[int, SourceState] = {}
        self.max_latency_ms = 0.0
        self._t_start = 0.0
        self._t_end = 0.0
        self._threads: list[threading.Thread] = []

    # --- control --------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop reading the source; drain what was accepted. Safe from signal handlers and other threads.
        The source is told to close too, so one blocked waiting for a lost stream lets go at once."""
        self._stop.set()
        try:
            self.source.close()
        except Exception as exc:
            log.warning("source close failed: %s", exc)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> dict[str, Any]:
        """Run to the end of input (or a stop request); returns the summary."""
        if self.options.opencv_threads is not None:
            import cv2

            cv2.setNumThreads(self.options.opencv_threads)
        self._t_start = time.perf_counter()
        if self.hook is not None:
            try:  # historic: plugins registered later still get this call
                self.hook.on_pipeline_start.call_historic(kwargs={"info": self.describe()})
            except Exception as exc:
                self.hook_errors += 1
                log.error("plugin hook on_pipeline_start raised %s: %s", exc.__class__.__name__, exc)
        stages = [
            threading.Thread(target=self._source_loop, name="source", daemon=True),
            threading.Thread(target=self._infer_loop, name="infer", daemon=True),
            threading.Thread(target=self._post_loop, name="post", daemon=True),
        ]
        for worker in self.sinks:
            worker.start(self.describe())
        self._threads = stages + [w.thread for w in self.sinks]
        for t in stages:
            t.start()
        # Wait for the natural end; once a stop is requested, or the input has ended and only sinks are left
        # working, the drain gets drain_timeout_s: a sink that blocks forever must not hang the end of a run.
        while not self._all_done(0.2):
            if self._stop.is_set() or not any(t.is_alive() for t in stages):
                deadline = time.monotonic() + self.options.drain_timeout_s
                while not self._all_done(0.05) and time.monotonic() < deadline:
                    pass
                break
        drained = self._all_done(0)
        if not drained:
            log.error("drain did not finish within %.1f s; abandoning the rest", self.options.drain_timeout_s)
            for q in [self.q_frames, self.q_post] + [w.queue for w in self.sinks]:
                q.abort()
        self._t_end = time.perf_counter()
        for adapter in self.adapters:  # stops an adapter's background work before its summary is read
            try:
                adapter.close()
            except Exception as exc:
                log.warning("adapter %s close failed: %s", getattr(adapter, "name", adapter), exc)
        summary = self.summary(drained=drained)
        if self.hook is not None:
            self._call_hook("on_pipeline_stop", summary=summary)
        return summary

    def _all_done(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                return False
        return True

    def _call_hook(self, name: str, **kwargs: Any) -> None:
        try:
            getattr(self.hook, name)(**kwargs)
        except Exception as exc:
            self.hook_errors += 1
            log.error("plugin hook %s raised %s: %s", name, exc.__class__.__name__, exc)

    # --- stages ---------------------------------------------------------------------------------------

    def _source_loop(self) -> None:
        limit = self.options.limit
        it = iter(self.source)
        try:
            while not self._stop.is_set():
                if limit is not None and self.frames_in >= limit:
                    break
                t0 = time.perf_counter()
                try:
                    frame = next(it)
                except StopIteration:
                    break
                self.stage["source"].add((time.perf_counter() - t0) * 1e3)
                self.frames_in += 1
                state = getattr(self.source, "state", SourceState.STREAMING)
                if state is not SourceState.STREAMING and len(self._read_states) < 10_000:
                    self._read_states[frame.seq] = state
                try:
                    if self.q_frames.put(frame) is not None:
                        self.dropped_queue += 1
                except Closed:
                    break
        except Exception as exc:  # a source that dies ends the stream; what was accepted still drains
            self.source_error = f"{exc.__class__.__name__}: {exc}"
            log.error("source failed: %s", self.source_error)
        finally:
            try:
                self.source.close()
                close_iterator = getattr(it, "close", None)  # a generator source releases its resources now
                if close_iterator is not None:
                    close_iterator()
            except Exception as exc:
                log.warning("source close failed: %s", exc)
            self.q_frames.put(_END, force=True)

    def _infer_loop(self) -> None:
        # A segmenter with a frame-level head offers predict_scored(batch) -> (prob, fire_score per frame).
        scored = getattr(self.segmenter, "predict_scored", None)
        predict = scored or (lambda batch: (self.segmenter.predict(batch), None))
        deadline_ns = int(self.options.deadline_ms * 1e6)
        consecutive = 0
        try:
            while True:
                frame = self.q_frames.get()
                if frame is _END:
                    break
                if self.live and time.monotonic_ns() - frame.t_capture_ns > deadline_ns:
                    self.dropped_deadline += 1
                    continue
                if self.live and self.skip_every > 1 and frame.seq % self.skip_every:
                    self.dropped_thermal += 1
                    continue
                t0 = time.perf_counter()
                try:
                    probs, scores = predict(frame.image[None])
                    prob = probs[0]
                    fire_score = None if scores is None else float(scores[0])
                except Exception as exc:
                    self.infer_errors += 1
                    consecutive += 1
                    log.error("inference failed on frame %d: %s: %s", frame.seq, exc.__class__.__name__, exc)
                    if consecutive >= MAX_CONSECUTIVE_INFER_ERRORS:
                        self.fatal_error = f"inference failed on {consecutive} frames in a row; last: {exc}"
                        self._stop.set()
                    continue
                consecutive = 0
                t_infer = (time.perf_counter() - t0) * 1e3
                self.stage["infer"].add(t_infer)
                timings = {"infer": t_infer}
                if self.adapters:
                    timings["adapt"] = self._adapt(frame, prob, t_infer)
                self.q_post.put((frame, prob, fire_score, timings))
        except Closed:
            pass
        finally:
            self.q_post.put(_END, force=True)

    def _adapt(self, frame: Frame, prob: np.ndarray, t_infer: float) -> float:
        t0 = time.perf_counter()
        pred = Prediction(prob, self.segmenter.model_id, self.segmenter.precision, {"infer": t_infer})
        for adapter in self.adapters:
            try:
                adapter.observe(frame.image[None], pred)
            except Exception as exc:
                log.error("adapter %s failed on frame %d: %s", getattr(adapter, "name", adapter), frame.seq, exc)
        ms = (time.perf_counter() - t0) * 1e3
        self.stage["adapt"].add(ms)
        return ms

    @staticmethod
    def _drain(queue: StageQueue):
        """Items of `queue` in order, batch by batch, until the end marker."""
        while True:
            for item in queue.get_many():
                if item is _END:
                    return
                yield item

    def _post_loop(self) -> None:
        model_id, precision = self.segmenter.model_id, self.segmenter.precision
        on_result = getattr(self.hook, "on_result", None) if self.hook is not None else None
        try:
            for item in self._drain(self.q_post):
                frame, prob, fire_score, timings = item
                t0 = time.perf_counter()
                h, w = frame.image.shape[:2]
                # Read per frame: a config reload (SIGHUP) may replace the thresholds while running.
                _, mask, regions, alert, bad = postprocess(prob, h, w, self.options.post)
                if bad:
                    # A model that emits NaN/inf knows nothing about this frame: publishing it as "fire" or as
                    # "no fire" would both be lies. Flag it, count it, publish nothing.
                    self.nonfinite_frames += 1
                    log.warning("model output had NaN/inf on frame %d; frame not published", frame.seq)
                    continue
                timings["post"] = (time.perf_counter() - t0) * 1e3
                self.stage["post"].add(timings["post"])
                result = Result(
                    seq=frame.seq,
                    source_id=frame.source_id,
                    t_capture_ns=frame.t_capture_ns,
                    t_wall_ns=frame.t_wall_ns,
                    mask=mask,
                    regions=regions,
                    alert=alert,
                    source_state=self._read_states.pop(frame.seq, SourceState.STREAMING),
                    model_id=model_id,
                    precision=precision,
                    timings_ms=timings,
                    drops={"queue": self.dropped_queue, "deadline": self.dropped_deadline},
                    pose=frame.pose,
                    meta=frame.meta,
                    image=frame.image if self.needs_image else None,
                    fire_score=fire_score,
                )
                if regions:
                    self.fire_frames += 1
                if alert is AlertLevel.FIRE:
                    self.alert_frames += 1
                self._process(result)
                result.t_publish_ns = time.monotonic_ns()
                # Hooks, observers and sinks share this one object across threads: none of them may change it.
                result.freeze()
                if on_result is not None:
                    try:
                        on_result(result=result)
                    except Exception as exc:
                        self.hook_errors += 1
                        log.error("on_result hook raised %s: %s", exc.__class__.__name__, exc)
                for observe in self.observers:
                    try:
                        observe(result)
                    except Exception as exc:
                        self.hook_errors += 1
                        log.error("result observer raised %s: %s", exc.__class__.__name__, exc)
                latency = (result.t_publish_ns - frame.t_capture_ns) / 1e6
                self.stage["latency"].add(latency)
                if not self.live:  # the replay report's chart; a live daemon would grow it forever (soak)
                    self.timeline.append((frame.seq, result.fire_fraction, len(regions), alert.value,
                                          frame.t_capture_ns))
                self.frames_out += 1
                for worker in self.sinks:
                    if worker.queue.put(result) is not None:
                        worker.dropped += 1
                if self.on_progress is not None:
                    self.on_progress(self.frames_out)
        except Closed:
            pass
        finally:
            for worker in self.sinks:
                worker.queue.put(_END, force=True)
            for name, processor in self.processors:
                try:
                    processor.close()
                except Exception as exc:
                    log.warning("processor %s close failed: %s", name, exc)

    def _process(self, result: Result) -> None:
        """The processors, in order; one that raises is counted and logged and the result goes on."""
        for name, processor in self.processors:
            try:
                processor.process(result)
            except Exception as exc:
                self.processor_errors[name] += 1
                if self.processor_errors[name] <= 3:
                    log.error("processor %s raised %s on frame %d: %s", name, exc.__class__.__name__, result.seq, exc)

    # --- reporting ------------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            **self.info,
            "mode": self.options.mode,
            "model_id": self.segmenter.model_id,
            **self.segmenter.precision.as_dict(),
            "sinks": [w.name for w in self.sinks],
        }

    def summary(self, drained: bool = True) -> dict[str, Any]:
        wall = max((self._t_end or time.perf_counter()) - self._t_start, 1e-9)
        dropped = self.dropped_queue + self.dropped_deadline + self.dropped_thermal + sum(w.dropped for w in self.sinks)
        return {
            **self.describe(),
            "frames": self.frames_out,
            "frames_in": self.frames_in,
            "dropped": self.dropped_queue + self.dropped_deadline + self.dropped_thermal,
            "dropped_queue": self.dropped_queue,
            "dropped_deadline": self.dropped_deadline,
            "dropped_thermal": self.dropped_thermal,
            "dropped_total_incl_sinks": dropped,
            "infer_errors": self.infer_errors,
            "nonfinite_frames": self.nonfinite_frames,
            "hook_errors": self.hook_errors,
            "fire_frames": self.fire_frames,
            "alert_frames": self.alert_frames,
            "fps": round(self.frames_out / wall, 3),
            "wall_s": round(wall, 3),
            "stages_ms": {k: v.summary() for k, v in self.stage.items()},
            "max_queue_depth": self.q_frames.max_depth,
            "processors": {name: {**_processor_stats(p), "errors": self.processor_errors[name]}
                           for name, p in self.processors},
            "sinks": {w.name: w.stats() for w in self.sinks},
            "adapters": [a.summary() for a in self.adapters if callable(getattr(a, "summary", None))],
            "source_state": getattr(getattr(self.source, "state", None), "value", None),
            "source_error": self.source_error,
            "fatal_error": self.fatal_error,
            "stopped_by_request": self._stop.is_set() and self.fatal_error is None,
            "drained": drained,
        }
