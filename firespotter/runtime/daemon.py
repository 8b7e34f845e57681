"""The onboard daemon's supervisor: readiness, watchdog, status, metrics, heat, and config reloads.

systemd restarts a service whose watchdog pings stop. So pings are sent only while frames make progress:
a hung inference or a source that silently stopped delivering stops them after `stall_s`; a source that says
it is reconnecting keeps them going for up to `reconnect_grace_s` (a link outage is not a hang), and STATUS=
says what is happening either way.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .config import Settings, load_settings
from .notify import Notifier
from .thermal import read_zones, skip_factor
from .types import SourceState

log = logging.getLogger("firespotter.daemon")


class Supervisor:
    def __init__(self, pipeline, settings: Settings, notifier: Notifier, metrics=None,
                 config_path=None, apply_post: Callable[[Settings], None] | None = None,
                 on_ready: Callable[[], None] | None = None):
        self.pipeline = pipeline
        self.settings = settings
        self.notifier = notifier
        self.metrics = metrics
        self.config_path = config_path
        self.apply_post = apply_post
        self.on_ready = on_ready
        self.ready = False
        self.fps = 0.0
        self.temperature: float | None = None
        self.status_text = "starting"
        self._last_frames = 0
        self._last_progress = time.monotonic()
        self._last_tick = time.monotonic()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        if metrics is not None:
            pipeline.observers.append(metrics.observe)

    # --- control ---------------------------------------------------------------------------------------

    def start(self) -> "Supervisor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def request_reload(self) -> None:
        """From the SIGHUP handler: the reload itself happens on the supervisor thread."""
        self._reload.set()

    def readiness(self) -> tuple[bool, str]:
        """(ready, why): what /readyz answers and firespotter_ready shows, computed from one rule so they never
        disagree. Ready = a frame was processed, the source is streaming, frames make progress (the hang
        detection that stops the watchdog pings) and no shutdown is under way."""
        state = getattr(self.pipeline.source, "state", SourceState.STREAMING)
        if not self.ready:
            return False, "starting: no frame processed yet (model loading, camera connecting or engine building)"
        if getattr(self.pipeline, "stopping", False):
            return False, "stopping"
        if state is not SourceState.STREAMING:
            return False, f"source {state.value}"
        now = time.monotonic()
        since = now - self._last_progress
        if since >= self.settings.daemon.stall_s and not self.healthy(now):
            return False, f"hang: no frame processed for {since:.0f} s (watchdog pings stopped)"
        if since >= self.settings.daemon.stall_s:
            return False, f"no frame processed for {since:.0f} s"
        return True, f"streaming, {self.fps:.1f} fps"

    def is_ready(self) -> bool:
        return self.readiness()[0]

    # --- the loop --------------------------------------------------------------------------------------

    def _interval(self) -> float:
        interval = self.settings.daemon.status_interval_s
        if self.notifier.watchdog_s:
            interval = min(interval, self.notifier.watchdog_s / 3)  # several pings per WatchdogSec
        return max(0.05, interval)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval()):
            try:
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
                self.tick()
            except Exception as exc:  # the supervisor must outlive its own bugs
                log.error("supervisor tick failed: %s: %s", exc.__class__.__name__, exc)

    def healthy(self, now: float) -> bool:
        """Progress recently, or a reconnect under way for less than the grace period."""
        since = now - self._last_progress
        d = self.settings.daemon
        if since < d.stall_s:
            return True
        state = getattr(self.pipeline.source, "state", None)
        return state in (SourceState.RECONNECTING, SourceState.CONNECTING) and since < d.reconnect_grace_s

    def tick(self) -> None:
        p = self.pipeline
        now = time.monotonic()
        frames = p.frames_out
        dt = max(now - self._last_tick, 1e-6)
        rate = (frames - self._last_frames) / dt
        self.fps = rate if self.fps == 0 else 0.7 * self.fps + 0.3 * rate
        if frames != self._last_frames:
            self._last_progress = now
        self._last_frames, self._last_tick = frames, now

        if not self.ready and frames > 0:
            self.ready = True
            if self.on_ready is not None:
                self.on_ready()  # no more start-timeout extensions
            self.notifier.ready(self._status(now))
            log.info("ready: model loaded, first frame processed")  # one line in the journal at start-up
        if self.ready and self.healthy(now) and not p.stopping:
            self.notifier.watchdog()
        self._thermal()
        self.status_text = self._status(now)
        self.notifier.status(self.status_text)
        if self.metrics is not None:
            self.metrics.update(p, self.fps, self.is_ready(), self.temperature, p.skip_every)

    def _status(self, now: float) -> str:
        p = self.pipeline
        state = getattr(getattr(p.source, "state", None), "value", "?")
        text = f"{self.fps:.1f} fps, source {state}, fire frames {p.fire_frames}, dropped {p.dropped_queue + p.dropped_deadline + p.dropped_thermal}"
        since = now - self._last_progress
        if since >= self.settings.daemon.stall_s:
            text += f"; no frame for {since:.0f} s" + ("" if self.healthy(now) else " (hang: watchdog pings stopped)")
        if p.skip_every > 1:
            text += f"; hot ({self.temperature:.0f} C): 1 of {p.skip_every} frames"
        return text

    def _thermal(self) -> None:
        d = self.settings.daemon
        zones = read_zones(d.thermal_zones)
        self.temperature = max(zones.values()) if zones else None
        skip = skip_factor(self.temperature, d.throttle_c, d.throttle_max_skip)
        if skip != self.pipeline.skip_every:
            log.warning("temperature %.1f C: processing 1 of %d frames", self.temperature or 0.0, skip)
            self.pipeline.skip_every = skip

    # --- SIGHUP ----------------------------------------------------------------------------------------

    def reload(self) -> list[str]:
        """Re-read the config; apply what can change while running (thresholds, post-processing, daemon
        timings); log what needs a restart. A config that does not validate is refused, the old one stays."""
        if self.config_path is None:
            return []
        self.notifier.reloading()
        try:
            new = load_settings(self.config_path)
        except Exception as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            self.notifier.ready(self.status_text)
            return []
        old = self.settings
        applied = []
        if new.model.threshold != old.model.threshold or new.post != old.post:
            if self.apply_post is not None:
                self.apply_post(new)
            applied.append("post-processing thresholds")
        if new.daemon != old.daemon:
            applied.append("daemon timings")
        restart = [name for name in ("source", "model", "sinks", "adapt", "metrics", "runtime")
                   if getattr(new, name) != getattr(old, name)]
        self.settings = old.model_copy(update={"post": new.post, "daemon": new.daemon,
                                               "model": old.model.model_copy(update={"threshold": new.model.threshold})})
        log.warning("config reloaded: applied %s%s", ", ".join(applied) or "nothing",
                    f"; needs a restart: {', '.join(restart)}" if restart else "")
        self.notifier.ready(self.status_text)
        return applied
