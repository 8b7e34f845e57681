"""The store of store-and-forward (docs/reliability.md): a SQLite (WAL) outbox.

`fire` messages are written here *before* they are sent and leave only when acknowledged (MQTT PUBACK; for
Zenoh an `ack` from a ground station). Oldest first. Bounded (messages and bytes): over the bound, masks are
stripped first (oldest first; the message keeps its id and says `mask_dropped`), then the oldest non-alert
messages go, then the oldest alerts. It survives a process kill (WAL, every put is a committed transaction).
When the disk under it fails (full, read-only, gone), that is logged and reported in `stats()["degraded"]`,
and the outbox goes on in memory (same bound) so the pipeline goes on; the disk is tried again every `retry_s`.
A corrupt database (at start, or found later) is moved aside and its readable messages are salvaged into a fresh
one (salvage.py); `stats()["recovered"]` says what was salvaged and what was lost.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from firespotter.runtime.errors import FirespotterError

from . import salvage, wire

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
        self.recovered: str | None = None  # what the last recovery of a corrupt file did
        self.salvaged = 0
        self.lost = 0  # rows of a corrupt file that could not be read
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

    def _connect(self) -> tuple[sqlite3.Connection, int, int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            db.executescript(_SCHEMA)
            problem = salvage.healthy(db)
            if problem is not None:
                raise sqlite3.DatabaseError(problem if _corrupt(sqlite3.DatabaseError(problem))
                                            else f"database disk image is malformed: quick_check says {problem}")
            count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages").fetchone()
        except BaseException:
            db.close()
            raise
        return db, int(count), int(size)

    def _open(self) -> None:
        try:
            try:
                db, count, size = self._connect()
            except sqlite3.DatabaseError as exc:
                if not _corrupt(exc):
                    raise
                self._recover(str(exc))
                db, count, size = self._connect()
        except (sqlite3.Error, OSError) as exc:
            self._degrade(f"cannot open {self.path}: {exc}")
            return
        self._db = db
        self._count, self._bytes = int(count), int(size)
        if count:
            log.info("outbox %s: %d messages from a previous run waiting to be sent", self.name, count)

    def _recover(self, why: str) -> None:
        """Move the corrupt file aside and salvage its readable messages into a fresh one."""
        got = salvage.salvage(self.path, why, limit_bytes=2 * self.max_bytes + (64 << 20))
        db = sqlite3.connect(str(self.path), timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            db.executescript(_SCHEMA)
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR IGNORE INTO messages (id, topic, seq, rank, created_ns, has_mask, size, payload)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           [(i, t, sq, r, c, m, len(p), bytes(p)) for i, t, sq, r, c, m, p in got.rows])
            db.execute("COMMIT")
        finally:
            db.close()
        lost = "an unknown number of" if got.lost is None else str(got.lost)
        self.salvaged += len(got.rows)
        self.lost += got.lost or 0
        self.recovered = (f"corrupt database ({why[:120]}) moved to {got.moved_to.name}; {len(got.rows)} messages "
                          f"salvaged ({got.method}), {lost} lost")
        log.error("outbox %s: %s", self.name, self.recovered)

    def _fail(self, why: str, exc: BaseException) -> None:
        """A disk error during use: degrade; a corrupt file is closed so that the next retry recovers it."""
        if isinstance(exc, sqlite3.DatabaseError) and _corrupt(exc) and self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None
        self._degrade(why)

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
                    self._fail(f"cannot write {self.path}: {exc}", exc)
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
                    if _corrupt(exc):  # recovered (moved aside, salvaged) at the next retry
                        self._fail(f"cannot read {self.path}: {exc}", exc)
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
                    self._fail(f"cannot delete acknowledged messages from {self.path}: {exc}", exc)
        return removed

    def pending(self) -> int:
        return max(0, self._count - len(self._unacked_deletes))

    def in_memory(self) -> int:
        """Messages held only in memory (the disk failed): lost if the process ends now."""
        return len(self._mem)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            oldest = None
            items = self.due(1)
            if items:
                oldest = round(max(0.0, (time.time_ns() - items[0].created_ns) / 1e9), 3)
            out = {"pending": self.pending(), "bytes": max(0, self._bytes), "oldest_age_s": oldest,
                   "dropped": self.dropped, "masks_dropped": self.masks_dropped, "degraded": self.degraded}
            if self.recovered is not None:
                out["recovered"] = self.recovered[:500]
            return out

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
                self._mem.clear()

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


def _corrupt(exc: BaseException) -> bool:
    """SQLITE_CORRUPT / SQLITE_NOTADB: the file is damaged (a full or read-only disk is not)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text


def default_outbox_dir() -> Path:
    """$STATE_DIRECTORY (systemd StateDirectory=), else $XDG_STATE_HOME/firespotter, else ~/.local/state/firespotter."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME")
    return Path(xdg) / "firespotter" if xdg else Path.home() / ".local" / "state" / "firespotter"
