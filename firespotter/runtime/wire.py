"""Wire format v1 (DESIGN §8, docs/wire-format.md): the one place messages are built, encoded and decoded.

Every network sink (zenoh, mqtt, mavlink) and the ground-station listener use this module; nothing else
builds or parses wire messages. Messages are JSON objects (UTF-8) published on `firespotter/<drone_id>/<kind>`:

- `fire`:  regions (pixel polygons, area, confidence), geo polygons when a pose is known (GeoJSON lon/lat),
           the mask as base64 PNG at a configurable resolution, source state, model and precision labels,
           capture-to-send latency;
- `state`: heartbeat (source state, fps, drops, model, adapter, outbox, link);
- `ack`:   a ground station acknowledging `fire` messages by id.

Every message has `v` (1), `kind`, a unique `id` (32 hex digits; a resend carries the same id so receivers can
drop duplicates), `drone_id`, the frame `seq` and `t_capture_ns` (UTC wall clock of the capture, ns).

The schema (schemas/wire-v1.schema.json) is the contract. `validate()` checks a message against it with a
small built-in validator for the JSON Schema keywords the schema uses (no third-party dependency on the
drone); tests cross-check with `jsonschema` where it is installed.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .types import AlertLevel, Result, SourceState

WIRE_VERSION = 1
KINDS = ("fire", "state", "ack")
TOPIC_PREFIX = "firespotter"
SCHEMA_PATH = Path(__file__).with_name("schemas") / "wire-v1.schema.json"
_DRONE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ALERT_RANK = {"none": 0, "suspect": 1, "fire": 2}


class WireError(ValueError):
    """A message that is not valid wire format v1: says where and what."""


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


# --- schema validation --------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _resolve(root: dict, ref: str) -> dict:
    if not ref.startswith("#/"):
        raise WireError(f"schema: unsupported $ref {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _check(value: Any, schema: dict, root: dict, path: str, errors: list[str]) -> None:
    """The subset of JSON Schema 2020-12 the wire schema uses. Appends 'path: problem' to errors."""
    if "$ref" in schema:
        _check(value, _resolve(root, schema["$ref"]), root, path, errors)
    for sub in schema.get("allOf", ()):
        _check(value, sub, root, path, errors)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            matches = 0
            first: list[str] = []
            for sub in schema[key]:
                errs: list[str] = []
                _check(value, sub, root, path, errs)
                if not errs:
                    matches += 1
                elif not first or len(errs) < len(first):
                    first = errs
            if matches == 0:
                errors.extend(first or [f"{path}: matches none of the alternatives"])
            elif key == "oneOf" and matches > 1:
                errors.append(f"{path}: matches {matches} alternatives of oneOf, expected exactly one")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            errors.append(f"{path}: expected {' or '.join(types)}, got {_describe(value)}")
            return
    if "const" in schema and not _same(value, schema["const"]):
        errors.append(f"{path}: must be {json.dumps(schema['const'])}, got {_describe(value)}")
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        errors.append(f"{path}: must be one of {', '.join(json.dumps(e) for e in schema['enum'])}, got {_describe(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} is above the maximum {schema['maximum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {_describe(value)} does not match {schema['pattern']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: {len(value)} items, at least {schema['minItems']} expected")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: {len(value)} items, at most {schema['maxItems']} expected")
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], root, f"{path}[{i}]", errors)
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                errors.append(f"{path}: missing key {key!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                _check(item, props[key], root, f"{path}.{key}", errors)
            elif extra is False:
                errors.append(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                _check(item, extra, root, f"{path}.{key}", errors)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _compile(schema: dict, root: dict, refs: dict[str, Any]):
    """The same checks as _check as one boolean predicate, built once: the fast path (a 512x512 fire
    message with hundreds of polygon points validates in about a millisecond). _check explains failures."""
    if "$ref" in schema and len(schema) == 1:
        ref = schema["$ref"]
        if ref not in refs:
            refs[ref] = None  # recursion guard (the wire schema is not recursive)
            refs[ref] = _compile(_resolve(root, ref), root, refs)
        return refs[ref]
    if set(schema) <= {"type", "minItems", "maxItems", "items"} and schema.get("type") == "array" \
            and schema.get("items") == {"type": "number"}:  # a point: the hot spot, one closure
        lo, hi = schema.get("minItems", 0), schema.get("maxItems", 1 << 62)
        isfinite = math.isfinite

        def point(v, lo=lo, hi=hi):
            if type(v) is not list or not lo <= len(v) <= hi:
                return False
            for x in v:
                t = type(x)
                if t is int:
                    continue
                if t is not float or not isfinite(x):
                    return False
            return True

        return point
    preds = []
    if "$ref" in schema:
        preds.append(_compile({"$ref": schema["$ref"]}, root, refs))
    for sub in schema.get("allOf", ()):
        preds.append(_compile(sub, root, refs))
    for key in ("oneOf", "anyOf"):
        if key in schema:
            alts = [_compile(s, root, refs) for s in schema[key]]
            if key == "oneOf":
                preds.append(lambda v, alts=alts: sum(1 for a in alts if a(v)) == 1)
            else:
                preds.append(lambda v, alts=alts: any(a(v) for a in alts))
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        tests = [_TYPES[t] for t in types]
        if len(tests) == 1:
            preds.append(tests[0])
        else:
            preds.append(lambda v, tests=tests: any(t(v) for t in tests))
    if "const" in schema:
        c = schema["const"]
        preds.append(lambda v, c=c: _same(v, c))
    if "enum" in schema:
        options = schema["enum"]
        preds.append(lambda v, options=options: any(_same(v, e) for e in options))
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if "minimum" in schema:
        lo = schema["minimum"]
        preds.append(lambda v, lo=lo: not num(v) or v >= lo)
    if "maximum" in schema:
        hi = schema["maximum"]
        preds.append(lambda v, hi=hi: not num(v) or v <= hi)
    if "pattern" in schema:
        rx = re.compile(schema["pattern"])
        preds.append(lambda v, rx=rx: not isinstance(v, str) or rx.search(v) is not None)
    if "maxLength" in schema:
        n = schema["maxLength"]
        preds.append(lambda v, n=n: not isinstance(v, str) or len(v) <= n)
    if "minItems" in schema or "maxItems" in schema:
        lo, hi = schema.get("minItems", 0), schema.get("maxItems", 1 << 62)
        preds.append(lambda v, lo=lo, hi=hi: not isinstance(v, list) or lo <= len(v) <= hi)
    if "items" in schema:
        item = schema["items"]
        if item == {"type": "number"}:  # polygon points: the hot spot
            ok_num = _TYPES["number"]
            preds.append(lambda v, ok=ok_num: not isinstance(v, list) or all(ok(x) for x in v))
        else:
            ok_item = _compile(item, root, refs)
            preds.append(lambda v, ok=ok_item: not isinstance(v, list) or all(ok(x) for x in v))
    if "required" in schema or "properties" in schema or "additionalProperties" in schema:
        required = tuple(schema.get("required", ()))
        props = {k: _compile(s, root, refs) for k, s in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties", True)
        extra_ok = _compile(extra, root, refs) if isinstance(extra, dict) else None

        def obj(v, required=required, props=props, extra=extra, extra_ok=extra_ok):
            if not isinstance(v, dict):
                return True
            for k in required:
                if k not in v:
                    return False
            for k, item in v.items():
                p = props.get(k)
                if p is not None:
                    if not p(item):
                        return False
                elif extra is False:
                    return False
                elif extra_ok is not None and not extra_ok(item):
                    return False
            return True

        preds.append(obj)
    if not preds:
        return lambda v: True
    if len(preds) == 1:
        return preds[0]
    return lambda v, preds=tuple(preds): all(p(v) for p in preds)


@lru_cache(maxsize=1)
def _predicates() -> dict[str, Any]:
    root = load_schema()
    refs: dict[str, Any] = {}
    return {kind: _compile(root["$defs"][kind], root, refs) for kind in KINDS}


def validation_errors(msg: Any) -> list[str]:
    """Every problem of `msg` against the wire v1 schema ([] when valid). The message's `kind` picks the
    definition, so errors are about that kind rather than 'matches none of fire/state/ack'."""
    root = load_schema()
    if not isinstance(msg, dict):
        return [f"message: expected a JSON object, got {_describe(msg)}"]
    kind = msg.get("kind")
    if kind not in KINDS:
        return [f"message.kind: must be one of {', '.join(KINDS)}, got {_describe(kind)}"]
    if _predicates()[kind](msg):
        return []
    errors: list[str] = []
    _check(msg, root["$defs"][kind], root, "message", errors)
    return errors or ["message: does not match the schema"]


def validate(msg: Any) -> dict[str, Any]:
    """Return `msg` when it is valid wire v1, else raise WireError naming the first problems."""
    errors = validation_errors(msg)
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise WireError("; ".join(errors[:3]) + more)
    return msg


# --- encoding -----------------------------------------------------------------------------------------


def dumps(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":"), allow_nan=False).encode("utf-8")


def loads(payload: bytes | bytearray | memoryview | str, *, check: bool = True) -> dict[str, Any]:
    """Bytes from the network -> a validated message. Raises WireError on anything malformed."""
    try:
        if isinstance(payload, (bytes, bytearray, memoryview)):
            payload = bytes(payload).decode("utf-8")
        msg = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"not a JSON message: {exc}") from None
    except RecursionError:
        raise WireError("not a JSON message: nested too deeply") from None
    if check:
        validate(msg)
        if msg.get("v") != WIRE_VERSION:  # the schema says so too; kept explicit for future versions
            raise WireError(f"unsupported wire version {msg.get('v')!r}")
    return msg


def encode_mask(mask: np.ndarray, max_side: int) -> dict[str, Any] | None:
    """H×W 0/255 mask -> {"format": "png", width, height, data: base64} with the longer side at most
    max_side (area-downscaled, then re-thresholded, so thin fire lines survive). max_side 0 = no mask."""
    import cv2

    if max_side <= 0 or mask is None or mask.size == 0:
        return None
    h, w = mask.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
        mask = np.where(small >= 64, 255, 0).astype(np.uint8)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(mask, dtype=np.uint8),
                           [cv2.IMWRITE_PNG_BILEVEL, 1, cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise WireError("PNG encoding of the mask failed")
    return {"format": "png", "width": int(mask.shape[1]), "height": int(mask.shape[0]),
            "data": base64.b64encode(png.tobytes()).decode("ascii")}


def decode_mask(msg_or_mask: dict[str, Any]) -> np.ndarray | None:
    """A fire message (or its `mask` object) -> H×W uint8 0/255, or None when it carries no mask."""
    import cv2

    m = msg_or_mask.get("mask", msg_or_mask) if "kind" in msg_or_mask else msg_or_mask
    if not m:
        return None
    try:
        data = base64.b64decode(m["data"], validate=True)
    except (ValueError, KeyError) as exc:
        raise WireError(f"mask: bad base64 data: {exc}") from None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise WireError("mask: data is not a PNG image")
    if img.shape != (m["height"], m["width"]):
        raise WireError(f"mask: PNG is {img.shape[1]}x{img.shape[0]}, message says {m['width']}x{m['height']}")
    return np.where(img > 127, 255, 0).astype(np.uint8)


def _r(x: float | None, nd: int) -> float | None:
    if x is None:
        return None
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


def _model(model_id: str, precision: Any) -> dict[str, Any]:
    p = precision.as_dict() if hasattr(precision, "as_dict") else dict(precision or {})
    return {"id": str(model_id)[:200], "precision_exec": p.get("precision_exec", "fp32"),
            "weight_bits": int(p.get("weight_bits", 32)), "simulated": bool(p.get("simulated", False))}


def geojson_polygon(ring: Iterable[Iterable[float]]) -> dict[str, Any] | None:
    """(lon, lat) ring -> a closed GeoJSON Polygon (7 decimals, ~1 cm); None for fewer than 3 points."""
    pts = [[round(float(p[0]), 7), round(float(p[1]), 7)] for p in ring]
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
                 msg_id: str | None = None, now_ns: int | None = None) -> dict[str, Any]:
    """One processed frame -> a `fire` message (a dict; `dumps` makes the bytes).

    georef: "ok" | "no_pose" | "no_camera" | "failed"; by default "ok" when a pose is known and every
    region has a geo polygon, "no_pose" without a pose. latency_ms is capture -> now on the monotonic clock.
    """
    h, w = result.mask.shape[:2]
    regions = []
    total_m2: float | None = 0.0
    for r in result.regions:
        geo = geojson_polygon(r.geo_polygon) if r.geo_polygon is not None else None
        area_m2 = _r(r.area_m2, 2)
        if area_m2 is None or geo is None:
            total_m2 = None
        elif total_m2 is not None:
            total_m2 += area_m2
        regions.append({
            "id": int(r.id),
            "polygon": np.asarray(r.polygon).reshape(-1, 2).astype(int).tolist(),
            "area_px": int(r.area_px),
            "bbox": [int(v) for v in r.bbox],
            "centroid": [round(float(r.centroid[0]), 2), round(float(r.centroid[1]), 2)],
            "confidence": {"mean": min(1.0, max(0.0, round(float(r.mean_prob), 4))),
                           "peak": min(1.0, max(0.0, round(float(r.peak_prob), 4)))},
            "geo": geo,
            "area_m2": area_m2 if geo is not None else None,
        })
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
    return msg


def strip_mask(payload: bytes) -> bytes | None:
    """The outbox's shrink step: the same fire message (same id) without its mask, flagged mask_dropped.
    None when there is nothing to strip."""
    try:
        msg = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("kind") != "fire" or not msg.get("mask"):
        return None
    msg["mask"] = None
    msg["mask_dropped"] = True
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


# --- rate limiting ------------------------------------------------------------------------------------


class FireGate:
    """Decides which results become `fire` messages: at most one every `min_interval_ms` per drone, unless
    the fire changed materially since the last one sent (alert level, number of regions, total area or total
    perimeter by more than `change_frac`), and one message with no regions when a fire disappears (so a
    ground station sees it end). Results below `min_alert` never send, except that "fire ended" message."""

    def __init__(self, min_interval_ms: float = 1000.0, change_frac: float = 0.2, min_alert: str = "suspect"):
        self.min_interval_ns = int(min_interval_ms * 1e6)
        self.change_frac = change_frac
        self.min_rank = ALERT_RANK[min_alert]
        self._last_ns: int | None = None
        self._last: tuple[int, int, float, float] | None = None  # alert rank, regions, area, perimeter
        self.suppressed = 0

    @staticmethod
    def _signature(result: Result) -> tuple[int, int, float, float]:
        import cv2

        area = float(sum(r.area_px for r in result.regions))
        perim = 0.0
        for r in result.regions:
            poly = np.asarray(r.polygon, np.int32).reshape(-1, 1, 2)
            if len(poly) >= 2:
                perim += cv2.arcLength(poly, True)
        return ALERT_RANK[AlertLevel(result.alert).value], len(result.regions), area, perim

    def _changed(self, sig: tuple[int, int, float, float]) -> bool:
        last = self._last
        if last is None:
            return True
        if sig[0] != last[0] or sig[1] != last[1]:
            return True
        for i in (2, 3):
            if abs(sig[i] - last[i]) > self.change_frac * max(last[i], 1.0):
                return True
        return False

    def admit(self, result: Result, now_ns: int | None = None) -> bool:
        now = time.monotonic_ns() if now_ns is None else now_ns
        sig = self._signature(result)
        active = sig[0] >= self.min_rank and sig[1] > 0
        if not active:
            was_active = self._last is not None and self._last[1] > 0
            if was_active:  # the fire ended (or fell below min_alert): say so once
                self._last, self._last_ns = (sig[0], 0, 0.0, 0.0), now
                return True
            return False
        due = self._last_ns is None or now - self._last_ns >= self.min_interval_ns
        if due or self._changed(sig):
            self._last, self._last_ns = sig, now
            return True
        self.suppressed += 1
        return False
