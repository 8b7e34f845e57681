"""How the ground station hears the drones: a Zenoh session or an MQTT client, each feeding GroundStation.handle
and publishing the acks it returns, and reporting its link (broker or peers reachable, and why not) through
GroundStation.set_link, which the console, the log and the ground view's page show."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from firespotter.net import availability, wire
from firespotter.runtime.errors import FirespotterError

from .station import GroundStation

log = logging.getLogger("firespotter.listen")


class ZenohListener:
    def __init__(self, gs: GroundStation, mode: str, connect: list[str], listen: list[str], multicast: bool,
                 config_file: Path | None):
        import zenoh

        self.gs = gs
        self.connect = list(connect)
        conf = zenoh.Config.from_file(str(config_file)) if config_file else zenoh.Config()
        conf.insert_json5("mode", json.dumps(mode))
        if connect:
            conf.insert_json5("connect/endpoints", json.dumps(connect))
        if listen:
            conf.insert_json5("listen/endpoints", json.dumps(listen))
        conf.insert_json5("scouting/multicast/enabled", json.dumps(multicast))
        try:
            self.session = zenoh.open(conf)
        except Exception as exc:
            raise FirespotterError(f"listen: cannot open a zenoh session ({mode}, connect {connect or '-'}, "
                                   f"listen {listen or '-'}): {exc}") from None
        self.subs = [self.session.declare_subscriber(f"{wire.TOPIC_PREFIX}/*/{kind}", self._on_sample)
                     for kind in ("fire", "state")]
        # drones' liveliness tokens: history=True reports those already up; a DELETE is a drone gone
        self.subs.append(self.session.liveliness().declare_subscriber(
            f"{wire.TOPIC_PREFIX}/*/{availability.KIND}", self._on_liveliness, history=True))
        self.poll()

    def _on_liveliness(self, sample) -> None:
        import zenoh

        self.gs.handle_availability(str(sample.key_expr), online=sample.kind != zenoh.SampleKind.DELETE)

    def poll(self) -> None:
        """Update the link: with --connect endpoints, up while at least one peer or router is connected; a
        listening peer without endpoints is up once its session is open (drones come to it)."""
        if not self.connect:
            self.gs.set_link(True)
            return
        try:
            info = self.session.info
            n = len(list(info.peers_zid())) + len(list(info.routers_zid()))
        except Exception as exc:  # a closing session
            log.debug("zenoh info: %s", exc)
            return
        self.gs.set_link(n > 0, None if n else f"no peer or router reachable at {', '.join(self.connect)}")

    def _on_sample(self, sample) -> None:
        try:
            payload = sample.payload.to_bytes()
        except Exception as exc:
            payload = b""
            log.debug("payload: %s", exc)
        for topic, ack in self.gs.handle(str(sample.key_expr), payload):
            try:
                self.session.put(topic, ack)
            except Exception as exc:
                log.warning("could not send an ack on %s: %s", topic, exc)

    def close(self) -> None:
        for s in self.subs:
            try:
                s.undeclare()
            except Exception:
                pass
        self.session.close()


class MqttListener:
    def __init__(self, gs: GroundStation, host: str, port: int, client_id: str, username: str | None,
                 password: str | None, tls: bool, ca_certs: Path | None, clean: bool):
        import socket

        import paho.mqtt.client as mqtt

        self.gs = gs
        self.host, self.port = host, port
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise FirespotterError(f"listen: broker host {host!r} does not resolve ({exc.strerror})") from None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        if username:
            c.username_pw_set(username, password)
        if tls:
            c.tls_set(ca_certs=str(ca_certs) if ca_certs else None)
        c.reconnect_delay_set(1, 2)  # a broker that comes back is found again within 2 s
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c
        self.connected = threading.Event()
        c.connect_async(host, port, keepalive=30)
        c.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if getattr(reason_code, "is_failure", False):
            self.gs.set_link(False, f"the broker refused the connection: {reason_code}")
            return
        client.subscribe([(f"{wire.TOPIC_PREFIX}/+/fire", 1), (f"{wire.TOPIC_PREFIX}/+/state", 0),
                          (f"{wire.TOPIC_PREFIX}/+/{availability.KIND}", 1)])
        self.gs.set_link(True)
        self.connected.set()

    def _on_connect_fail(self, client, userdata) -> None:
        self.gs.set_link(False, self._why_unreachable())

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.gs.set_link(False, f"disconnected ({reason_code})")

    def _why_unreachable(self) -> str:
        """paho reports a failed connect without its reason: one short TCP probe tells refused from unreachable."""
        import socket

        try:
            with socket.create_connection((self.host, self.port), timeout=1.0):
                return "the broker accepted TCP but not the MQTT connection"
        except OSError as exc:
            return exc.strerror or str(exc) or exc.__class__.__name__

    def poll(self) -> None:
        pass

    def _on_message(self, client, userdata, message) -> None:
        if message.topic.endswith("/" + availability.KIND):
            self.gs.handle_availability(message.topic, message.payload)
            return
        for topic, ack in self.gs.handle(message.topic, message.payload):
            client.publish(topic, ack, qos=0)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
