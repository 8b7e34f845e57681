"""Store-and-forward for the network sinks (DESIGN §8): a SQLite (WAL) outbox, the thread that drains it,
and the sink skeleton the zenoh and mqtt sinks share.

- `Outbox`: `fire` messages are written here *before* they are sent and leave only when acknowledged (MQTT
  PUBACK; for Zenoh an `ack` from a ground station). Oldest first. Bounded (messages and bytes): over the
  bound, masks are stripped first (oldest first; the message keeps its id and says `mask_dropped`), then
  the oldest non-alert messages go, then the oldest alerts. It survives a process kill (WAL, every put is
  a committed transaction). When the disk under it fails (full, read-only, gone), that is logged and
  reported in `stats()["degraded"]`, and the outbox goes on in memory (same bound) so the pipeline goes on;
  the disk is tried again every `retry_s`.
- `Forwarder`: one thread per sink that sends what is due, keeps at most `window` messages in flight,
  resends an unacknowledged message after `resend_after_s` (doubling per attempt up to `max_backoff_s`),
  and removes acknowledged ones. A resend carries the same bytes, hence the same id.
- `NetworkSink`: send/flush/close/start for a transport that implements `_open`, `_ready`, `_publish`,
  `_publish_state`, `_close_transport`: fire gate (rate and material change), geo-referencing from the
  result's pose, the outbox, the forwarder and a 1 s `state` heartbeat thread.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field

from . import wire
from .errors import FirespotterError

log = logging.getLogger("firespotter.outbox")


@dataclass
class OutboxItem:
    id: str
    topic: str
    payload: bytes
    seq: int
    rank: int  # alert rank: 2 fire, 1 suspect, 0 none
    created_ns: int
    n: int = 0  # insertion order


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    seq INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    has_mask INTEGER NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
"""


class OutboxError(FirespotterError):
    """The outbox cannot be used as configured (bad path, bad bound)."""


