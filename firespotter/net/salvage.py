"""Recovery of a corrupt outbox database (docs/reliability.md): the file is moved aside (timestamped, kept for a
post-mortem) and every message still readable in it is salvaged into a fresh database, so one damaged page
costs the messages on that page and not the whole backlog.

Readable rows are found through SQLite itself, range by range (a range that fails is split down to single rows:
a row that cannot be read is counted as lost). When SQLite cannot read the file at all (a damaged header), the
raw bytes are scanned for wire messages instead; every salvaged payload must be a valid `fire` message.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import wire

log = logging.getLogger("firespotter.outbox")

Row = tuple  # (id, topic, seq, rank, created_ns, has_mask, payload)
_COLS = "id, topic, seq, rank, created_ns, has_mask, payload"
_FIRE = re.compile(rb'\{"v":1,"kind":"fire","id":"[0-9a-f]{32}"')
_CHUNK = 256


@dataclass
class Salvage:
    moved_to: Path
    why: str
    rows: list[Row] = field(default_factory=list)
    lost: int | None = 0  # rows that could not be read; None when unknown (raw scan)
    method: str = "sqlite"


def healthy(db: sqlite3.Connection) -> str | None:
    """None when the database reads as sound, else what is wrong (PRAGMA quick_check's first line)."""
    try:
        rows = db.execute("PRAGMA quick_check(5)").fetchall()
        db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages").fetchone()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    first = rows[0][0] if rows else "no answer"
    return None if first == "ok" else str(first)


def move_aside(path: Path) -> Path:
    """path (and its -wal/-shm) -> path.corrupt-<UTC time>; returns the new main file's path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = path.with_name(f"{path.name}.corrupt-{stamp}")
    k = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.corrupt-{stamp}-{k}")
        k += 1
    for suffix in ("-wal", "-shm", ""):
        src = Path(str(path) + suffix)
        if src.exists():
            src.rename(Path(str(dest) + suffix))
    return dest


def _valid(row: Row) -> bool:
    try:
        msg = wire.loads(bytes(row[6]))
    except (wire.WireError, TypeError, ValueError):
        return False
    return msg["kind"] == "fire" and msg["id"] == row[0]


def _rows_sqlite(path: Path) -> tuple[list[Row], int]:
    db = sqlite3.connect(str(path), timeout=1.0, isolation_level=None)
    try:
        try:
            return [tuple(r) for r in db.execute(f"SELECT {_COLS} FROM messages ORDER BY n")], 0
        except sqlite3.DatabaseError:
            pass
        top = None
        for q in ("SELECT seq FROM sqlite_sequence WHERE name = 'messages'", "SELECT MAX(n) FROM messages"):
            try:
                got = db.execute(q).fetchone()
                if got and got[0]:
                    top = int(got[0])
                    break
            except sqlite3.DatabaseError:
                continue
        if top is None:
            raise sqlite3.DatabaseError("cannot find the range of rows")
        rows: list[Row] = []
        lost = 0
        for a in range(1, top + 1, _CHUNK):
            b = min(top, a + _CHUNK - 1)
            try:
                rows += [tuple(r) for r in db.execute(f"SELECT {_COLS} FROM messages WHERE n BETWEEN ? AND ? ORDER BY n",
                                                      (a, b))]
                continue
            except sqlite3.DatabaseError:
                pass
            for n in range(a, b + 1):  # the damaged range, row by row
                try:
                    rows += [tuple(r) for r in db.execute(f"SELECT {_COLS} FROM messages WHERE n = ?", (n,))]
                except sqlite3.DatabaseError:
                    lost += 1
        return rows, lost
    finally:
        db.close()


def _rows_raw(path: Path, limit_bytes: int) -> list[Row]:
    """Fire messages found in the file's bytes (payloads are ASCII JSON: latin-1 maps bytes to characters 1:1)."""
    with open(path, "rb") as f:
        data = f.read(limit_bytes)
    dec = json.JSONDecoder()
    rows: list[Row] = []
    seen: set[str] = set()
    for m in _FIRE.finditer(data):
        text = data[m.start(): m.start() + wire.MAX_PAYLOAD].decode("latin-1")
        try:
            msg, end = dec.raw_decode(text)
        except ValueError:
            continue
        payload = text[:end].encode("latin-1")
        try:
            msg = wire.loads(payload)
        except wire.WireError:
            continue
        if msg["id"] in seen:
            continue
        seen.add(msg["id"])
        rows.append((msg["id"], wire.topic(msg["drone_id"], "fire"), msg["seq"], wire.ALERT_RANK[msg["alert"]],
                     time.time_ns(), int(msg["mask"] is not None), payload))
    return rows


def salvage(path: Path, why: str, limit_bytes: int) -> Salvage:
    """Move the corrupt database aside and read what can be read from it (never raises for a bad file)."""
    moved = move_aside(path)
    out = Salvage(moved, why)
    try:
        rows, lost = _rows_sqlite(moved)
    except sqlite3.DatabaseError as exc:
        log.warning("outbox: %s is unreadable by SQLite (%s); scanning its bytes for messages", moved, exc)
        try:
            rows, lost, out.method = _rows_raw(moved, limit_bytes), None, "raw scan"
        except OSError as exc2:
            rows, lost = [], None
            log.error("outbox: cannot read %s: %s", moved, exc2)
    good = [r for r in rows if _valid(r)]
    out.rows = good
    out.lost = None if lost is None else lost + len(rows) - len(good)
    return out
