"""The ground view's map background: a tile URL template (the browser fetches it), or a local XYZ folder or
raster MBTiles file that the ground view's server serves itself."""

from __future__ import annotations

import re
import sqlite3
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from firespotter.runtime.errors import FirespotterError


def _png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)  # 1x1 RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00\x00")) + chunk(b"IEND", b"")


EMPTY_TILE = _png_1x1()
_TILE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}


@dataclass
class TileSource:
    """A map background: a remote URL template (the browser fetches it) or local tiles this server serves."""

    kind: str  # "url" | "xyz" | "mbtiles"
    url: str  # the template the page uses
    attribution: str = ""
    min_zoom: int = 0
    max_zoom: int = 19
    csp_origin: str = ""
    path: Path | None = None
    ext: str = "png"
    _db: sqlite3.Connection | None = None
    _lock: threading.Lock | None = None

    def client_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "attribution": self.attribution, "minZoom": self.min_zoom,
                "maxNativeZoom": self.max_zoom}

    def get(self, z: int, x: int, y: int) -> tuple[bytes, str] | None:
        if self.kind == "xyz" and self.path is not None:
            f = self.path / str(z) / str(x) / f"{y}.{self.ext}"
            try:
                return f.read_bytes(), _TILE_TYPES[self.ext]
            except OSError:
                return None
        if self.kind == "mbtiles" and self._db is not None and self._lock is not None:
            if not 0 <= y < (1 << z):
                return None
            with self._lock:
                row = self._db.execute("SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                                       (z, x, (1 << z) - 1 - y)).fetchone()  # MBTiles rows are TMS (y up)
            return (bytes(row[0]), _TILE_TYPES.get(self.ext, "image/png")) if row else None
        return None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def open_tiles(spec: str, attribution: str = "") -> TileSource:
    """--tiles: a URL template with {z} {x} {y} (and optionally {s}), an XYZ folder, or a raster .mbtiles file."""
    if re.match(r"^https?://", spec, re.I):
        parts = urlsplit(spec)
        if not all(k in spec for k in ("{z}", "{x}", "{y}")):
            raise FirespotterError(f"--tiles {spec}: a tile URL needs {{z}}, {{x}} and {{y}}",
                                   "e.g. https://tile.example.org/{z}/{x}/{y}.png")
        host = parts.netloc.replace("{s}", "*")
        if not re.fullmatch(r"[A-Za-z0-9.*:\[\]-]+", host):
            raise FirespotterError(f"--tiles {spec}: unexpected host {parts.netloc!r}")
        return TileSource("url", spec, attribution, csp_origin=f"{parts.scheme.lower()}://{host}")
    path = Path(spec).expanduser()
    if not path.exists():
        raise FirespotterError(f"--tiles {spec}: no such file or folder",
                               "give a tile URL, an XYZ folder ({z}/{x}/{y}.png) or an .mbtiles file")
    if path.is_dir():
        zooms = sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) <= 30)
        ext = None
        for z in zooms:
            for xdir in (path / str(z)).iterdir():
                if xdir.is_dir():
                    for f in xdir.iterdir():
                        if f.suffix[1:].lower() in _TILE_TYPES:
                            ext = f.suffix[1:]
                            break
                if ext:
                    break
            if ext:
                break
        if not zooms or ext is None:
            raise FirespotterError(f"--tiles {spec}: no tiles in this folder", "expected {z}/{x}/{y}.png (or .jpg, .webp)")
        return TileSource("xyz", "tiles/{z}/{x}/{y}", attribution, min_zoom=zooms[0], max_zoom=zooms[-1],
                          path=path.resolve(), ext=ext)
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        db.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles LIMIT 1").fetchall()
        meta = {}
        try:
            meta = dict(db.execute("SELECT name, value FROM metadata").fetchall())
        except sqlite3.DatabaseError:
            pass
        zr = db.execute("SELECT MIN(zoom_level), MAX(zoom_level) FROM tiles").fetchone()
    except sqlite3.DatabaseError as exc:
        raise FirespotterError(f"--tiles {spec}: not an MBTiles file ({exc})") from None
    fmt = str(meta.get("format") or "png").lower()
    if fmt not in _TILE_TYPES:
        db.close()
        raise FirespotterError(f"--tiles {spec}: {fmt} tiles are not supported", "give raster tiles: png, jpg or webp")
    mn = int(meta.get("minzoom", zr[0] if zr[0] is not None else 0))
    mx = int(meta.get("maxzoom", zr[1] if zr[1] is not None else 19))
    return TileSource("mbtiles", "tiles/{z}/{x}/{y}", attribution or str(meta.get("attribution") or ""), min_zoom=mn,
                      max_zoom=mx, path=path.resolve(), ext=fmt, _db=db, _lock=threading.Lock())