class Outbox:
    def __init__(self, path: str | os.PathLike | None, *, max_messages: int = 10_000, max_bytes: int = 256 << 20,
                 synchronous: Literal["normal", "full"] = "normal", retry_s: float = 30.0,
                 shrink: Callable[[bytes], bytes | None] | None = wire.strip_mask, name: str = "outbox"):
        if max_messages < 1 or max_bytes < 1024:
            raise OutboxError(f"outbox {name}: max_messages must be >= 1 and max_bytes >= 1024")
        self.path = None if path is None else Path(path)
        self.name = name
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.synchronous = synchronous
        self.retry_s = retry_s
        self.shrink = shrink
        self.degraded: str | None = None
        self.dropped = 0
        self.masks_dropped = 0
        self.disk_errors = 0
        self._retry_at = 0.0
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._mem: OrderedDict[str, tuple[OutboxItem, bool]] = OrderedDict()  # id -> (item, has_mask)
        self._unacked_deletes: set[str] = set()  # acked, but the delete could not be written yet
        self._count = 0
        self._bytes = 0
        if self.path is None:
            self._degrade("no path configured")
        else:
            self._open()

    # --- disk ---------------------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), timeout=5.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            db.executescript(_SCHEMA)
            count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages").fetchone()
        except (sqlite3.Error, OSError) as exc:
            self._degrade(f"cannot open {self.path}: {exc}")
            return
        self._db = db
        self._count, self._bytes = int(count), int(size)
        if count:
            log.info("outbox %s: %d messages from a previous run waiting to be sent", self.name, count)

    def _degrade(self, why: str) -> None:
        self.disk_errors += 1
        self._retry_at = time.monotonic() + self.retry_s
        if self.degraded is None:
            log.error("outbox %s: %s; going on without persistence (messages kept in memory, up to %d, until "
                      "the disk works again)", self.name, why, self.max_messages)
        self.degraded = why

    def _disk_ok(self) -> bool:
        """True when the database can be written now (retries a failed disk every retry_s)."""
        if self.degraded is None:
            return self._db is not None
        if self.path is None or time.monotonic() < self._retry_at:
            return False
        if self._db is None:
            self._open()
            if self._db is None:
                return False
        return True  # try it: the caller's write tells

    def _recovered(self) -> None:
        if self.degraded is not None:
            log.warning("outbox %s: the disk works again (%s); persisting again", self.name, self.path)
            self.degraded = None

    def _rollback(self) -> None:
        # SQLite rolls a transaction back by itself on some errors (SQLITE_FULL, IOERR): a second ROLLBACK would
        # raise "no transaction is active" and hide the real cause (a full disk) from the log and `degraded`.
        if self._db is not None and self._db.in_transaction:
            self._db.execute("ROLLBACK")

    # --- API ----------------------------------------------------------------------------------------

    def put(self, msg_id: str, topic: str, payload: bytes, *, seq: int = -1, rank: int = 2,
            has_mask: bool = True) -> None:
        """Store a message before it is sent. Never raises for disk trouble (see `degraded`)."""
        item = OutboxItem(msg_id, topic, bytes(payload), int(seq), int(rank), time.time_ns())
        with self._lock:
            if self._disk_ok():
                try:
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO messages (id, topic, seq, rank, created_ns, has_mask, size, payload)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (item.id, item.topic, item.seq, item.rank, item.created_ns, int(has_mask), len(item.payload),
                         item.payload))
                    if cur.rowcount:
                        self._count += 1
                        self._bytes += len(item.payload)
                    self._recovered()
                    self._enforce_bound()
                    return
                except (sqlite3.Error, OSError) as exc:
                    self._degrade(f"cannot write {self.path}: {exc}")
            self._mem[item.id] = (item, has_mask)
            self._count += 1
            self._bytes += len(item.payload)
            self._enforce_bound()

    def due(self, limit: int, exclude: Iterable[str] = ()) -> list[OutboxItem]:
        """Up to `limit` stored messages, oldest first, skipping the ids in `exclude` (in flight)."""
        if limit <= 0:
            return []
        skip = set(exclude) | self._unacked_deletes
        out: list[OutboxItem] = []
        with self._lock:
            if self._db is not None:
                try:
                    # ids first (cheap), payloads only for the chosen ones: in-flight messages are skipped often
                    heads = self._db.execute("SELECT n, id FROM messages ORDER BY n LIMIT ?",
                                             (limit + len(skip),)).fetchall()
                    chosen = [n for n, i in heads if i not in skip][:limit]
                    if chosen:
                        marks = ",".join("?" * len(chosen))
                        rows = self._db.execute(
                            f"SELECT n, id, topic, payload, seq, rank, created_ns FROM messages WHERE n IN ({marks}) "
                            "ORDER BY n", chosen).fetchall()
                        out = [OutboxItem(i, t, bytes(p), s, r, c, n) for n, i, t, p, s, r, c in rows]
                except sqlite3.Error as exc:
                    log.error("outbox %s: cannot read %s: %s", self.name, self.path, exc)
            if self._mem:
                mem = [it for it, _ in self._mem.values() if it.id not in skip][:limit]
                out = sorted(out + mem, key=lambda it: it.created_ns)
        return out[:limit]

    def ack(self, ids: Iterable[str]) -> int:
        """Remove acknowledged messages. Returns how many were stored."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return 0
        removed = 0
        with self._lock:
            todo = []
            for i in ids:
                entry = self._mem.pop(i, None)
                if entry is not None:
                    removed += 1
                    self._count -= 1
                    self._bytes -= len(entry[0].payload)
                else:
                    todo.append(i)
            todo += [i for i in self._unacked_deletes if i not in todo]
            if todo and self._db is not None:
                try:
                    size = 0
                    n = 0
                    for k in range(0, len(todo), 500):
                        chunk = todo[k : k + 500]
                        marks = ",".join("?" * len(chunk))
                        self._db.execute("BEGIN IMMEDIATE")
                        try:
                            got = self._db.execute(f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages WHERE id IN ({marks})",
                                                   chunk).fetchone()
                            self._db.execute(f"DELETE FROM messages WHERE id IN ({marks})", chunk)
                            self._db.execute("COMMIT")
                        except BaseException:
                            self._rollback()
                            raise
                        n += got[0]
                        size += got[1]
                    removed += n
                    self._count -= n
                    self._bytes -= size
                    self._unacked_deletes.clear()
                except (sqlite3.Error, OSError) as exc:
                    # The message was delivered; never send it again, even if the delete cannot be written now.
                    self._unacked_deletes.update(todo)
                    self._degrade(f"cannot delete acknowledged messages from {self.path}: {exc}")
        return removed

    def pending(self) -> int:
        return max(0, self._count - len(self._unacked_deletes))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            oldest = None
            items = self.due(1)
            if items:
                oldest = round(max(0.0, (time.time_ns() - items[0].created_ns) / 1e9), 3)
            return {"pending": self.pending(), "bytes": max(0, self._bytes), "oldest_age_s": oldest,
                    "dropped": self.dropped, "masks_dropped": self.masks_dropped, "degraded": self.degraded}

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                try:
                    self._db.close()
                except sqlite3.Error:
                    pass
                self._db = None
            if self._mem:
                log.warning("outbox %s: %d messages were held in memory only (disk: %s) and are lost at exit",
                            self.name, len(self._mem), self.degraded)

    # --- bound --------------------------------------------------------------------------------------

    def _over(self) -> bool:
        return self._count > self.max_messages or self._bytes > self.max_bytes

    def _enforce_bound(self) -> None:
        """Masks first (oldest first), then the oldest non-alerts, then the oldest alerts."""
        if not self._over():
            return
        if self._bytes > self.max_bytes and self.shrink is not None:
            self._strip_masks()
        for alerts in (False, True):
            while self._over():
                if not self._drop_oldest(alerts):
                    break
        if self._over():  # nothing left to drop but the newest: cannot happen with max_bytes >= 1024 unless huge
            log.warning("outbox %s: still over its bound (%d messages, %d bytes)", self.name, self._count, self._bytes)

    def _strip_masks(self) -> None:
        for mid, (item, has_mask) in list(self._mem.items()):
            if self._bytes <= self.max_bytes:
                return
            if has_mask:
                small = self.shrink(item.payload)
                if small is not None:
                    self._bytes += len(small) - len(item.payload)
                    item.payload = small
                    self.masks_dropped += 1
                self._mem[mid] = (item, False)
        if self._db is None:
            return
        try:
            while self._bytes > self.max_bytes:
                rows = self._db.execute("SELECT n, payload FROM messages WHERE has_mask = 1 ORDER BY n LIMIT 64").fetchall()
                if not rows:
                    return
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for n, payload in rows:
                        small = self.shrink(bytes(payload))
                        if small is None:
                            self._db.execute("UPDATE messages SET has_mask = 0 WHERE n = ?", (n,))
                            continue
                        self._db.execute("UPDATE messages SET payload = ?, size = ?, has_mask = 0 WHERE n = ?",
                                         (small, len(small), n))
                        self._bytes += len(small) - len(payload)
                        self.masks_dropped += 1
                        if self._bytes <= self.max_bytes:
                            break
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
        except sqlite3.Error as exc:
            log.error("outbox %s: cannot strip masks in %s: %s", self.name, self.path, exc)

    def _drop_oldest(self, alerts: bool) -> bool:
        cond = (lambda r: True) if alerts else (lambda r: r < 2)
        oldest_mem = next(((k, it) for k, (it, _) in self._mem.items() if cond(it.rank)), None)
        oldest_db = None
        if self._db is not None:
            where = "" if alerts else "WHERE rank < 2"
            try:
                oldest_db = self._db.execute(f"SELECT id, created_ns, size FROM messages {where} ORDER BY n LIMIT 1").fetchone()
            except sqlite3.Error:
                oldest_db = None
        if oldest_mem is None and oldest_db is None:
            return False
        if oldest_db is None or (oldest_mem is not None and oldest_mem[1].created_ns < oldest_db[1]):
            item = self._mem.pop(oldest_mem[0])[0]
            self._count -= 1
            self._bytes -= len(item.payload)
        else:
            try:
                self._db.execute("DELETE FROM messages WHERE id = ?", (oldest_db[0],))
            except sqlite3.Error as exc:
                log.error("outbox %s: cannot drop from %s: %s", self.name, self.path, exc)
                return False
            self._count -= 1
            self._bytes -= oldest_db[2]
        self.dropped += 1
        if self.dropped <= 3 or self.dropped % 100 == 0:
            log.warning("outbox %s: full (max %d messages, %d bytes); dropped the oldest %s (%d dropped so far)",
                        self.name, self.max_messages, self.max_bytes, "alert" if alerts else "non-alert message",
                        self.dropped)
        return True


class Forwarder:
    """Drains an Outbox through a transport: oldest first, at most `window` in flight, resend after
    `resend_after_s` without an ack (doubling per attempt up to `max_backoff_s`), delete on ack."""

    def __init__(self, outbox: Outbox, send: Callable[[OutboxItem], None], *, ready: Callable[[], bool],
                 window: int = 32, resend_after_s: float = 10.0, max_backoff_s: float = 120.0, name: str = "forwarder",
                 collect_acks: Callable[[], None] | None = None):
        self.outbox = outbox
        self.collect_acks = collect_acks  # called on the forwarder thread before acks are applied
        self.send = send
        self.ready = ready
        self.window = max(1, window)
        self.resend_after_ns = int(resend_after_s * 1e9)
        self.max_backoff_ns = int(max_backoff_s * 1e9)
        self.name = name
        self.sent = 0
        self.resent = 0
        self.acked_total = 0
        self.send_errors = 0
        self.last_error: str | None = None
        self._inflight: dict[str, int] = {}  # id -> resend deadline (monotonic ns)
        self._attempts: dict[str, int] = {}
        self._acks: deque[str] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"forward-{name}", daemon=True)
        self.ack_listeners: list[Callable[[list[str]], None]] = []

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def acked(self, ids: Iterable[str]) -> None:
        """Thread-safe; called from transport callbacks."""
        self._acks.extend(ids)
        self._wake.set()

    def reset_backoff(self) -> None:
        """The link came back (a subscriber appeared, a reconnect): resend what is in flight now."""
        self._inflight.clear()
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def drained(self) -> bool:
        return self.outbox.pending() == 0 and not self._acks

    def wait_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.drained():
                return True
            self._wake.set()
            time.sleep(0.02)
        return self.drained()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._apply_acks()

    def _apply_acks(self) -> None:
        if self.collect_acks is not None:
            self.collect_acks()
        batch = []
        while self._acks:
            try:
                batch.append(self._acks.popleft())
            except IndexError:
                break
        if batch:
            self.outbox.ack(batch)
            self.acked_total += len(batch)
            for i in batch:
                self._inflight.pop(i, None)
                self._attempts.pop(i, None)
            for fn in self.ack_listeners:
                try:
                    fn(batch)
                except Exception as exc:
                    log.debug("ack listener failed: %s", exc)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            try:
                self._apply_acks()
                now = time.monotonic_ns()
                for i, deadline in list(self._inflight.items()):
                    if deadline <= now:
                        del self._inflight[i]  # due again
                if not self.ready():
                    continue
                free = self.window - len(self._inflight)
                if free <= 0:
                    continue
                items = self.outbox.due(free, exclude=self._inflight.keys())
                for item in items:
                    if self._stop.is_set() or not self.ready():
                        break
                    n = self._attempts.get(item.id, 0)
                    self.send(item)
                    self._attempts[item.id] = n + 1
                    if n:
                        self.resent += 1
                    self.sent += 1
                    wait = min(self.resend_after_ns * (2 ** min(n, 16)), max(self.max_backoff_ns, self.resend_after_ns))
                    self._inflight[item.id] = time.monotonic_ns() + wait
                if len(items) == free:
                    self._wake.set()  # more may be waiting
                backoff = 0.1
            except Exception as exc:  # a transport that raises: back off, keep the messages
                self.send_errors += 1
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                if self.send_errors <= 3 or self.send_errors % 100 == 0:
                    log.warning("%s: send failed (%d so far), retrying in %.1f s: %s", self.name, self.send_errors,
                                backoff, self.last_error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)


# --- the sink skeleton shared by the network sinks ------------------------------------------------------


def default_outbox_dir() -> Path:
    """$STATE_DIRECTORY (systemd StateDirectory=), else $XDG_STATE_HOME/firespotter, else ~/.local/state/firespotter."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME")
    return Path(xdg) / "firespotter" if xdg else Path.home() / ".local" / "state" / "firespotter"


