"""Which flights an archive replay has and which of them are already done.

A flight is done when DIR/<flight-id>/archive.json (written last, after every other output) names the same
input hash, model id and config hash as this run: then it is skipped. A folder without that marker is a
flight that was interrupted or failed; it is replayed from scratch.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firespotter.runtime.errors import FirespotterError

MARKER = "archive.json"
MARKER_VERSION = 1
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+._-]*://")  # plugin schemes may have underscores (pdk names do)
_GLOB_CHARS = set("*?[")


class ArchiveError(FirespotterError):
    """Bad archive input (no flights, a glob matching nothing, --jobs 0, a cluster out of reach): exit 2."""


@dataclass(frozen=True)
class Flight:
    source: str          # what the source resolver opens: a path or a URI
    flight_id: str       # the folder name under DIR
    input_hash: str = ""  # "" when the input could not be read (the flight then fails with `error`)
    error: str | None = None
    telemetry: str | None = None  # the flight's own telemetry sidecar (FLIGHT.SRT beside FLIGHT.MP4)
    stat: list | None = None  # size and mtime of its file(s): an unchanged file is not hashed again


@dataclass
class Plan:
    flights: list[Flight]
    model_id: str
    config_hash: str
    todo: list[Flight] = field(default_factory=list)
    done: list[tuple[Flight, dict[str, Any]]] = field(default_factory=list)  # (flight, its marker)
    unreadable: list[Flight] = field(default_factory=list)


def is_uri(text: str) -> bool:
    return bool(_SCHEME.match(text))


def local_path(source: str) -> Path | None:
    """The file or folder a source reads, when it is one on this machine's file system."""
    if source.startswith("file://"):
        return Path(source[len("file://"):])
    if source.startswith("dir://"):
        return Path(source[len("dir://"):])
    return None if is_uri(source) else Path(source)


def expand_inputs(args: list[str]) -> list[str]:
    """Paths, globs (`flights/**/*.mp4`, recursive) and URIs -> flights, in the order given, each once.
    A glob that matches nothing is an error: it is a typo or a missing mount, never an empty archive."""
    out: list[str] = []
    for arg in args:
        if is_uri(arg) or not (_GLOB_CHARS & set(arg)) or Path(arg).exists():
            found = [arg]
        else:
            # A folder it matches is an image-folder flight (`flights/*/images`), except under a trailing `**`, which
            # matches every folder on the way.
            folders = not arg.rstrip("/").endswith("**")
            found = sorted(p for p in glob.glob(os.path.expanduser(arg), recursive=True)
                           if folders or not os.path.isdir(p))
            if not found:
                raise ArchiveError(f"no file matches {arg!r}",
                                   "check the path, and quote the pattern so the shell passes it as it is")
        out += [f for f in found if f not in out]
    if not out:
        raise ArchiveError("no flights to replay", "give video files, image folders, globs or URIs")
    return out


def _slug(text: str) -> str:
    s = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "-", text)).strip("-.")
    return s[:120] or "flight"


def flight_ids(sources: list[str]) -> list[str]:
    """A folder name per flight: the file (or folder) name without its extension; where two flights share
    one, the parent folders are prepended until the names differ (`day1__cam0`, `day2__cam0`), then a number."""
    def parts(src: str) -> list[str]:
        p = local_path(src)
        if p is None:  # a URI: its text, made safe for a folder name
            return [_slug(src.replace("://", "-", 1))]
        p = Path(os.path.abspath(os.path.expanduser(str(p))))
        names = [p.stem if p.suffix and not str(src).startswith("dir://") else p.name] + [a.name for a in p.parents]
        return [_slug(n) for n in names if n]

    chains = [parts(s) for s in sources]
    ids = [c[0] for c in chains]
    groups: dict[str, list[int]] = {}
    for i, fid in enumerate(ids):
        groups.setdefault(fid, []).append(i)
    for members in (m for m in groups.values() if len(m) > 1):
        # The fewest parent folders that tell the most of them apart; the rest are numbered below.
        best = (1, 1)
        for depth in range(2, max(len(chains[i]) for i in members) + 1):
            distinct = len({"__".join(reversed(chains[i][:depth])) for i in members})
            if distinct > best[1]:
                best = (depth, distinct)
            if distinct == len(members):
                break
        for i in members:
            ids[i] = "__".join(reversed(chains[i][: best[0]]))
    seen: dict[str, int] = {}
    for i, fid in enumerate(ids):  # still equal (a.mp4 and a.mkv in one folder): number them in input order
        n = seen.get(fid, 0)
        seen[fid] = n + 1
        if n:
            ids[i] = f"{fid}-{n + 1}"
    return ids


