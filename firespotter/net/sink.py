"""The skeleton the zenoh and mqtt sinks share: send/flush/close/start for a transport that implements `_open`,
`_ready`, `_publish`, `_publish_state` and `_close_transport`. It owns the fire gate (rate and material change),
the outbox, the forwarder and a `state` heartbeat thread."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from firespotter.runtime.config import OutboxOptions
from firespotter.runtime.errors import FirespotterError

from . import auth, snapshot, wire
from .forwarder import Forwarder
from .gate import FireGate
from .outbox import Outbox, OutboxItem, default_outbox_dir

log = logging.getLogger("firespotter.outbox")


class NetworkSinkOptions(BaseModel):
    """Options every network sink shares ([[sinks]] keys)."""

    model_config = ConfigDict(extra="forbid")
    drone_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                                 description="default: [runtime] drone_id")
    min_interval_ms: float = Field(1000.0, ge=0, description="at most one fire message per this interval...")
    change_frac: float = Field(0.2, ge=0, description="...unless area or perimeter changed by more than this")
    min_alert: Literal["suspect", "fire"] = Field("suspect", description="lowest alert level that sends a fire message")
    mask_max_side: int = Field(256, ge=0, le=8192, description="mask PNG's longer side; 0 = no mask")
    state_interval_s: float = Field(1.0, gt=0)
    stall_after_s: float = Field(3.0, gt=0, description="no frame for this long: state says stalled")
    outbox: Path | None = Field(None, description="outbox file; default <outbox dir>/outbox-<sink name>.sqlite")
    outbox_max_messages: int | None = Field(None, ge=1)
    outbox_max_mb: float | None = Field(None, gt=0)
    window: int = Field(32, ge=1, le=10_000, description="fire messages in flight (unacknowledged) at once")
    resend_after_s: float = Field(10.0, gt=0, description="resend an unacknowledged message after this")
    max_backoff_s: float = Field(120.0, gt=0, description="cap of the resend wait for a message sent and not yet "
                                 "acknowledged (doubling from resend_after_s); not the reconnect backoff")
    close_timeout_s: float = Field(2.0, ge=0, description="at close, wait this long for the outbox to drain")
    auth_key: Path | None = Field(None, description="this drone's private key (NAME.key from `firespotter keys new "
                                                    "NAME`): every message is signed (docs/security.md)")
    trusted_keys: list[Path] = Field(default_factory=list, description="ground stations' public keys (NAME.pub files "
                                     "or folders of them): only acks they signed empty the outbox")
    auth_max_age_s: float = Field(300.0, gt=0, le=86400, description="acks signed longer ago than this are refused")
    snapshot: Literal["off", "crop", "frame"] = Field("off", description="a JPEG with each fire message: of the "
                                                      "frame, or of a crop around the fire regions")
    snapshot_max_side: int = Field(480, ge=16, le=4096, description="the snapshot's longer side, pixels")
    snapshot_quality: int = Field(75, ge=10, le=95, description="JPEG quality (lowered to fit snapshot_max_kb)")
    snapshot_max_kb: float = Field(48.0, gt=1, le=384, description="the snapshot's largest size, kB")


def _temperature_c() -> float | None:
    best = None
    try:
        for zone in Path("/sys/class/thermal").glob("thermal_zone*/temp"):
            try:
                t = int(zone.read_text().strip()) / 1000.0
            except (OSError, ValueError):
                continue
            best = t if best is None else max(best, t)
    except OSError:
        return None
    return best


class NetworkSink:
    """A sink that publishes wire messages through a transport with an outbox. Subclasses implement:

    - `transport` (class attribute): "mqtt" | "zenoh"
    - `_open()`: start connecting (non-blocking; reconnects itself)
    - `_ready() -> bool`: can fire messages be sent now
    - `_publish(item: OutboxItem)`: send one stored fire message (ack comes later through `self.forwarder.acked`)
    - `_publish_state(topic, payload)`: best effort, not stored
    - `_close_transport()`
    - `link_error` attribute: the last connection problem, for state messages
    """

    needs_image = False
    transport = "?"
    signs_wire = True  # False for sinks whose messages are not wire v1 (their link has its own protection)

    def __init__(self, options: NetworkSinkOptions, name: str):
        self.name = name
        self.options = options
        self.drone_id = options.drone_id or "drone-1"
        self.info: dict[str, Any] = {}
        self.gate = FireGate(options.min_interval_ms, options.change_frac, options.min_alert)
        self.outbox: Outbox | None = None
        self.forwarder: Forwarder | None = None
        self.link_error: str | None = None
        self.fire_messages = 0
        self.state_messages = 0
        self.last_fire_id: str | None = None
        self._last = None  # last Result seen
        self._last_mono = 0.0
        self._frames = 0
        self._times: deque[float] = deque(maxlen=64)
        self._started = False
        self._closed = False
        self._hb_stop = threading.Event()
        self._hb: threading.Thread | None = None
        self._lock = threading.Lock()
        self.needs_image = options.snapshot != "off"  # the pipeline hands the frame only to sinks that ask
        self.signer: auth.Signer | None = None
        self.ack_verifier: auth.Verifier | None = None
        self._load_keys()

    def _load_keys(self) -> None:
        o = self.options
        if not self.signs_wire:  # e.g. TAK: CoT events, not wire messages; TLS client certificates protect them
            if o.auth_key is not None or o.trusted_keys:
                raise FirespotterError(f"{self.transport} sink {self.name}: auth_key and trusted_keys apply to wire "
                                       "messages only (mqtt, zenoh)", "protect this link with TLS (docs/security.md)")
            return
        try:
            if o.auth_key is not None:
                self.signer = auth.Signer.from_file(o.auth_key)
            if o.trusted_keys:
                self.ack_verifier = auth.Verifier(auth.load_public_keys(o.trusted_keys), max_age_s=o.auth_max_age_s)
        except wire.WireError as exc:
            raise FirespotterError(f"{self.transport} sink {self.name}: {exc}",
                                   "make keys with `firespotter keys new NAME` (docs/security.md)") from None
        if self.signer is not None and o.drone_id and self.signer.name != o.drone_id:
            raise FirespotterError(f"{self.transport} sink {self.name}: auth_key {o.auth_key} is {self.signer.name!r}'s "
                                   f"key, but this sink sends as {o.drone_id!r}")
        if self.signer is None:
            log.warning("%s sink %s: no auth_key: messages are unsigned and acks unauthenticated (docs/security.md)",
                        self.transport, self.name)

    def signed(self, payload: bytes) -> bytes:
        """The bytes to put on the wire: signed at each send (a resend gets a fresh signing time)."""
        return payload if self.signer is None else self.signer.sign(payload)

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self, info: dict[str, Any] | None = None) -> None:
        if self._started:
            return
        self.info = dict(info or {})
        if not self.options.drone_id and self.info.get("drone_id"):
            self.drone_id = str(self.info["drone_id"])
        if self.signer is not None and self.signer.name != self.drone_id:
            raise FirespotterError(f"{self.transport} sink {self.name}: auth_key {self.options.auth_key} is "
                                   f"{self.signer.name!r}'s key, but this drone is {self.drone_id!r}")
        self.outbox = self._make_outbox()
        self.forwarder = Forwarder(self.outbox, self._publish, ready=self._ready, window=self.options.window,
                                   resend_after_s=self.options.resend_after_s, max_backoff_s=self.options.max_backoff_s,
                                   name=f"{self.transport} sink {self.name}", collect_acks=self._collect_acks)
        self._open()
        self.forwarder.start()
        self._hb = threading.Thread(target=self._heartbeat, name=f"state-{self.name}", daemon=True)
        self._hb.start()
        self._started = True

    def _make_outbox(self) -> Outbox:
        cfg = OutboxOptions.model_validate(self.info.get("outbox") or {})
        path = self.options.outbox or (cfg.dir or default_outbox_dir()) / f"outbox-{self.name}.sqlite"
        max_messages = self.options.outbox_max_messages or cfg.max_messages
        max_mb = self.options.outbox_max_mb or cfg.max_mb
        return Outbox(path, max_messages=max_messages, max_bytes=int(max_mb * (1 << 20)), synchronous=cfg.synchronous,
                      name=f"{self.name}")

    def outbox_depth(self) -> int:
        """Messages stored and not yet acknowledged (the firespotter_outbox_depth{sink=...} metric)."""
        return self.outbox.pending() if self.outbox is not None else 0

    def outbox_health(self) -> dict[str, Any]:
        """For /metrics and /readyz: degraded (in memory), recovered (from a corrupt file), salvaged, lost."""
        o = self.outbox
        if o is None:
            return {"degraded": None, "recovered": None, "salvaged": 0, "lost": 0}
        return {"degraded": o.degraded, "recovered": o.recovered, "salvaged": o.salvaged, "lost": o.lost}

    def auth_rejected(self) -> dict[str, int]:
        """Acks refused by authentication, by reason (auth.REASONS); empty without trusted_keys."""
        return dict(self.ack_verifier.rejected) if self.ack_verifier is not None else {}

    def flush(self) -> None:
        if self.forwarder is not None:
            self.forwarder.wake()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._started:
            if self._ready() and self.options.close_timeout_s > 0:
                self.forwarder.wait_drained(self.options.close_timeout_s)
            self._hb_stop.set()
            if self._hb is not None:
                self._hb.join(2.0)
            try:
                self._send_state(running=False)
            except Exception as exc:
                log.debug("final state message failed: %s", exc)
            self.forwarder.stop()
            # Exactly what stays (on disk, sent by the next run) and what is lost (held in memory only).
            memory = self.outbox.in_memory()
            stored = self.outbox.pending() - memory
            if stored > 0:
                log.warning("%s sink %s: %d fire messages not yet acknowledged stay in the outbox %s for the next run",
                            self.transport, self.name, stored, self.outbox.path)
            if memory:
                log.error("%s sink %s: %d fire messages not yet acknowledged were held in memory only (%s) and are "
                          "lost at exit", self.transport, self.name, memory, self.outbox.degraded)
            try:
                self._close_transport()
            finally:
                self.outbox.close()

    # --- results ------------------------------------------------------------------------------------

    def send(self, result) -> None:
        if not self._started:
            self.start({})
        now = time.monotonic()
        with self._lock:
            self._last = result
            self._last_mono = now
            self._frames += 1
            self._times.append(now)
        if not self.gate.admit(result):
            return
        # Geo polygons come from the `geo` processor upstream; the message says "no_pose"/"failed" otherwise.
        o = self.options
        snap = (snapshot.encode(result.image, result.regions, o.snapshot, max_side=o.snapshot_max_side,
                                quality=o.snapshot_quality, max_bytes=int(o.snapshot_max_kb * 1024))
                if o.snapshot != "off" else None)
        msg = wire.fire_message(result, self.drone_id, mask_max_side=o.mask_max_side, snapshot=snap)
        payload = wire.dumps(msg)
        self.outbox.put(msg["id"], wire.topic(self.drone_id, "fire"), payload, seq=msg["seq"],
                        rank=wire.ALERT_RANK[msg["alert"]], has_mask=msg["mask"] is not None or snap is not None)
        self.fire_messages += 1
        self.last_fire_id = msg["id"]
        self.forwarder.wake()

    # --- state heartbeat ----------------------------------------------------------------------------

    def state_message(self, running: bool = True) -> dict[str, Any]:
        with self._lock:
            last = self._last
            last_mono = self._last_mono
            times = list(self._times)
            frames = self._frames
        now = time.monotonic()
        recent = [t for t in times if now - t <= 5.0]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 and recent[-1] > recent[0] else 0.0
        if now - last_mono > 5.0:
            fps = 0.0
        adapter_name = self.info.get("adapter")
        if last is None:
            source_state, seq, t_cap, no_frame, model, drops, alert = "connecting", -1, None, None, None, {}, None
            model = ({"id": str(self.info.get("model_id")), "precision_exec": self.info.get("precision_exec", "fp32"),
                      "weight_bits": int(self.info.get("weight_bits", 32)), "simulated": bool(self.info.get("simulated", False))}
                     if self.info.get("model_id") else None)
        else:
            no_frame = now - last_mono
            source_state = getattr(last.source_state, "value", str(last.source_state))
            if source_state == "streaming" and no_frame > self.options.stall_after_s:
                source_state = "stalled"  # no frame for longer than the stall threshold: that is what STALLED means
            seq, t_cap = last.seq, last.t_wall_ns
            model = wire.model_dict(last.model_id, last.precision)
            drops = dict(last.drops or {})
            alert = getattr(last.alert, "value", str(last.alert))
        adapter_state = "off" if not adapter_name else str((last.meta or {}).get("adapter_state", "active") if last else "active")
        return wire.state_message(
            self.drone_id, seq=seq, t_capture_ns=t_cap, running=running, source_state=source_state,
            no_frame_s=no_frame, fps=fps, frames=frames, drops=drops, model=model,
            adapter={"name": adapter_name, "state": adapter_state}, alert=alert, temperature_c=_temperature_c(),
            outbox=self.outbox.stats() if self.outbox is not None else None, transport=self.transport,
            connected=bool(self._ready()), link_error=self.link_error)

    def _send_state(self, running: bool = True) -> None:
        if not self._ready():
            return
        msg = self.state_message(running)
        self._publish_state(wire.topic(self.drone_id, "state"), self.signed(wire.dumps(msg)))
        self.state_messages += 1

    def _heartbeat(self) -> None:
        while not self._hb_stop.wait(self.options.state_interval_s):
            try:
                self._send_state()
            except Exception as exc:
                log.debug("%s sink %s: state message failed: %s", self.transport, self.name, exc)

    def stats(self) -> dict[str, Any]:
        f = self.forwarder
        return {"fire_messages": self.fire_messages, "state_messages": self.state_messages,
                "suppressed": self.gate.suppressed, "sent": f.sent if f else 0, "resent": f.resent if f else 0,
                "acked": f.acked_total if f else 0, "outbox": self.outbox.stats() if self.outbox else None,
                "link_error": self.link_error}

    # --- transport (subclasses) -----------------------------------------------------------------------

    def _open(self) -> None:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _publish(self, item: OutboxItem) -> None:
        raise NotImplementedError

    def _publish_state(self, topic: str, payload: bytes) -> None:
        raise NotImplementedError

    def _close_transport(self) -> None:
        raise NotImplementedError

    def _collect_acks(self) -> None:
        """Optional: turn transport-level acks into `self.forwarder.acked(ids)` on the forwarder thread."""