class OutboxOptions(BaseModel):
    """The `[outbox]` settings (also accepted per sink as `outbox_*` keys)."""

    model_config = ConfigDict(extra="forbid")
    dir: Path | None = Field(None, description="folder of the outbox files; default $STATE_DIRECTORY or ~/.local/state/firespotter")
    max_messages: int = Field(10_000, ge=1)
    max_mb: float = Field(256.0, gt=0)
    synchronous: Literal["normal", "full"] = "normal"


class NetworkSinkOptions(BaseModel):
    """Options every network sink shares ([[sinks]] keys)."""

    model_config = ConfigDict(extra="forbid")
    drone_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                                 description="default: [runtime] drone_id")
    min_interval_ms: float = Field(1000.0, ge=0, description="at most one fire message per this interval...")
    change_frac: float = Field(0.2, ge=0, description="...unless area or perimeter changed by more than this")
    min_alert: Literal["suspect", "fire"] = "suspect"
    mask_max_side: int = Field(256, ge=0, le=8192, description="mask PNG's longer side; 0 = no mask")
    state_interval_s: float = Field(1.0, gt=0)
    stall_after_s: float = Field(3.0, gt=0, description="no frame for this long: state says stalled")
    outbox: Path | None = Field(None, description="outbox file; default <outbox dir>/outbox-<sink name>.sqlite")
    outbox_max_messages: int | None = Field(None, ge=1)
    outbox_max_mb: float | None = Field(None, gt=0)
    window: int = Field(32, ge=1, le=10_000, description="fire messages in flight (unacknowledged) at once")
    resend_after_s: float = Field(10.0, gt=0, description="resend an unacknowledged message after this")
    max_backoff_s: float = Field(120.0, gt=0)
    close_timeout_s: float = Field(2.0, ge=0, description="at close, wait this long for the outbox to drain")


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

    def __init__(self, options: NetworkSinkOptions, name: str):
        self.name = name
        self.options = options
        self.drone_id = options.drone_id or "drone-1"
        self.info: dict[str, Any] = {}
        self.gate = wire.FireGate(options.min_interval_ms, options.change_frac, options.min_alert)
        self.outbox: Outbox | None = None
        self.forwarder: Forwarder | None = None
        self.link_error: str | None = None
        self.fire_messages = 0
        self.state_messages = 0
        self.georef_errors = 0
        self.last_fire_id: str | None = None
        self._camera = None
        self._last = None  # last Result seen
        self._last_mono = 0.0
        self._frames = 0
        self._times: deque[float] = deque(maxlen=64)
        self._started = False
        self._closed = False
        self._hb_stop = threading.Event()
        self._hb: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self, info: dict[str, Any] | None = None) -> None:
        if self._started:
            return
        self.info = dict(info or {})
        if not self.options.drone_id and self.info.get("drone_id"):
            self.drone_id = str(self.info["drone_id"])
        self._camera = self.info.get("camera")
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
            pending = self.outbox.pending()
            if pending:
                log.warning("%s sink %s: %d fire messages not yet acknowledged stay in the outbox %s for the next run",
                            self.transport, self.name, pending, self.outbox.path or "(memory)")
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
        georef = self._georeference(result)
        msg = wire.fire_message(result, self.drone_id, mask_max_side=self.options.mask_max_side, georef=georef)
        payload = wire.dumps(msg)
        self.outbox.put(msg["id"], wire.topic(self.drone_id, "fire"), payload, seq=msg["seq"],
                        rank=wire.ALERT_RANK[msg["alert"]], has_mask=msg["mask"] is not None)
        self.fire_messages += 1
        self.last_fire_id = msg["id"]
        self.forwarder.wake()

    def _georeference(self, result) -> str | None:
        """Regions get geo polygons from the result's pose when the pipeline has not done it already."""
        from .geo import ensure_georeferenced

        status = ensure_georeferenced(result, self._camera)
        if status == "failed":
            self.georef_errors += 1
            if self.georef_errors <= 3:
                log.warning("%s sink %s: geo-referencing failed for frame %d", self.transport, self.name, result.seq)
        return status

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
        self._publish_state(wire.topic(self.drone_id, "state"), wire.dumps(msg))
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
