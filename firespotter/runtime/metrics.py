"""Prometheus metrics and the /healthz, /readyz endpoints of the daemon (one small HTTP server).

Counters follow the pipeline's own counters (they are the source of truth); per-stage latency histograms are
fed from every Result. Model and precision labels sit on an info metric, so every series can be joined to them.
"""

from __future__ import annotations

import http.server
import logging
import threading
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .errors import FirespotterError
from .types import SourceState

log = logging.getLogger("firespotter.metrics")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class PipelineMetrics:
    def __init__(self, info: dict[str, Any]):
        r = self.registry = CollectorRegistry()
        self.model = Info("firespotter_model", "model, backend and precision labels of the running pipeline",
                          registry=r)
        self.model.info({k: str(info.get(k)) for k in ("drone_id", "model", "model_id", "backend", "precision_exec",
                                                        "weight_bits", "simulated", "mode", "source", "adapter")})
        self.frames = Counter("firespotter_frames", "frames processed", registry=r)
        self.fire_frames = Counter("firespotter_fire_frames", "frames with at least one fire region", registry=r)
        self.alerts = Counter("firespotter_alert_frames", "frames at alert level fire", registry=r)
        self.dropped = Counter("firespotter_dropped_frames", "frames not processed, by reason", ["reason"], registry=r)
        self.errors = Counter("firespotter_errors", "errors by component", ["component"], registry=r)
        self.sink_errors = Counter("firespotter_sink_errors", "failed sends per sink", ["sink"], registry=r)
        self.sink_dropped = Counter("firespotter_sink_dropped", "results a slow sink lost (live mode)", ["sink"],
                                    registry=r)
        self.stage = Histogram("firespotter_stage_latency_seconds", "time per frame in each stage", ["stage"],
                               buckets=LATENCY_BUCKETS, registry=r)
        self.fps = Gauge("firespotter_fps", "processed frames per second (smoothed)", registry=r)
        self.source_state = Enum("firespotter_source_state", "state of the video source",
                                 states=[s.value for s in SourceState], registry=r)
        self.ready = Gauge("firespotter_ready", "1 while /readyz answers 200 (evaluated at each scrape)", registry=r)
        self.ready.set_function(lambda: 0.0)  # until bind_readiness() or update(): not ready
        self._readiness_bound = False
        self.temperature = Gauge("firespotter_temperature_celsius", "hottest thermal zone", registry=r)
        self.frame_skip = Gauge("firespotter_thermal_frame_skip", "1 of N frames processed (1 = no throttling)",
                                registry=r)
        self.outbox_depth = Gauge("firespotter_outbox_depth", "messages in a network sink's outbox waiting for "
                                  "acknowledgement (read at each scrape)", ["sink"], registry=r)
        self.outbox_degraded = Gauge("firespotter_outbox_degraded", "1 while a sink's outbox runs in memory or after "
                                     "it recovered a corrupt file (see /readyz for why)", ["sink"], registry=r)
        self.outbox_salvaged = Gauge("firespotter_outbox_salvaged", "messages salvaged from a corrupt outbox file",
                                     ["sink"], registry=r)
        self.outbox_lost = Gauge("firespotter_outbox_lost", "messages of a corrupt outbox file that could not be read",
                                 ["sink"], registry=r)
        self.auth_rejected = Counter("firespotter_auth_rejected", "acks a sink refused by authentication, by reason "
                                     "(forged, unsigned, stale, replayed: docs/security.md)", ["sink", "reason"],
                                     registry=r)
        self.degraded_notes: list[str] = []  # why, for /readyz (ready but degraded)
        self.adapter_resets = Counter("firespotter_adapter_resets", "times an adapter restored the original model",
                                      registry=r)
        self.adapter_updates = Counter("firespotter_adapter_updates", "test-time adaptation steps taken", registry=r)
        self.adapter_last = Gauge("firespotter_adapter_last_update", "the latest adaptation step: selected pixel "
                                  "fraction, entropy, fire fraction adapted vs frozen, parameter movement",
                                  ["quantity"], registry=r)
        self._last: dict[str, float] = {}

    def bind_readiness(self, is_ready: Callable[[], bool]) -> None:
        """firespotter_ready reads the same rule as /readyz, at scrape time: the two cannot disagree."""
        self.ready.set_function(lambda: 1.0 if is_ready() else 0.0)
        self._readiness_bound = True

    def bind_outboxes(self, sinks) -> None:
        """One firespotter_outbox_depth{sink=...} per sink that has an outbox (`outbox_depth()`), read from the
        outbox itself at scrape time, so a broker outage shows as it happens."""
        for worker in sinks:
            depth = getattr(worker.sink, "outbox_depth", None)
            if callable(depth):
                self.outbox_depth.labels(worker.name).set_function(lambda depth=depth: _safe_depth(depth))

    def observe(self, result) -> None:
        """Per Result, on the post-processing thread: cheap."""
        t = result.timings_ms
        for stage in ("infer", "adapt", "post"):
            if stage in t:
                self.stage.labels(stage).observe(t[stage] / 1e3)
        if result.t_publish_ns:
            self.stage.labels("capture_to_publish").observe((result.t_publish_ns - result.t_capture_ns) / 1e9)

    def _follow(self, counter, key: str, value: float) -> None:
        """Advance a Prometheus counter to an absolute value kept elsewhere."""
        delta = value - self._last.get(key, 0.0)
        if delta > 0:
            counter.inc(delta)
            self._last[key] = value

    def update(self, pipeline, fps: float, ready: bool, temperature: float | None, skip: int) -> None:
        """`ready` sets firespotter_ready only where no readiness rule is bound (bind_readiness, which the daemon
        uses so that the gauge is read at scrape time, exactly as /readyz answers)."""
        if not self._readiness_bound:
            self.ready.set_function(lambda value=1.0 if ready else 0.0: value)
        notes: list[str] = []
        self._follow(self.frames, "frames", pipeline.frames_out)
        self._follow(self.fire_frames, "fire", pipeline.fire_frames)
        self._follow(self.alerts, "alerts", pipeline.alert_frames)
        for reason, value in (("queue", pipeline.dropped_queue), ("deadline", pipeline.dropped_deadline),
                              ("thermal", pipeline.dropped_thermal)):
            self._follow(self.dropped.labels(reason), f"drop:{reason}", value)
        for component, value in (("inference", pipeline.infer_errors), ("hook", pipeline.hook_errors),
                                 ("nonfinite_output", pipeline.nonfinite_frames)):
            self._follow(self.errors.labels(component), f"err:{component}", value)
        for worker in pipeline.sinks:
            self._follow(self.sink_errors.labels(worker.name), f"sinkerr:{worker.name}", worker.errors)
            self._follow(self.sink_dropped.labels(worker.name), f"sinkdrop:{worker.name}", worker.dropped)
            rejected = getattr(worker.sink, "auth_rejected", None)
            if callable(rejected):
                for reason, value in rejected().items():
                    self._follow(self.auth_rejected.labels(worker.name, reason), f"auth:{worker.name}:{reason}", value)
            health = getattr(worker.sink, "outbox_health", None)
            if callable(health):
                try:
                    h = health()
                except Exception:
                    continue
                why = h.get("degraded") or h.get("recovered")
                self.outbox_degraded.labels(worker.name).set(1 if why else 0)
                self.outbox_salvaged.labels(worker.name).set(h.get("salvaged", 0))
                self.outbox_lost.labels(worker.name).set(h.get("lost", 0))
                notes.extend([f"outbox of sink {worker.name}: {why}"] if why else [])
        resets = sum(int(getattr(a, "resets", 0)) for a in pipeline.adapters)
        self._follow(self.adapter_resets, "resets", resets)
        for adapter in pipeline.adapters:  # adapters that take steps expose their latest record as last_update
            last = getattr(adapter, "last_update", None) or {}
            if "update" in last:
                self._follow(self.adapter_updates, "adapter_updates", float(last["update"]))
            for quantity in ("selected", "entropy", "fire_adapted", "fire_frozen", "moved"):
                if quantity in last:
                    self.adapter_last.labels(quantity).set(float(last[quantity]))
        self.fps.set(fps)
        state = getattr(pipeline.source, "state", None)
        if state is not None:
            self.source_state.state(state.value)
        self.degraded_notes = notes
        if temperature is not None:
            self.temperature.set(temperature)
        self.frame_skip.set(skip)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _safe_depth(depth: Callable[[], int]) -> float:
    try:
        return float(depth())
    except Exception as exc:  # a closed outbox while shutting down: no value rather than a failed scrape
        log.debug("outbox depth: %s", exc)
        return float("nan")


