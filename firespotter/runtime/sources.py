"""Turning a source string into a Source through the plugins (jetson-inference's videoSource idea).

`scheme://rest?key=value` picks the source plugin registered for `scheme`; a bare path is `file://` for a
file and `dir://` for a folder. Query parameters become the source's options (values stay strings; each
source converts and validates its own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from .errors import SourceError


@dataclass(frozen=True)
class SourceURI:
    raw: str
    scheme: str
    location: str  # path for file:// and dir://, host/path for network schemes, name for test://
    params: dict[str, str] = field(default_factory=dict)


def parse_uri(raw: str) -> SourceURI:
    text = raw.strip()
    if not text:
        raise SourceError("no source given", "pass a path, a folder or a URI such as test://, dir://PATH, file://PATH")
    if "://" not in text:
        try:
            path = Path(text).expanduser()
        except RuntimeError:  # ~name of a user that does not exist here
            raise SourceError(f"source {raw!r}: cannot expand {text.split('/')[0]!r}: no such user",
                              "give the full path") from None
        if not path.exists():
            raise SourceError(f"source {raw!r} does not exist", "check the path, or use a URI such as test://")
        return SourceURI(raw, "dir" if path.is_dir() else "file", str(path))
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme in ("file", "dir"):
        # file:///abs/path and file://relative/path both mean a local path; the query carries options.
        path, _, query = rest.partition("?")
        return SourceURI(raw, scheme, path, dict(parse_qsl(query)))
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket: rtp://[::1:5000
        raise SourceError(f"source {raw!r} is not a valid URI: {exc}",
                          "e.g. rtp://0.0.0.0:5000, rtsp://[fe80::1]:8554/stream") from None
    location = (parts.netloc + parts.path) if parts.netloc else parts.path
    return SourceURI(raw, scheme, location, dict(parse_qsl(parts.query)))


def int_param(uri: SourceURI, key: str, default: int, *, minimum: int = 0) -> int:
    raw = uri.params.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SourceError(f"{uri.raw}: parameter {key}={raw!r} is not an integer") from None
    if value < minimum:
        raise SourceError(f"{uri.raw}: parameter {key}={value} must be >= {minimum}")
    return value


def float_param(uri: SourceURI, key: str, default: float | None, *, gt: float | None = None) -> float | None:
    """A finite number (inf and nan are refused: `fps=inf` would silently mean "unpaced"), above `gt` if given."""
    raw = uri.params.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SourceError(f"{uri.raw}: parameter {key}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise SourceError(f"{uri.raw}: parameter {key}={raw!r} must be a finite number")
    if gt is not None and value <= gt:
        raise SourceError(f"{uri.raw}: parameter {key}={value:g} must be > {gt:g}")
    return value


def parse_wxh(text: str) -> tuple[int, int]:
    """'WxH' -> (width, height); ValueError saying what is wrong (shared by URIs and CLI flags)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{text!r} must look like 256x256 (WIDTHxHEIGHT)") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise ValueError(f"{text!r}: each side must be between 16 and 8192")
    return w, h


def size_param(uri: SourceURI, key: str, default: tuple[int, int]) -> tuple[int, int]:
    """'WxH' -> (width, height)."""
    raw = uri.params.get(key)
    if raw is None:
        return default
    try:
        return parse_wxh(raw)
    except ValueError as exc:
        raise SourceError(f"{uri.raw}: parameter {key}={exc}") from None


def open_source(raw: str, registry, *, source_id: str = "cam0", live: bool = False, options: dict | None = None):
    """Resolve `raw` through the plugins and open it. Raises SourceError/PluginError with a clear message."""
    rewritten = registry.hook().resolve_source_uri(uri=raw)
    uri = parse_uri(rewritten or raw)
    spec = registry.get("sources", uri.scheme)
    return spec.factory(uri, source_id=source_id, live=live, options=dict(options or {}))
