"""The ground station's core, independent of any transport: fed (topic, payload), it validates each message,
drops duplicates by id, keeps each drone's status and the fleet map, and returns the acks to publish
(an `ack` on `firespotter/<drone>/ack` is what lets a Zenoh drone empty its outbox; over MQTT the broker's
PUBACK already does, the ack is informative). A malformed message is logged and counted, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from firespotter.net import availability, wire

from .fleet import FleetMap

log = logging.getLogger("firespotter.listen")


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

    def __init__(self, station: str = "ground", fleet: FleetMap | None = None, dedup: int = 100_000):
        self.station = station
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
        # observers(kind, msg, receive_time, duplicate), called under self.lock after each valid fire/state
        # message (the ground view's live page); one that raises is logged, never costs the drone its ack
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

    def handle(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """-> [(topic, payload)] to publish (acks). Never raises for bad input."""
        try:
            return self._handle(str(topic), payload)
        except Exception as exc:  # wire errors and anything unforeseen in a message: count, log, go on
            with self.lock:
                self.bad += 1
                self.last_bad = f"{topic}: {exc.__class__.__name__}: {exc}"
                n = self.bad
            if n <= 10 or n % 100 == 0:
                log.warning("ignored a malformed message on %s (%d so far): %s", topic, n, exc)
            return []

    def _handle(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        where = wire.parse_topic(topic)
        if where is None:
            raise wire.WireError(f"not a firespotter topic: {topic!r}")
        drone, kind = where
        if kind == "ack":
            return []  # our own acks (or another station's)
        msg = wire.loads(payload)
        if msg["kind"] != kind or msg["drone_id"] != drone:
            raise wire.WireError(f"a {msg['kind']} message from {msg['drone_id']} on topic {topic}")
        now = time.time()
        with self.lock:
            self.messages += 1
            st = self.drones.setdefault(drone, DroneStatus(drone))
            st.last_seen = now
            if kind == "state":
                st.state = msg["source_state"] if msg["running"] else "stopped"
                st.fps = msg["fps"]
                st.link = "up" if msg["link"]["connected"] else "down"
                st.outbox_pending = (msg.get("outbox") or {}).get("pending")
                self._notify(kind, msg, now, False)
                return []
            # fire
            ack = [(wire.topic(drone, "ack"), wire.dumps(wire.ack_message(drone, [msg], self.station)))]
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
            st = st or self.drones.setdefault(drone, DroneStatus(drone))
            was = st.state
            if not online and st.state != "stopped":
                st.state = "lost"
            elif online and st.state in ("lost", "?"):
                st.state = "online"
            self._notify(availability.KIND, {"drone_id": drone, "online": online}, now, False)
        if not online and was not in ("stopped", "lost"):
            log.warning("drone %s offline (its last will or liveliness token): LOST", drone)

    def _notify(self, kind: str, msg: dict[str, Any], now: float, duplicate: bool) -> None:
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
        return (f"{self.messages} messages, {self.fire_messages} fire messages from {len(self.drones)} drones, "
                f"{self.duplicates} duplicates, {self.bad} malformed (ignored)")