class HealthServer:
    """GET /metrics, /healthz (the process answers), /readyz (200 when ready, else 503; the body says why).

    `readiness` returns (ready, reason); a plain `is_ready` returning a bool is accepted too."""

    def __init__(self, address: str, port: int, metrics: PipelineMetrics, readiness):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, status, ctype = outer.metrics.exposition(), 200, CONTENT_TYPE_LATEST
                elif path == "/healthz":
                    body, status, ctype = b"ok\n", 200, "text/plain"
                elif path == "/readyz":
                    ok, why = outer.readiness()
                    body = (f"ready: {why}\n" if ok else f"not ready: {why}\n").encode()
                    status, ctype = (200 if ok else 503), "text/plain; charset=utf-8"
                    body += "".join(f"degraded: {n}\n" for n in outer.metrics.degraded_notes).encode()
                else:
                    body, status, ctype = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep scrapes out of the journal
                pass

        self.metrics = metrics

        def _readiness() -> tuple[bool, str]:
            got = readiness()
            return got if isinstance(got, tuple) else (bool(got), "ready" if got else "not ready")

        self.readiness = _readiness
        try:
            self.server = http.server.ThreadingHTTPServer((address, port), Handler)
        except OSError as exc:
            raise FirespotterError(f"metrics: cannot listen on {address}:{port}: {exc.strerror}",
                                   "another process uses that port; change [metrics] port or stop it") from None
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> "HealthServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
