"""Wire format v1 (docs/wire-format.md): the one place messages are built, encoded and decoded.

Every network sink (zenoh, mqtt, mavlink) and the ground-station listener use this module; nothing else
builds or parses wire messages. Messages are JSON objects (UTF-8) published on `firespotter/<drone_id>/<kind>`:

- `fire`:  regions (pixel polygons, area, confidence), geo polygons when a pose is known (GeoJSON lon/lat),
           the mask as base64 PNG at a configurable resolution, source state, model and precision labels,
           capture-to-send latency;
- `state`: heartbeat (source state, fps, drops, model, adapter, outbox, link);
- `ack`:   a ground station acknowledging `fire` messages by id.

Every message has `v` (1), `kind`, a unique `id` (32 hex digits; a resend carries the same id so receivers can
drop duplicates), `drone_id`, the frame `seq` and `t_capture_ns` (UTC wall clock of the capture, ns).

The schema (schemas/wire-v1.schema.json) is the contract; `validate()` (schema.py) checks a message against it.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
import uuid
from typing import Any, Iterable

import numpy as np

from firespotter.runtime.types import AlertLevel, Result, SourceState

from .schema import KINDS, SCHEMA_PATH, WIRE_VERSION, WireError, load_schema, validate, validation_errors

__all__ = ["KINDS", "SCHEMA_PATH", "WIRE_VERSION", "WireError", "load_schema", "validate", "validation_errors"]

TOPIC_PREFIX = "firespotter"
# Bounds checked before anything is decoded (docs/security.md): one message, one mask, all points of a message.
MAX_PAYLOAD = 1 << 20
MAX_MASK_PIXELS = 4096 * 4096
MAX_POINTS = 50_000
MAX_RING_POINTS = 4096
_DRONE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ALERT_RANK = {"none": 0, "suspect": 1, "fire": 2}


# --- topics / keys ------------------------------------------------------------------------------------


def topic(drone_id: str, kind: str) -> str:
    """`firespotter/<drone_id>/<kind>`: the MQTT topic and the Zenoh key expression are the same string."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not _DRONE_ID.match(drone_id):
        raise ValueError(f"drone id {drone_id!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    return f"{TOPIC_PREFIX}/{drone_id}/{kind}"


def parse_topic(name: str) -> tuple[str, str] | None:
    """'firespotter/uav-1/fire' -> ('uav-1', 'fire'); None when it is not a wire v1 topic."""
    parts = str(name).split("/")
    if len(parts) != 3 or parts[0] != TOPIC_PREFIX or parts[2] not in KINDS or not _DRONE_ID.match(parts[1]):
        return None
    return parts[1], parts[2]


def new_id() -> str:
    return uuid.uuid4().hex


# --- encoding -----------------------------------------------------------------------------------------


def dumps(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":"), allow_nan=False).encode("utf-8")


class _NonFinite(ValueError):
    pass


def _finite(text: str) -> float:
    """Wire numbers are finite (JSON has no NaN; 1e400 would overflow to inf): refused at decoding."""
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(f"number {text[:20]} is not finite")
    return value


def _no_constant(name: str) -> float:
    raise _NonFinite(f"{name} is not a JSON number")


def loads(payload: bytes | bytearray | memoryview | str, *, check: bool = True) -> dict[str, Any]:
    """Bytes from the network -> a validated message. Raises WireError on anything malformed (the size is
    checked before decoding, the total number of polygon points after)."""
    if len(payload) > MAX_PAYLOAD:
        raise WireError(f"message of {len(payload)} bytes: larger than the {MAX_PAYLOAD} bytes a wire message may have")
    raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    if raw.count(b"[") > MAX_POINTS + 4096:  # one '[' per point: a flood of points is refused before parsing
        raise WireError(f"message.regions: more than {MAX_POINTS} polygon points in all")
    try:
        if isinstance(payload, (bytes, bytearray, memoryview)):
            payload = raw.decode("utf-8")
        msg = json.loads(payload, parse_float=_finite, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"not a JSON message: {exc}") from None
    except _NonFinite as exc:
        raise WireError(f"not a wire message: {exc}") from None
    except RecursionError:
        raise WireError("not a JSON message: nested too deeply") from None
    if check:
        validate(msg)
        if msg.get("v") != WIRE_VERSION:  # the schema says so too; kept explicit for future versions
            raise WireError(f"unsupported wire version {msg.get('v')!r}")
        if msg["kind"] == "fire":
            n = count_points(msg)
            if n > MAX_POINTS:
                raise WireError(f"message.regions: {n} polygon points in all, more than {MAX_POINTS}")
    return msg


