"""zenoh: wire v1 messages on a Zenoh network (eclipse-zenoh 1.x), the default for a drone mesh.

Keys are `firespotter/<drone_id>/fire|state`; the sink subscribes to `firespotter/<drone_id>/ack`. A `fire`
message leaves the outbox when a ground station (`firespotter listen`) acknowledges its id; until then it is
resent every `resend_after_s` (doubling up to `max_backoff_s`; same bytes, same id). While no subscriber
matches the fire key nothing is sent (the messages wait in the outbox); when one appears the backlog drains
oldest-first at once.

Peer mode by default (drones and ground stations find each other by multicast scouting on the LAN); for a
fleet over routers list their endpoints in `connect` (peer or client mode):

    [[sinks]]
    type = "zenoh"
    connect = ["tcp/10.8.0.1:7447"]      # zenoh routers of the fleet
    multicast_scouting = false
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Literal

from pydantic import Field

from firespotter.net import auth, availability, wire
from firespotter.runtime.errors import FirespotterError
from firespotter.net.outbox import OutboxItem
from firespotter.net.sink import NetworkSink, NetworkSinkOptions
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import SinkSpec, module_available

log = logging.getLogger("firespotter.sinks.zenoh")


class ZenohOptions(NetworkSinkOptions):
    mode: Literal["peer", "client"] = Field("peer", description="peer: mesh with others directly; client: through a router (give `connect`)")
    connect: list[str] = Field(default_factory=list, description="endpoints to connect to, e.g. tcp/10.8.0.1:7447")
    listen: list[str] = Field(default_factory=list, description="endpoints to listen on, e.g. tcp/0.0.0.0:7447")
    multicast_scouting: bool = Field(True, description="find peers by UDP multicast on the local network")
    gossip_scouting: bool = Field(True, description="learn further peers from the ones already connected")
    config_file: Path | None = Field(None, description="a Zenoh JSON5 config; the keys above override it")
    require_subscriber: bool = Field(True, description="send fire messages only while a subscriber matches")
    resend_after_s: float = Field(5.0, gt=0)
    open_retry_max_s: float = Field(30.0, gt=0)
    availability: bool = Field(True, description="a liveliness token on firespotter/<drone>/availability while "
                               "the session is up")


def zenoh_config(mode: str = "peer", connect: list[str] = (), listen: list[str] = (), multicast: bool = True,
                 gossip: bool = True, config_file: Path | None = None):
    """A zenoh.Config from the sink's (or the listener's) options."""
    import zenoh

    conf = zenoh.Config.from_file(str(config_file)) if config_file else zenoh.Config()
    conf.insert_json5("mode", json.dumps(mode))
    if connect:
        conf.insert_json5("connect/endpoints", json.dumps(list(connect)))
    if listen:
        conf.insert_json5("listen/endpoints", json.dumps(list(listen)))
    conf.insert_json5("scouting/multicast/enabled", json.dumps(bool(multicast)))
    conf.insert_json5("scouting/gossip/enabled", json.dumps(bool(gossip)))
    return conf


class ZenohSink(NetworkSink):
    transport = "zenoh"

    def __init__(self, options: ZenohOptions, name: str = "zenoh"):
        super().__init__(options, name)
        self.options: ZenohOptions = options
        if options.config_file is not None and not Path(options.config_file).is_file():
            raise FirespotterError(f"zenoh sink {name}: config_file {options.config_file} does not exist")
        self.session = None
        self._pub_fire = None
        self._pub_state = None
        self._subs: list = []
        self._open_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.bad_acks = 0
        self._matching = False
        if self.signer is not None and self.ack_verifier is None:
            raise FirespotterError(f"zenoh sink {name}: auth_key without trusted_keys: any peer could acknowledge "
                                   "(and so delete) this drone's fire messages",
                                   "set trusted_keys to the ground stations' NAME.pub files (docs/security.md)")

    def _open(self) -> None:
        self._open_thread = threading.Thread(target=self._open_loop, name=f"zenoh-open-{self.name}", daemon=True)
        self._open_thread.start()

    def _open_loop(self) -> None:
        import zenoh

        o = self.options
        delay = 0.5
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            try:
                conf = zenoh_config(o.mode, o.connect, o.listen, o.multicast_scouting, o.gossip_scouting, o.config_file)
                session = zenoh.open(conf)
            except Exception as exc:
                self.link_error = f"cannot open a zenoh session ({o.mode}, connect {o.connect or '-'}, listen {o.listen or '-'}): {exc}"
                if attempt <= 3 or attempt % 20 == 0:
                    pending = self.outbox.pending() if self.outbox else 0
                    log.error("zenoh sink %s: %s; %d fire messages wait in the outbox, retrying in %.1f s", self.name,
                              self.link_error, pending, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, o.open_retry_max_s)
                continue
            try:
                self._pub_fire = session.declare_publisher(
                    wire.topic(self.drone_id, "fire"), congestion_control=zenoh.CongestionControl.BLOCK,
                    reliability=zenoh.Reliability.RELIABLE, priority=zenoh.Priority.DATA_HIGH)
                self._pub_state = session.declare_publisher(
                    wire.topic(self.drone_id, "state"), congestion_control=zenoh.CongestionControl.DROP)
                self._subs.append(session.declare_subscriber(wire.topic(self.drone_id, "ack"), self._on_ack))
                self._subs.append(self._pub_fire.declare_matching_listener(self._on_matching))
                if o.availability:  # gone for every subscriber the moment this session is
                    self._subs.append(session.liveliness().declare_token(availability.topic(self.drone_id)))
            except Exception as exc:
                self.link_error = f"zenoh declarations failed: {exc}"
                log.error("zenoh sink %s: %s", self.name, self.link_error)
                try:
                    session.close()
                except Exception:
                    pass
                self._stop.wait(delay)
                delay = min(delay * 2, o.open_retry_max_s)
                continue
            self.session = session
            self.link_error = None
            if attempt > 1:
                log.info("zenoh sink %s: session open", self.name)
            self.forwarder.wake()
            return

    def _on_matching(self, status) -> None:
        matching = bool(getattr(status, "matching", False))
        if matching and not self._matching:
            log.info("zenoh sink %s: a subscriber appeared; draining the outbox", self.name)
            self._matching = True
            self.forwarder.reset_backoff()
        elif not matching:
            self._matching = False

    def _on_ack(self, sample) -> None:
        try:
            payload = sample.payload.to_bytes()
            msg = wire.loads(payload)
            if msg["kind"] != "ack" or msg["drone_id"] != self.drone_id:
                raise wire.WireError(f"expected an ack for {self.drone_id}, got a {msg['kind']} for {msg['drone_id']}")
            if self.ack_verifier is not None:  # with keys, only a trusted station's ack may empty the outbox
                self.ack_verifier.check(payload)
        except wire.WireError as exc:
            self.bad_acks += 1
            if self.bad_acks <= 3 or self.bad_acks % 100 == 0:
                log.warning("zenoh sink %s: ignored a %s ack (%d so far): %s", self.name,
                            "forged" if isinstance(exc, auth.AuthError) else "malformed", self.bad_acks, exc)
            return
        self.forwarder.acked(msg["ids"])

    def _ready(self) -> bool:
        if self.session is None or self._pub_fire is None:
            return False
        if not self.options.require_subscriber:
            return True
        try:
            return bool(self._pub_fire.matching_status.matching)
        except Exception:
            return False

    def _publish(self, item: OutboxItem) -> None:
        self._pub_fire.put(self.signed(item.payload))

    def _publish_state(self, topic: str, payload: bytes) -> None:
        if self._pub_state is not None:
            self._pub_state.put(payload)

    def _send_state(self, running: bool = True) -> None:
        # state messages go out whenever the session is open, subscriber or not (zenoh drops them cheaply)
        if self.session is None:
            return
        msg = self.state_message(running)
        self._publish_state(wire.topic(self.drone_id, "state"), self.signed(wire.dumps(msg)))
        self.state_messages += 1

    def _close_transport(self) -> None:
        self._stop.set()
        if self._open_thread is not None:
            self._open_thread.join(2.0)
        session, self.session = self.session, None
        if session is not None:
            for sub in self._subs:
                try:
                    sub.undeclare()
                except Exception:
                    pass
            try:
                session.close()
            except Exception as exc:
                log.debug("zenoh close: %s", exc)


def make_zenoh_sink(options: ZenohOptions, name: str = "zenoh") -> ZenohSink:
    return ZenohSink(options, name)


@hookimpl
def register_sinks():
    return [SinkSpec("zenoh", make_zenoh_sink,
                     "wire v1 messages on Zenoh (peer mode; outbox until a ground station acks)",
                     options_model=ZenohOptions, available=module_available("zenoh", extra="zenoh"))]
