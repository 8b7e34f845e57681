"""mqtt: wire v1 messages to an MQTT broker (paho-mqtt 2.x).

`fire` messages go through the outbox with QoS 1 and leave it on the broker's PUBACK; `state` heartbeats are
QoS 0 (optionally retained) and never stored. paho reconnects by itself, the wait doubling from `min_backoff_s`
up to `reconnect_max_s` (default 2 s: a broker that comes back is found again within 2 s; a retry against a broker
that is down costs one refused TCP connect), and resends what was in flight (same bytes, same id); what was never
sent waits in the outbox. (`max_backoff_s` is another option: the cap of the outbox's resend backoff for a message
sent but never acknowledged.) A broker host that does not resolve is logged as such (and reported in `state` messages once the
link is back); the daemon goes on and keeps the messages.

    [[sinks]]
    type = "mqtt"
    host = "gcs.local"          # port 1883, or 8883 with tls = true
    username = "uav-01"
    password_env = "FIRESPOTTER_MQTT_PASSWORD"
    tls = true
    ca_certs = "/etc/firespotter/ca.pem"
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import deque
from pathlib import Path

from pydantic import Field, model_validator

from firespotter.runtime.errors import FirespotterError
from firespotter.net import availability
from firespotter.net.outbox import OutboxItem
from firespotter.net.sink import NetworkSink, NetworkSinkOptions
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import SinkSpec, module_available

log = logging.getLogger("firespotter.sinks.mqtt")


class MqttOptions(NetworkSinkOptions):
    host: str = Field("127.0.0.1", description="broker host name or address")
    port: int | None = Field(None, ge=1, le=65535, description="default 1883, 8883 with tls")
    client_id: str | None = Field(None, description="default firespotter-<drone_id>-<sink name>")
    keepalive_s: int = Field(30, ge=5, le=3600)
    protocol: str = Field("3.1.1", pattern=r"^(3\.1\.1|5)$")
    username: str | None = Field(None, description="broker user name")
    password: str | None = Field(None, description="broker password in the file; prefer password_env")
    password_env: str | None = Field(None, description="read the password from this environment variable")
    tls: bool = Field(False, description="TLS to the broker (port default 8883)")
    ca_certs: Path | None = Field(None, description="CA bundle that signed the broker certificate; default: the system's")
    certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    keyfile: Path | None = Field(None, description="client certificate's private key")
    tls_insecure: bool = Field(False, description="skip the broker certificate's hostname check (tests only)")
    fire_qos: int = Field(1, ge=1, le=2)
    state_qos: int = Field(0, ge=0, le=1)
    retain_state: bool = Field(False, description="retain the latest state message on the broker")
    min_backoff_s: float = Field(0.5, gt=0, le=60, description="first wait before reconnecting to the broker")
    reconnect_max_s: float = Field(2.0, gt=0, le=300, description="cap of the reconnect wait (doubling from "
                                   "min_backoff_s): the longest a drone stays away from a broker that is back")
    resend_after_s: float = Field(60.0, gt=0, description="paho resends in-flight messages on reconnect itself")
    availability: bool = Field(True, description="retained online/offline on firespotter/<drone>/availability, "
                               "offline as the connection's last will")

    @model_validator(mode="after")
    def _check(self):
        if self.password is not None and self.password_env is not None:
            raise ValueError("give either password or password_env, not both")
        if (self.password is not None or self.password_env is not None) and not self.username:
            raise ValueError("a password needs a username")
        return self


class MqttSink(NetworkSink):
    transport = "mqtt"

    def __init__(self, options: MqttOptions, name: str = "mqtt"):
        super().__init__(options, name)
        self.options: MqttOptions = options
        self.port = options.port or (8883 if options.tls else 1883)
        self.client = None
        self._connected = threading.Event()
        self._mids: dict[int, str] = {}  # mid -> fire message id; only the forwarder thread touches it
        self._pubacks: deque = deque()  # (mid, failed) from paho's thread
        self.connect_failures = 0
        if options.password_env and options.password_env not in os.environ:
            raise FirespotterError(f"mqtt sink {name}: password_env {options.password_env} is not set in the environment")
        for what in ("ca_certs", "certfile", "keyfile"):
            path = getattr(options, what)
            if path is not None and not Path(path).is_file():
                raise FirespotterError(f"mqtt sink {name}: {what} {path} does not exist")

    # --- transport ----------------------------------------------------------------------------------

    def _open(self) -> None:
        import paho.mqtt.client as mqtt

        o = self.options
        protocol = mqtt.MQTTv5 if o.protocol == "5" else mqtt.MQTTv311
        client_id = o.client_id or f"firespotter-{self.drone_id}-{self.name}"
        kwargs = {} if protocol == mqtt.MQTTv5 else {"clean_session": True}
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs)
        client.max_inflight_messages_set(o.window)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=min(o.min_backoff_s, o.reconnect_max_s), max_delay=o.reconnect_max_s)
        if o.username:
            password = os.environ.get(o.password_env) if o.password_env else o.password
            client.username_pw_set(o.username, password)
        if o.tls:
            client.tls_set(ca_certs=str(o.ca_certs) if o.ca_certs else None,
                           certfile=str(o.certfile) if o.certfile else None,
                           keyfile=str(o.keyfile) if o.keyfile else None)
            if o.tls_insecure:
                client.tls_insecure_set(True)
        if o.availability:  # the broker publishes this the moment the connection dies (crash, SIGKILL, lost link)
            client.will_set(availability.topic(self.drone_id), availability.OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        self.client = client
        self._check_resolves()
        client.connect_async(o.host, self.port, keepalive=o.keepalive_s)
        client.loop_start()

    def _check_resolves(self) -> bool:
        try:
            socket.getaddrinfo(self.options.host, self.port, type=socket.SOCK_STREAM)
            return True
        except socket.gaierror as exc:
            pending = self.outbox.pending() if self.outbox else 0
            self.link_error = f"broker host {self.options.host!r} does not resolve ({exc.strerror})"
            log.error("mqtt sink %s: %s; fire messages stay in the outbox (%d waiting) and the sink keeps retrying",
                      self.name, self.link_error, pending)
            return False

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if getattr(reason_code, "is_failure", False):
            self.link_error = f"broker {self.options.host}:{self.port} refused the connection: {reason_code}"
            log.error("mqtt sink %s: %s", self.name, self.link_error)
            return
        if self.connect_failures or self.link_error:
            log.info("mqtt sink %s: connected to %s:%d", self.name, self.options.host, self.port)
        self.link_error = None
        self.connect_failures = 0
        if self.options.availability:
            client.publish(availability.topic(self.drone_id), availability.ONLINE, qos=1, retain=True)
        self._connected.set()
        if self.forwarder is not None:
            self.forwarder.wake()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._closed:
            self.link_error = f"disconnected from {self.options.host}:{self.port} ({reason_code})"
            log.warning("mqtt sink %s: %s; reconnecting, fire messages wait in the outbox", self.name, self.link_error)

    def _on_connect_fail(self, client, userdata) -> None:
        self.connect_failures += 1
        n = self.connect_failures
        if n <= 3 or n % 20 == 0:
            if self._check_resolves():
                pending = self.outbox.pending() if self.outbox else 0
                self.link_error = f"cannot connect to broker {self.options.host}:{self.port}"
                log.error("mqtt sink %s: %s (attempt %d); %d fire messages wait in the outbox", self.name,
                          self.link_error, n, pending)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # paho's network thread, paho's locks held: only hand the mid over. PUBACK for QoS 1 (also called for
        # QoS 0 state messages once written: those mids are not in the map and are ignored).
        self._pubacks.append((mid, bool(getattr(reason_code, "is_failure", False))))
        self.forwarder.wake()

    def _collect_acks(self) -> None:
        # The forwarder thread publishes and records mids, and resolves PUBACKs here: no race between the two.
        acked = []
        while self._pubacks:
            mid, failed = self._pubacks.popleft()
            msg_id = self._mids.pop(mid, None)
            if msg_id is None:
                continue
            if failed:  # stays in the outbox, resent after resend_after_s
                log.warning("mqtt sink %s: broker refused message %s", self.name, msg_id)
                continue
            acked.append(msg_id)
        if acked:
            self.forwarder.acked(acked)

    def _ready(self) -> bool:
        return self._connected.is_set()

    def _publish(self, item: OutboxItem) -> None:
        info = self.client.publish(item.topic, self.signed(item.payload), qos=self.options.fire_qos)
        if info.rc != 0 and info.mid == 0:
            raise ConnectionError(f"publish failed: rc {info.rc}")
        self._mids[info.mid] = item.id
        if len(self._mids) > 8 * self.options.window + 64:  # mids of messages resent under a new mid, never acked
            for mid in list(self._mids)[: len(self._mids) // 2]:
                del self._mids[mid]

    def _publish_state(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=self.options.state_qos, retain=self.options.retain_state)

    def _close_transport(self) -> None:
        if self.client is not None:
            try:
                if self.options.availability and self._connected.is_set():  # a clean stop: no will, say it
                    info = self.client.publish(availability.topic(self.drone_id), availability.OFFLINE, qos=1,
                                               retain=True)
                    info.wait_for_publish(1.0)
            except (RuntimeError, ValueError) as exc:
                log.debug("mqtt sink %s: offline not sent: %s", self.name, exc)
            try:
                self.client.disconnect()
            finally:
                self.client.loop_stop()


def make_mqtt_sink(options: MqttOptions, name: str = "mqtt") -> MqttSink:
    return MqttSink(options, name)


@hookimpl
def register_sinks():
    return [SinkSpec("mqtt", make_mqtt_sink, "wire v1 messages to an MQTT broker (QoS 1 fire, outbox until PUBACK)",
                     options_model=MqttOptions, available=module_available("paho.mqtt.client", extra="mqtt"))]