def _hash_file(path: Path, h) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)


def input_hash(source: str) -> str:
    """sha256 of what a flight reads: a file's bytes, an image folder's names and bytes, or a URI's text
    (a synthetic `test://` scene is defined by its parameters; a stream has no bytes to hash beforehand)."""
    h = hashlib.sha256()
    path = local_path(source)
    if path is None:
        h.update(b"uri\0" + source.encode())
    elif path.is_dir():
        for p in sorted(path.iterdir()):
            if p.is_file():
                h.update(p.name.encode() + b"\0")
                _hash_file(p, h)
    else:
        _hash_file(path, h)  # OSError (missing, unreadable) goes to the caller
    return h.hexdigest()


# Telemetry readers whose file sits beside each recording, and the names it takes there.
SIDECARS = {"srt": (".SRT", ".srt"), "csv": (".csv", ".CSV")}


def sidecar(source: str, reader: str | None) -> Path | None:
    """FLIGHT.SRT (or .csv) beside FLIGHT.MP4, for a config whose [telemetry] reads that kind of file."""
    path = local_path(source)
    if reader not in SIDECARS or path is None or path.is_dir():
        return None
    return next((c for c in (path.with_suffix(ext) for ext in SIDECARS[reader]) if c.is_file()), None)


def config_hash(settings_dump: dict[str, Any], extra: dict[str, Any]) -> str:
    """sha256 of everything that changes a flight's outputs: the validated settings without the source (each
    flight has its own) and the replay options (limit, overlay, report)."""
    data = json.dumps({"settings": settings_dump, "replay": extra}, sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()


def read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and (folder / "summary.json").is_file() else None


def write_marker(folder: Path, marker: dict[str, Any]) -> None:
    """Written last and atomically: its presence means every other output of the flight is complete."""
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"version": MARKER_VERSION, **marker}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MARKER)


def file_stat(source: str, side: Path | None) -> list | None:
    """[size, mtime_ns] of the flight's file (and sidecar), or None for folders and URIs (always hashed)."""
    path = local_path(source)
    if path is None or not path.is_file():
        return None
    out = []
    for p in (path, side):
        if p is not None:
            st = p.stat()
            out += [st.st_size, st.st_mtime_ns]
    return out


def make_plan(args: list[str], out: Path, *, model_id: str, cfg_hash: str, force: bool = False,
              telemetry_reader: str | None = None) -> Plan:
    """telemetry_reader: the config's [telemetry] source when it names no file: each flight then reads its own
    sidecar (FLIGHT.SRT for srt), whose bytes are part of the flight's input hash."""
    sources = expand_inputs(args)
    flights = []
    for src, fid in zip(sources, flight_ids(sources)):
        try:
            side = sidecar(src, telemetry_reader)
            stat = file_stat(src, side)
            marker = None if force else read_marker(out / fid)
            if stat is not None and marker and marker.get("input") == src and marker.get("input_stat") == stat:
                # Hashing a season of video takes minutes; a file whose size and mtime did not change since it
                # was hashed keeps that hash.
                digest = marker["input_hash"]
            else:
                digest = input_hash(src)
                if side is not None:
                    digest = hashlib.sha256(f"{digest}\0{input_hash(str(side))}".encode()).hexdigest()
            flights.append(Flight(src, fid, digest, telemetry=None if side is None else str(side), stat=stat))
        except OSError as exc:
            flights.append(Flight(src, fid, error=f"cannot read {src}: {exc.strerror or exc}"))
    plan = Plan(flights, model_id, cfg_hash)
    for f in flights:
        if f.error:
            plan.unreadable.append(f)
            continue
        marker = None if force else read_marker(out / f.flight_id)
        if marker and (marker.get("input_hash"), marker.get("model_id"), marker.get("config_hash")) == \
                (f.input_hash, model_id, cfg_hash):
            plan.done.append((f, marker))
        else:
            plan.todo.append(f)
    return plan