def count_points(msg: dict[str, Any]) -> int:
    """Pixel and geo polygon points of a (schema-valid) fire message."""
    n = 0
    for r in msg.get("regions") or ():
        n += len(r["polygon"])
        if r.get("geo"):
            n += sum(len(ring) for ring in r["geo"]["coordinates"])
    return n


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header (SOFn), read without decoding; `data` may be just its start."""
    if data[:2] != b"\xff\xd8":
        raise WireError("snapshot: data is not a JPEG image")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise WireError("snapshot: damaged JPEG header")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 9 > len(data):
                break
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        if marker == 0xDA or length < 2:  # image data before any frame header
            break
        i += 2 + length
    raise WireError("snapshot: no JPEG frame header in the first 64 kB")


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, read before any decoding (a 66 kB PNG may declare 20000x20000)."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise WireError("mask: data is not a PNG image")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def encode_mask(mask: np.ndarray, max_side: int) -> dict[str, Any] | None:
    """H×W 0/255 mask -> {"format": "png", width, height, data: base64} with the longer side at most
    max_side (area-downscaled, then re-thresholded, so thin fire lines survive). max_side 0 = no mask."""
    import cv2

    if max_side <= 0 or mask is None or mask.size == 0:
        return None
    max_side = min(max_side, 4096)  # MAX_MASK_PIXELS: a receiver refuses larger masks
    h, w = mask.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
        mask = np.where(small >= 64, np.uint8(255), np.uint8(0))
    ok, png = cv2.imencode(".png", np.ascontiguousarray(mask, dtype=np.uint8),
                           [cv2.IMWRITE_PNG_BILEVEL, 1, cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise WireError("PNG encoding of the mask failed")
    return {"format": "png", "width": int(mask.shape[1]), "height": int(mask.shape[0]),
            "data": base64.b64encode(png.tobytes()).decode("ascii")}


def decode_mask(msg_or_mask: dict[str, Any], frame: dict[str, Any] | None = None,
                max_pixels: int = MAX_MASK_PIXELS) -> np.ndarray | None:
    """A fire message (or its `mask` object) -> H×W uint8 0/255, or None when it carries no mask.

    The PNG header is read first: a mask whose declared size differs from the message's, exceeds the frame it
    belongs to (`frame`, taken from the message when given one) or `max_pixels` is refused undecoded."""
    import cv2

    if "kind" in msg_or_mask:
        frame = msg_or_mask.get("frame") if frame is None else frame
        m = msg_or_mask.get("mask")
    else:
        m = msg_or_mask
    if not m:
        return None
    try:
        data = base64.b64decode(m["data"], validate=True)
    except (ValueError, KeyError) as exc:
        raise WireError(f"mask: bad base64 data: {exc}") from None
    w, h = png_size(data)
    if (w, h) != (m["width"], m["height"]):
        raise WireError(f"mask: PNG is {w}x{h}, message says {m['width']}x{m['height']}")
    if w * h > max_pixels:
        raise WireError(f"mask: {w}x{h} is more than the {max_pixels} pixels a mask may have")
    if frame and (w > frame["width"] or h > frame["height"]):
        raise WireError(f"mask: {w}x{h} is larger than its {frame['width']}x{frame['height']} frame")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise WireError("mask: data is not a PNG image")
    if img.shape != (m["height"], m["width"]):
        raise WireError(f"mask: PNG is {img.shape[1]}x{img.shape[0]}, message says {m['width']}x{m['height']}")
    return np.where(img > 127, np.uint8(255), np.uint8(0))  # uint8 scalars: no int64 copy of the mask


def _r(x: float | None, nd: int) -> float | None:
    if x is None:
        return None
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


def _model(model_id: str, precision: Any) -> dict[str, Any]:
    p = precision.as_dict() if hasattr(precision, "as_dict") else dict(precision or {})
    return {"id": str(model_id)[:200], "precision_exec": p.get("precision_exec", "fp32"),
            "weight_bits": int(p.get("weight_bits", 32)), "simulated": bool(p.get("simulated", False))}


def _thin(pts: list, max_pts: int) -> list:
    """Every k-th point so that at most max_pts remain (the schema's bound on a ring): a drone's outline of a
    huge fire is simplified rather than refused by every receiver."""
    if len(pts) <= max_pts:
        return pts
    step = -(-len(pts) // max_pts)
    return pts[::step]


def geojson_polygon(ring: Iterable[Iterable[float]]) -> dict[str, Any] | None:
    """(lon, lat) ring -> a closed GeoJSON Polygon (7 decimals, ~1 cm); None for fewer than 3 points."""
    pts = _thin([[round(float(p[0]), 7), round(float(p[1]), 7)] for p in ring], MAX_RING_POINTS - 1)
    if len(pts) < 3 or not all(math.isfinite(c) for p in pts for c in p):
        return None
    if pts[0] != pts[-1]:
        pts.append(list(pts[0]))
    return {"type": "Polygon", "coordinates": [pts]}


def _pose(pose: Any) -> dict[str, Any] | None:
    if pose is None:
        return None
    out = {"lat": _r(pose.lat, 8), "lon": _r(pose.lon, 8), "alt_agl_m": _r(pose.alt_agl_m, 3),
           "roll_deg": _r(pose.roll_deg, 3), "pitch_deg": _r(pose.pitch_deg, 3), "yaw_deg": _r(pose.yaw_deg, 3),
           "hfov_deg": _r(pose.hfov_deg, 3)}
    if any(v is None for v in out.values()):
        return None
    out["t_ns"] = int(pose.t_ns)
    return out


def fire_message(result: Result, drone_id: str, *, mask_max_side: int = 256, georef: str | None = None,
                 msg_id: str | None = None, now_ns: int | None = None,
                 snapshot: dict[str, Any] | None = None) -> dict[str, Any]:
    """One processed frame -> a `fire` message (a dict; `dumps` makes the bytes).

    georef: "ok" | "no_pose" | "no_camera" | "failed"; by default "ok" when a pose is known and every
    region has a geo polygon, "no_pose" without a pose. latency_ms is capture -> now on the monotonic clock.
    """
    h, w = result.mask.shape[:2]
    regions = []
    total_m2: float | None = 0.0
    for r in list(result.regions)[:256]:
        geo = geojson_polygon(r.geo_polygon) if r.geo_polygon is not None else None
        area_m2 = _r(r.area_m2, 2)
        if area_m2 is None or geo is None:
            total_m2 = None
        elif total_m2 is not None:
            total_m2 += area_m2
        regions.append({
            "id": int(r.id),
            "polygon": _thin(np.asarray(r.polygon).reshape(-1, 2).astype(int).tolist(), MAX_RING_POINTS),
            "area_px": int(r.area_px),
            "bbox": [int(v) for v in r.bbox],
            "centroid": [round(float(r.centroid[0]), 2), round(float(r.centroid[1]), 2)],
            "confidence": {"mean": min(1.0, max(0.0, round(float(r.mean_prob), 4))),
                           "peak": min(1.0, max(0.0, round(float(r.peak_prob), 4)))},
            "geo": geo,
            "area_m2": area_m2 if geo is not None else None,
        })
    _fit_points(regions)
    pose = _pose(result.pose)
    if georef is None:
        if pose is None:
            georef = "no_pose"
        else:
            georef = "ok" if all(r["geo"] is not None for r in regions) else "failed"
    if pose is None or georef != "ok":
        total_m2 = None
    now = time.monotonic_ns() if now_ns is None else now_ns
    mask = encode_mask(result.mask, mask_max_side)
    msg = {
        "v": WIRE_VERSION,
        "kind": "fire",
        "id": msg_id or new_id(),
        "drone_id": drone_id,
        "seq": int(result.seq),
        "t_capture_ns": int(result.t_wall_ns),
        "source_id": str(result.source_id)[:200],
        "alert": AlertLevel(result.alert).value,
        "source_state": SourceState(result.source_state).value,
        "frame": {"width": int(w), "height": int(h)},
        "fire_fraction": round(result.fire_fraction, 6),
        "fire_score": _r(result.fire_score, 4),
        "regions": regions,
        "georef": georef,
        "pose": pose,
        "area_m2": None if total_m2 is None else round(total_m2, 2),
        "mask": mask,
        "mask_dropped": False,
        "model": _model(result.model_id, result.precision),
        "latency_ms": round(max(0.0, (now - result.t_capture_ns) / 1e6), 3),
        "drops": {k: int(v) for k, v in (result.drops or {}).items()},
    }
    if snapshot is not None:  # optional: absent unless a sink asks for snapshots (net/snapshot.py)
        msg["snapshot"] = snapshot
    return msg


def _fit_points(regions: list[dict[str, Any]]) -> None:
    """Thin every outline until the message has at most MAX_POINTS points (receivers refuse more)."""
    total = sum(len(r["polygon"]) + (len(r["geo"]["coordinates"][0]) if r["geo"] else 0) for r in regions)
    if total <= MAX_POINTS:
        return
    for r in regions:
        r["polygon"] = _thin(r["polygon"], max(3, len(r["polygon"]) * MAX_POINTS // (2 * total)))
        if r["geo"]:
            ring = r["geo"]["coordinates"][0][:-1]
            r["geo"] = geojson_polygon(_thin(ring, max(3, len(ring) * MAX_POINTS // (2 * total))))


def strip_mask(payload: bytes) -> bytes | None:
    """The outbox's shrink step: the same fire message (same id) without its mask, flagged mask_dropped.
    None when there is nothing to strip."""
    try:
        msg = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("kind") != "fire" or not (msg.get("mask") or msg.get("snapshot")):
        return None
    if msg.get("mask"):
        msg["mask"] = None
        msg["mask_dropped"] = True
    msg.pop("snapshot", None)  # a snapshot is the largest part and the least needed one
    return dumps(msg)


def state_message(drone_id: str, *, seq: int = -1, t_capture_ns: int | None = None, running: bool = True,
                  source_state: str = "connecting", no_frame_s: float | None = None, fps: float = 0.0,
                  frames: int = 0, drops: dict[str, int] | None = None, model: dict[str, Any] | None = None,
                  adapter: dict[str, Any] | None = None, alert: str | None = None,
                  temperature_c: float | None = None, outbox: dict[str, Any] | None = None,
                  transport: str = "mqtt", connected: bool = False, link_error: str | None = None,
                  t_ns: int | None = None) -> dict[str, Any]:
    msg = {
        "v": WIRE_VERSION,
        "kind": "state",
        "id": new_id(),
        "drone_id": drone_id,
        "seq": int(seq),
        "t_capture_ns": None if t_capture_ns is None else int(t_capture_ns),
        "t_ns": int(time.time_ns() if t_ns is None else t_ns),
        "running": bool(running),
        "source_state": SourceState(source_state).value,
        "no_frame_s": _r(no_frame_s, 3),
        "fps": round(max(0.0, float(fps)), 3),
        "frames": int(frames),
        "drops": {k: int(v) for k, v in (drops or {}).items()},
        "model": model,
        "adapter": adapter or {"name": None, "state": "off"},
        "temperature_c": _r(temperature_c, 1),
        "outbox": outbox,
        "link": {"transport": transport, "connected": bool(connected),
                 "error": None if link_error is None else str(link_error)[:300]},
    }
    if alert is not None:
        msg["alert"] = alert
    return msg


def ack_message(drone_id: str, acked: list[dict[str, Any]], station: str) -> dict[str, Any]:
    """A ground station acknowledging fire messages of one drone. `acked`: the fire messages (or dicts with
    id, seq, t_capture_ns); seq/t_capture_ns of the header are those of the first one."""
    if not acked:
        raise ValueError("an ack acknowledges at least one message")
    first = acked[0]
    return {
        "v": WIRE_VERSION,
        "kind": "ack",
        "id": new_id(),
        "drone_id": drone_id,
        "seq": int(first.get("seq", -1)),
        "t_capture_ns": first.get("t_capture_ns"),
        "ids": [m["id"] for m in acked],
        "station": str(station)[:200],
    }


def model_dict(model_id: str, precision: Any) -> dict[str, Any]:
    return _model(model_id, precision)
