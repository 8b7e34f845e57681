"""tak: fire regions, fire sites and the drone itself as Cursor-on-Target for ATAK, WinTAK and iTAK (docs/tak.md).

Every gated fire frame (the same gate as the other network sinks) becomes CoT events: a polygon and a point
per geo-referenced fire region, deletes for regions that went out. They are stored in the outbox before
sending and leave it once delivered: over TCP/TLS once the connection outlived the write by `confirm_s`
(TAK streams have no acknowledgement), over UDP when the datagrams are sent. The drone's own track and
camera footprint go out every `state_interval_s`, best effort, like the `state` heartbeat of the others.

    [[sinks]]
    type = "tak"
    url = "tls://tak.example.org:8089"
    certfile = "/etc/firespotter/tak-client.pem"
    keyfile = "/etc/firespotter/tak-client.key"
    cafile = "/etc/firespotter/tak-ca.pem"
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from pathlib import Path

from typing import Literal

from pydantic import Field, field_validator, model_validator

from firespotter.net import cot, wire
from firespotter.net.outbox import OutboxItem
from firespotter.net.sink import NetworkSink, NetworkSinkOptions
from firespotter.net.takstream import CotLink, parse_url, tls_context
from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import SinkSpec, module_available

log = logging.getLogger("firespotter.sinks.tak")


class TakOptions(NetworkSinkOptions):
    url: str = Field("udp://239.2.3.1:6969", description="tcp://host:8087, tls://host:8089 or udp://group:port "
                     "(default: the SA multicast group TAK clients listen on without a server)")
    certfile: Path | None = Field(None, description="tls: client certificate (PEM, or .p12 with password_env)")
    keyfile: Path | None = Field(None, description="tls: the certificate's private key (PEM)")
    cafile: Path | None = Field(None, description="tls: CA that signed the TAK server's certificate")
    password_env: str | None = Field(None, description="tls: environment variable with the key or .p12 password")
    check_hostname: bool = Field(True, description="tls: the server certificate must name the url's host")
    server_hostname: str | None = Field(None, description="tls: the name the server certificate carries, "
                                        "when it differs from the url's host")
    stale_s: float = Field(900.0, gt=0, description="fire shapes go stale this long after capture (= the fire "
                           "map's window, `listen --window-s`)")
    track_stale_s: float = Field(15.0, gt=0, description="the drone's track goes stale this long after a report")
    callsign: str | None = Field(None, max_length=64, description="shown on TAK maps; default the drone id")
    uid_prefix: str = Field("firespotter", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    drone_type: str = Field("a-f-A-M-F-Q", pattern=r"^a-[fnu]-A(-[A-Za-z]+)*$",
                            description="CoT type of the drone (friendly air UAV)")
    site_type: str = Field("b-m-p-s-m", pattern=r"^[a-z](-[A-Za-z0-9]+)+$", description="CoT type of a fire site")
    footprint: bool = Field(True, description="send the camera's ground footprint with the drone track")
    tolerance_m: float = Field(0.25, gt=0, le=50, description="fire outlines are simplified by at most this")
    max_vertices: int = Field(256, ge=8, le=1024, description="at most this many vertices per fire outline")
    confirm_s: float = Field(1.0, ge=0, description="tcp/tls: a write counts as delivered once the connection "
                             "stayed up this long after it")
    connect_timeout_s: float = Field(5.0, gt=0)
    min_backoff_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    protocol: Literal["xml", "protobuf"] = Field("xml", description="udp: CoT XML, or TAK Protocol Version 1 "
                                                 "mesh (protobuf) datagrams")
    multicast_ttl: int = Field(1, ge=0, le=255, description="udp multicast: hops the datagrams may cross")
    multicast_interface: str | None = Field(None, description="udp multicast: address of the interface to send "
                                            "from (default: the route's)")
    resend_after_s: float = Field(10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            parse_url(v)
        except FirespotterError as exc:  # pydantic reports ValueErrors with the key's name
            raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _protobuf_on_udp(self):
        if self.protocol == "protobuf" and parse_url(self.url).scheme != "udp":
            raise ValueError("protocol = \"protobuf\" is for udp:// (mesh); a TAK server negotiates protobuf on a "
                             "stream itself and reads XML from every client")
        return self


class TakSink(NetworkSink):
    transport = "tak"
    signs_wire = False  # CoT events, not wire messages: TLS client certificates protect the link

    def __init__(self, options: TakOptions, name: str = "tak"):
        super().__init__(options, name)
        self.options: TakOptions = options
        self.url = parse_url(options.url)
        ctx = None
        if self.url.scheme == "tls":
            if options.certfile is None:
                raise FirespotterError(f"tak sink {name}: {options.url} needs a client certificate",
                                       "set certfile (and keyfile, cafile) as your TAK server issued them")
            password = None
            if options.password_env:
                if options.password_env not in os.environ:
                    raise FirespotterError(f"tak sink {name}: password_env {options.password_env} is not set")
                password = os.environ[options.password_env]
            ctx = tls_context(options.certfile, options.keyfile, options.cafile, password,
                              check_hostname=options.check_hostname, where=f"tak sink {name}")
        self.link = CotLink(self.url, ssl_ctx=ctx, server_hostname=options.server_hostname,
                            connect_timeout_s=options.connect_timeout_s, min_backoff_s=options.min_backoff_s,
                            max_backoff_s=options.reconnect_max_s, multicast_ttl=options.multicast_ttl,
                            multicast_interface=options.multicast_interface, name=name,
                            on_change=self._on_change)
        self._written: deque[tuple[str, float, int]] = deque()  # (id, monotonic time, link generation)
        self._previous_regions = 0
        self.events_sent = 0
        self._style: cot.CotStyle | None = None

    @property
    def style(self) -> cot.CotStyle:
        if self._style is None:
            o = self.options
            self._style = cot.CotStyle(uid_prefix=o.uid_prefix, callsign=o.callsign, drone_type=o.drone_type,
                                       site_type=o.site_type, stale_s=o.stale_s, track_stale_s=o.track_stale_s,
                                       tolerance_m=o.tolerance_m, max_vertices=o.max_vertices)
        return self._style

    # --- results: CoT instead of wire v1 --------------------------------------------------------------

    def send(self, result) -> None:
        if not self._started:
            self.start({})
        now = time.monotonic()
        with self._lock:
            self._last, self._last_mono = result, now
            self._frames += 1
            self._times.append(now)
        if not self.gate.admit(result):
            return
        alert = getattr(result.alert, "value", str(result.alert))
        events = cot.fire_events(result.regions, self.drone_id, int(result.t_wall_ns), self.style, alert=alert,
                                 previous=self._previous_regions, seq=int(result.seq))
        if not events:
            return  # no geo outline and nothing to delete: TAK has no use for pixel outlines
        self._previous_regions = sum(1 for e in events if e.get("type") == self.style.shape_type)
        msg_id = wire.new_id()
        self.outbox.put(msg_id, f"cot/{self.drone_id}/fire", cot.encode(events), seq=int(result.seq),
                        rank=wire.ALERT_RANK.get(alert, 0), has_mask=False)
        self.fire_messages += 1
        self.last_fire_id = msg_id
        self.forwarder.wake()

    # --- the drone's track (instead of the `state` heartbeat) ------------------------------------------

    def _footprint(self, result):
        if not self.options.footprint or result.pose is None:
            return None
        from firespotter.runtime.geo import Camera, project_polygon

        h, w = result.mask.shape[:2]
        try:
            camera = Camera.from_config(self.info.get("camera"), width=w, height=h, hfov_deg=result.pose.hfov_deg)
            ring, _, _ = project_polygon([[0, 0], [w, 0], [w, h], [0, h]], result.pose, camera)
            return ring
        except ValueError:
            return None  # a pose at or below the ground: no footprint, the track still goes out

    def _send_state(self, running: bool = True) -> None:
        with self._lock:
            last = self._last
        if not self._ready() or last is None or last.pose is None:
            return
        t_ns = time.time_ns()
        state = getattr(last.source_state, "value", str(last.source_state))
        events = cot.drone_events(last.pose, self.drone_id, t_ns, self.style, footprint=self._footprint(last),
                                  stale_s=None if running else 0.0, remarks=f"firespotter: camera {state}")
        payload = cot.encode(events)
        self.link.send(payload, self._datagrams(payload) if self.url.scheme == "udp" else None)
        self.state_messages += 1

    # --- transport ------------------------------------------------------------------------------------

    def _on_change(self, connected: bool) -> None:
        self.link_error = self.link.error
        if connected and self.forwarder is not None:
            self.forwarder.reset_backoff()  # resend what the lost connection may have swallowed, now

    def _open(self) -> None:
        self.link.start()

    def _ready(self) -> bool:
        return self.link.connected

    def _datagrams(self, payload: bytes) -> list[bytes]:
        lines = cot.split(payload)
        return [cot.mesh(line) for line in lines] if self.options.protocol == "protobuf" else lines

    def _publish(self, item: OutboxItem) -> None:
        datagrams = self._datagrams(item.payload) if self.url.scheme == "udp" else None
        generation = self.link.send(item.payload, datagrams)
        self.events_sent += len(cot.split(item.payload))
        self._written.append((item.id, time.monotonic(), generation))

    def _collect_acks(self) -> None:
        # Stream writes are acknowledged by time: the connection that took them stayed up confirm_s after.
        # A write into a connection that was lost since stays in the outbox and is sent again.
        udp = self.url.scheme == "udp"
        now, gen, up = time.monotonic(), self.link.generation, self.link.connected
        acked = []
        while self._written:
            msg_id, t, g = self._written[0]
            if g != gen or not up:
                self._written.popleft()  # lost with its connection: the forwarder resends it
                continue
            if not udp and now - t < self.options.confirm_s:
                break
            self._written.popleft()
            acked.append(msg_id)
        if acked:  # the rest is looked at again on the forwarder's next round (every 0.25 s at most)
            self.forwarder.acked(acked)

    def _publish_state(self, topic: str, payload: bytes) -> None:
        self.link.send(payload, self._datagrams(payload) if self.url.scheme == "udp" else None)

    def _close_transport(self) -> None:
        self.link.close()

    def stats(self):
        out = super().stats()
        out.update(events_sent=self.events_sent, bytes_sent=self.link.bytes_sent, url=str(self.url))
        return out


def make_tak_sink(options: TakOptions, name: str = "tak") -> TakSink:
    return TakSink(options, name)


@hookimpl
def register_sinks():
    return [SinkSpec("tak", make_tak_sink, "fire regions and the drone as Cursor-on-Target for ATAK/WinTAK/iTAK "
                     "(TCP, TLS, UDP multicast; outbox until delivered)",
                     options_model=TakOptions, available=module_available("pytak", extra="tak"))]
