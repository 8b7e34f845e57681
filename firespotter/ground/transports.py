"""How the ground station hears the drones: a Zenoh session or an MQTT client, each feeding GroundStation.handle
and publishing the acks it returns."""

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

    def _on_liveliness(self, sample) -> None:
        import zenoh

        self.gs.handle_availability(str(sample.key_expr), online=sample.kind != zenoh.SampleKind.DELETE)

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
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise FirespotterError(f"listen: broker host {host!r} does not resolve ({exc.strerror})") from None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        if username:
            c.username_pw_set(username, password)
        if tls:
            c.tls_set(ca_certs=str(ca_certs) if ca_certs else None)
        c.reconnect_delay_set(1, 30)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self.client = c
        self.connected = threading.Event()
        c.connect_async(host, port, keepalive=30)
        c.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if getattr(reason_code, "is_failure", False):
            log.error("broker refused the connection: %s", reason_code)
            return
        client.subscribe([(f"{wire.TOPIC_PREFIX}/+/fire", 1), (f"{wire.TOPIC_PREFIX}/+/state", 0),
                          (f"{wire.TOPIC_PREFIX}/+/{availability.KIND}", 1)])
        self.connected.set()

    def _on_message(self, client, userdata, message) -> None:
        if message.topic.endswith("/" + availability.KIND):
            self.gs.handle_availability(message.topic, message.payload)
            return
        for topic, ack in self.gs.handle(message.topic, message.payload):
            client.publish(topic, ack, qos=0)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
