"""The ground station's core, independent of any transport: fed (topic, payload), it validates each message,
drops duplicates by id, keeps each drone's status and the fleet map, and returns the acks to publish
(an `ack` on `firespotter/<drone>/ack` is what lets a Zenoh drone empty its outbox; over MQTT the broker's
PUBACK already does, the ack is informative). A malformed message is logged and counted, never fatal.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from firespotter.net import auth, availability, wire

from .fleet import FleetMap

log = logging.getLogger("firespotter.listen")

# The ground view's queue: messages, and polygon points in all (a message may hold 50,000).
MAX_QUEUED = 2000
MAX_QUEUED_POINTS = 500_000


@dataclass
class DroneStatus:
    drone_id: str
    state: str = "?"
    fps: float = 0.0
    fires: int = 0  # fire messages with regions
    regions: int = 0  # regions in the latest fire message
    area_m2: float | None = None
    alert: str = "none"
    last_seen: float = 0.0
    link: str = ""
    outbox_pending: int | None = None
    duplicates: int = 0


class GroundStation:
    """Transport-independent: feed it (topic, payload); it returns the acks to publish."""

    def __init__(self, station: str = "ground", fleet: FleetMap | None = None, dedup: int = 100_000, *,
                 verifier: auth.Verifier | None = None, signer: auth.Signer | None = None,
                 max_drones: int = 256, retention_s: float = 3600.0):
        self.station = station
        # With keys: drone messages must be signed by their drone, acks are signed by this station.
        self.verifier = verifier
        self.signer = signer
        self.max_drones = max_drones
        self.retention_s = retention_s
        self.evicted = 0
        self.view_dropped = 0  # messages the ground view could not keep up with (acked and counted all the same)
        self._queue: queue.Queue | None = None
        self._queued_points = 0  # polygon points waiting for the worker: bounds its memory, not just its length
        self._worker: threading.Thread | None = None
        self.fleet = fleet or FleetMap()
        self.drones: dict[str, DroneStatus] = {}
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.dedup = dedup
        self.messages = 0
        self.fire_messages = 0
        self.duplicates = 0
        self.bad = 0
        self.last_bad: str | None = None
        self.map_dirty = False
        # the transport's own link (broker or peers): where, whether it is up now, ever up, and why not
        self.link: dict[str, Any] = {"where": "", "connected": False, "ever": False, "error": None}
        self.lock = threading.Lock()
        # observers(kind, msg, receive_time, duplicate), called after each valid fire/state message (the ground
        # view's live page): inline under self.lock, or on the worker thread after start(); one that raises is
        # logged, never costs the drone its ack
        self.observers: list[Callable[[str, dict[str, Any], float, bool], None]] = []

    def set_link(self, connected: bool, error: str | None = None, where: str | None = None) -> bool:
        """Record the transport's link state; True when it changed (worth a log line)."""
        with self.lock:
            old = dict(self.link)
            if where is not None:
                self.link["where"] = where
            self.link["connected"] = connected
            self.link["ever"] = self.link["ever"] or connected
            self.link["error"] = None if connected else error
            return (old["connected"], old["error"]) != (connected, self.link["error"])

    @property
    def rejected(self) -> dict[str, int]:
        """Authentication rejections by reason (auth.REASONS); all zero without keys."""
        return dict(self.verifier.rejected) if self.verifier is not None else {r: 0 for r in auth.REASONS}

    def start(self) -> "GroundStation":
        """Run the observers (the ground view) on a worker thread: the transport's callback thread then only
        checks and acknowledges, so a slow page update can never delay an ack."""
        if self._worker is None:
            self._queue = queue.Queue(maxsize=MAX_QUEUED)
            self._worker = threading.Thread(target=self._work, name="ground-view-feed", daemon=True)
            self._worker.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        if self._worker is not None and self._queue is not None:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                pass
            self._worker.join(timeout)
            self._worker = None

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until the worker has handled every queued message (tests, shutdown)."""
        end = time.monotonic() + timeout
        while self._queue is not None and self._queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.01)
        return self._queue is None or not self._queue.unfinished_tasks

    def _work(self) -> None:
        q = self._queue
        while True:
            item = q.get()
            try:
                if item is None:
                    return
                self._observe(*item[:4])
                with self.lock:
                    self._queued_points -= item[4]
            finally:
                q.task_done()

    def handle(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """-> [(topic, payload)] to publish (acks). Never raises for bad input."""
        try:
            return self._handle(str(topic), payload)
        except auth.AuthError as exc:  # counted per reason by the verifier
            with self.lock:
                self.last_bad = f"{str(topic)[:120]}: rejected: {exc}"
            n = sum(self.rejected.values())
            if n <= 10 or n % 100 == 0:
                log.warning("rejected a message on %s (%d rejected so far): %s", str(topic)[:120], n, exc)
            return []
        except Exception as exc:  # wire errors and anything unforeseen in a message: count, log, go on
            with self.lock:
                self.bad += 1
                self.last_bad = f"{str(topic)[:120]}: {exc.__class__.__name__}: {str(exc)[:300]}"
                n = self.bad
            if n <= 10 or n % 100 == 0:
                log.warning("ignored a malformed message on %s (%d so far): %s", str(topic)[:120], n, str(exc)[:300])
            return []

    def _handle(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        where = wire.parse_topic(topic)
        if where is None:
            raise wire.WireError(f"not a firespotter topic: {topic!r}")
        drone, kind = where
        if kind == "ack":
            return []  # our own acks (or another station's)
        if len(payload) > wire.MAX_PAYLOAD:  # before anything else looks at it
            raise wire.WireError(f"message of {len(payload)} bytes: larger than the {wire.MAX_PAYLOAD} bytes allowed")
        replayed = False
        if self.verifier is not None:
            if kind == "fire":  # an exact replay of a fire is a duplicate by id (acked again) unless forgotten
                replayed = self.verifier.check_fresh(payload, expect_key=drone)[1]
            else:  # a state has no id to deduplicate: a replayed one (a stale `running: false`) is refused
                self.verifier.check(payload, expect_key=drone)
        msg = wire.loads(payload)
        if replayed and msg["id"] not in self.seen:
            raise self.verifier.reject("replay", f"fire {msg['id']} of {drone} replayed")
        if msg["kind"] != kind or msg["drone_id"] != drone:
            raise wire.WireError(f"a {msg['kind']} message from {msg['drone_id']} on topic {topic}")
        now = time.time()
        with self.lock:
            self.messages += 1
            st = self.drones.get(drone)
            if st is None:
                self._evict(now)
                st = self.drones[drone] = DroneStatus(drone)
            st.last_seen = now
            if kind == "state":
                st.state = msg["source_state"] if msg["running"] else "stopped"
                st.fps = msg["fps"]
                st.link = "up" if msg["link"]["connected"] else "down"
                st.outbox_pending = (msg.get("outbox") or {}).get("pending")
                self._notify(kind, msg, now, False)
                return []
            # fire
            ack_bytes = wire.dumps(wire.ack_message(drone, [msg], self.station))
            ack = [(wire.topic(drone, "ack"), self.signer.sign(ack_bytes) if self.signer else ack_bytes)]
            if msg["id"] in self.seen:
                self.duplicates += 1
                st.duplicates += 1
                self._notify(kind, msg, now, True)
                return ack  # ack again: the first ack may have been lost
            self.seen[msg["id"]] = None
            if len(self.seen) > self.dedup:
                self.seen.popitem(last=False)
            self.fire_messages += 1
            st.state = msg["source_state"]
            st.alert = msg["alert"]
            st.regions = len(msg["regions"])
            st.area_m2 = msg["area_m2"]
            if msg["regions"]:
                st.fires += 1
            if self.fleet.add(msg, now):
                self.map_dirty = True
            self._notify(kind, msg, now, False)
            return ack

    def _evict(self, now: float) -> None:
        """Before a new drone is added: forget drones silent beyond the retention time, then the longest silent
        one while over max_drones (a flood of fake drone ids cannot grow the station without bound)."""
        old = [k for k, d in self.drones.items() if now - d.last_seen > self.retention_s]
        if len(self.drones) - len(old) >= self.max_drones:
            keep = sorted((d for k, d in self.drones.items() if k not in old), key=lambda d: d.last_seen)
            old += [d.drone_id for d in keep[: len(keep) - self.max_drones + 1]]
        for k in old:
            self.drones.pop(k, None)
            self.fleet.drone_positions.pop(k, None)
            self.evicted += 1

    def handle_availability(self, topic: str, payload: bytes | None = None, online: bool | None = None) -> None:
        """An MQTT availability message (topic, payload) or a Zenoh liveliness change (topic, online=...).
        `offline` from a drone still running marks it LOST at once (observers get kind "availability")."""
        try:
            if online is None:
                drone, online = availability.parse(topic, payload or b"")
            else:
                drone = availability.drone_of(topic)
                if drone is None:
                    raise wire.WireError(f"not an availability key: {str(topic)[:100]!r}")
        except wire.WireError as exc:
            with self.lock:
                self.bad += 1
                self.last_bad = f"{topic}: {exc}"
            log.warning("ignored a malformed availability message: %s", exc)
            return
        now = time.time()
        with self.lock:
            st = self.drones.get(drone)
            if st is None and not online:
                return  # a retained offline of a drone this station never heard: nothing to mark
            if st is None:  # bounded like any new drone (an unauthenticated topic: anyone may send one)
                self._evict(now)
                st = self.drones[drone] = DroneStatus(drone)
            was = st.state
            if not online and st.state != "stopped":
                st.state = "lost"
            elif online and st.state in ("lost", "?"):
                st.state = "online"
            self._notify(availability.KIND, {"drone_id": drone, "online": online}, now, False)
        if not online and was not in ("stopped", "lost"):
            log.warning("drone %s offline (its last will or liveliness token): LOST", drone)

    def _notify(self, kind: str, msg: dict[str, Any], now: float, duplicate: bool) -> None:
        if self._queue is not None:  # called under self.lock
            points = wire.count_points(msg) if kind == "fire" and not duplicate else 0
            if self._queued_points + points > MAX_QUEUED_POINTS:
                self.view_dropped += 1
                return
            try:
                self._queue.put_nowait((kind, msg, now, duplicate, points))
                self._queued_points += points
            except queue.Full:
                self.view_dropped += 1
            return
        self._observe(kind, msg, now, duplicate)

    def _observe(self, kind: str, msg: dict[str, Any], now: float, duplicate: bool) -> None:
        for observer in self.observers:
            try:
                observer(kind, msg, now, duplicate)
            except Exception as exc:
                log.warning("ground view: %s message from %s: %s: %s", kind, msg.get("drone_id"),
                            exc.__class__.__name__, exc)

    def table_rows(self) -> list[list[str]]:
        now = time.time()
        rows = []
        with self.lock:
            for d in sorted(self.drones.values(), key=lambda d: d.drone_id):
                area = "-" if d.area_m2 is None else f"{d.area_m2:.0f} m²"
                rows.append([d.drone_id, d.state, f"{d.fps:.1f}", d.alert, str(d.fires), str(d.regions), area,
                             "-" if d.outbox_pending is None else str(d.outbox_pending), f"{now - d.last_seen:.1f} s ago"])
        return rows

    def summary(self) -> str:
        rejected = sum(self.rejected.values())
        return (f"{self.messages} messages, {self.fire_messages} fire messages from {len(self.drones)} drones, "
                f"{self.duplicates} duplicates, {self.bad} malformed (ignored)"
                + (f", {rejected} rejected (authentication)" if self.verifier is not None else ", links unauthenticated"))
