"""Cursor-on-Target (CoT) events for TAK clients (ATAK, WinTAK, iTAK) from processed frames (docs/tak.md).

Pure functions, no I/O: the `tak` sink stores what these build in its outbox and sends it. Events are built
with PyTAK's element helpers (the same `event`/`point`/`detail` layout its clients send) at 7 decimals
(~1 cm; PyTAK's default of 4 is ~11 m, too coarse to outline a fire).

UIDs are stable so a TAK client updates an item in place instead of piling up a new one per frame:

    <prefix>.<drone>                 the drone: a friendly UAV track (`drone_type`) with a <sensor> detail
    <prefix>.<drone>.footprint       the ground the camera sees (a polygon, `u-d-f`)
    <prefix>.<drone>.fire.<k>        the k-th largest fire region of the latest frame (a polygon, `u-d-f`)
    <prefix>.<drone>.site.<k>        a point at its centroid (`site_type`, a red spot marker)

Times are the frame's capture time, so a message resent after an outage keeps them and a backlog older than
`stale_s` arrives already stale; `stale` = capture + `stale_s` (by default the fire map's window).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import warnings

with warnings.catch_warnings():  # PyTAK warns at import about optional extras (aiohttp) the sink never uses
    warnings.simplefilter("ignore")
    import pytak

PRECISION = 7  # decimals of lat/lon: ~1 cm
UNKNOWN = "9999999.0"  # CoT's "unknown" for hae, ce and le
DELETE_TYPE = "t-x-d-d"  # a TAK delete: removes the linked uid from clients' maps

# ATAK colours are signed 32-bit ARGB integers.
RED = -65536  # 0xFFFF0000
RED_FILL = 0x55FF0000  # translucent red
FOOTPRINT = -16711681  # 0xFF00FFFF cyan


@dataclass(frozen=True)
class CotStyle:
    """What the sink's options decide about the events."""

    uid_prefix: str = "firespotter"
    callsign: str | None = None  # default: the drone id
    drone_type: str = "a-f-A-M-F-Q"  # friendly / air / military / fixed wing / UAV
    site_type: str = "b-m-p-s-m"  # spot map marker
    shape_type: str = "u-d-f"  # a drawn freeform shape: ATAK draws its <link point> vertices
    stale_s: float = 900.0
    track_stale_s: float = 15.0
    tolerance_m: float = 0.25  # outline simplification (simplify_ring)
    max_vertices: int = 256


def iso_time(t_ns: int) -> str:
    """UTC ns since the epoch -> CoT's W3C dateTime (millisecond precision, 'Z')."""
    t = _dt.datetime.fromtimestamp(t_ns / 1e9, tz=_dt.timezone.utc)
    return t.strftime(pytak.W3C_XML_DATETIME)


def _clean(text: str, limit: int = 200) -> str:
    # one event per line on the wire: no newlines or control characters inside
    return re.sub(r"[\x00-\x1f]+", " ", str(text))[:limit]


def _event(uid: str, cot_type: str, lat: float, lon: float, t_ns: int, stale_s: float, *, how: str = "m-f",
           hae: str = UNKNOWN, callsign: str | None = None) -> ET.Element:
    point = pytak.cot_point(lat=lat, lon=lon, hae=hae, ce=UNKNOWN, le=UNKNOWN, precision=PRECISION)
    event = pytak.cot_event(uid=uid, cot_type=cot_type, how=how, point=point,
                            detail=pytak.cot_detail(flow_tag=False), callsign=callsign and _clean(callsign))
    # PyTAK stamps the wall clock now; a CoT event describes the frame, so its capture time is authoritative.
    event.set("time", iso_time(t_ns))
    event.set("start", iso_time(t_ns))
    event.set("stale", iso_time(t_ns + int(stale_s * 1e9)))
    return event


def _ring_detail(detail: ET.Element, ring: Sequence[Sequence[float]], stroke: int, fill: int | None,
                 weight: float = 3.0) -> None:
    pts = [(float(lon), float(lat)) for lon, lat in ring]
    if pts and pts[0] != pts[-1]:
        pts.append(pts[0])  # closed: ATAK draws an open ring as a line
    for lon, lat in pts:
        ET.SubElement(detail, "link", point=f"{lat:.{PRECISION}f},{lon:.{PRECISION}f}")
    ET.SubElement(detail, "strokeColor", value=str(stroke))
    ET.SubElement(detail, "strokeWeight", value=f"{weight:.1f}")
    if fill is not None:
        ET.SubElement(detail, "fillColor", value=str(fill))
    ET.SubElement(detail, "labels_on", value="true")


def centroid_lonlat(ring: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Area centroid of a lon/lat ring (planar in degrees: fine for a fire's size); vertex mean if degenerate."""
    pts = [(float(p[0]), float(p[1])) for p in ring]
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts = pts[:-1]
    a = cx = cy = 0.0
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        c = x0 * y1 - x1 * y0
        a += c
        cx += (x0 + x1) * c
        cy += (y0 + y1) * c
    if abs(a) < 1e-18:
        return sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    return cx / (3 * a), cy / (3 * a)


def simplify_ring(ring: Sequence[Sequence[float]], tolerance_m: float = 0.25, max_vertices: int = 256
                  ) -> list[tuple[float, float]]:
    """A lon/lat ring with the vertices that change its outline by less than tolerance_m left out
    (Ramer-Douglas-Peucker in local metres), the tolerance doubled until at most max_vertices remain: a pixel
    contour has a vertex per pixel step, which TAK clients draw slowly and a UDP datagram cannot hold.
    Kept vertices are original ones, so the outline moves by at most the final tolerance."""
    import numpy as np

    from firespotter.runtime.geo import lonlat_to_ne

    pts = [(float(p[0]), float(p[1])) for p in ring]
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts = pts[:-1]
    if len(pts) <= 4:
        return pts
    xy = lonlat_to_ne(np.array(pts), pts[0][1], pts[0][0])
    # split the closed ring at the vertex farthest from the first: two open chains
    far = int(np.argmax(np.hypot(*(xy - xy[0]).T)))
    chains = [np.arange(0, far + 1), np.r_[np.arange(far, len(pts)), 0]]
    tol = max(tolerance_m, 1e-6)
    while True:
        keep: set[int] = set()
        for idx in chains:
            keep.update(int(i) for i in _rdp(xy, idx, tol))
        if len(keep) <= max_vertices or tol > 1e6:
            break
        tol *= 2
    return [pts[i] for i in sorted(keep)]


def _rdp(xy, idx, tol: float) -> list[int]:
    import numpy as np

    out = [idx[0], idx[-1]]
    stack = [(0, len(idx) - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        p, q = xy[idx[a]], xy[idx[b]]
        seg = q - p
        pts = xy[idx[a + 1:b]] - p
        norm = float(np.hypot(*seg))
        if norm < 1e-9:
            d = np.hypot(pts[:, 0], pts[:, 1])
        else:
            d = np.abs(seg[0] * pts[:, 1] - seg[1] * pts[:, 0]) / norm
        k = int(np.argmax(d))
        if d[k] > tol:
            m = a + 1 + k
            out.append(idx[m])
            stack += [(a, m), (m, b)]
    return out


def _remark(detail: ET.Element, text: str) -> None:
    pytak.add_remarks(detail, [_clean(text, 500)])


def fire_events(regions: Iterable[Any], drone_id: str, t_ns: int, style: CotStyle, *, alert: str = "fire",
                previous: int = 0, seq: int = -1) -> list[ET.Element]:
    """A frame's geo-referenced regions -> a polygon and a site point per region, plus a delete for each
    uid of the previous frame's regions beyond this frame's count (their fire is out or merged).
    Regions without a geo polygon (no pose) are skipped: TAK has no use for pixel outlines."""
    name = style.callsign or drone_id
    base = f"{style.uid_prefix}.{drone_id}"
    events: list[ET.Element] = []
    k = 0
    for r in regions:
        ring = getattr(r, "geo_polygon", None)
        if ring is None or len(ring) < 3:
            continue
        lon, lat = centroid_lonlat(ring)
        ring = simplify_ring(ring, style.tolerance_m, style.max_vertices)
        area = getattr(r, "area_m2", None)
        area_txt = f"{area:.0f} m2" if area is not None and math.isfinite(area) else "area unknown"
        peak = float(getattr(r, "peak_prob", 0.0))
        label = f"FIRE {name} #{k + 1}"
        shape = _event(f"{base}.fire.{k}", style.shape_type, lat, lon, t_ns, style.stale_s, callsign=label)
        detail = shape.find("detail")
        _ring_detail(detail, ring, RED, RED_FILL)
        _remark(detail, f"{alert} detected by {name}: {area_txt}, peak confidence {peak:.2f}")
        # TAK clients ignore detail elements they do not know; ours lets a script tie the shape to its frame
        ET.SubElement(detail, "_firespotter", drone=drone_id, seq=str(int(seq)), alert=alert,
                      area_m2="" if area is None else f"{area:.2f}", peak=f"{peak:.4f}")
        events.append(shape)
        site = _event(f"{base}.site.{k}", style.site_type, lat, lon, t_ns, style.stale_s, callsign=label)
        sd = site.find("detail")
        ET.SubElement(sd, "color", argb=str(RED))
        ET.SubElement(sd, "usericon", iconsetpath=f"COT_MAPPING_SPOTMAP/{style.site_type}/{RED}")
        _remark(sd, f"{alert}: {area_txt}, peak {peak:.2f}")
        events.append(site)
        k += 1
    for gone in range(k, previous):
        for kind in ("fire", "site"):
            events.append(delete_event(f"{base}.{kind}.{gone}", t_ns, style))
    return events


def delete_event(uid: str, t_ns: int, style: CotStyle) -> ET.Element:
    """A TAK delete of `uid` (a `t-x-d-d` event linking it, with `__forcedelete`)."""
    ev = _event(f"{uid}.delete", DELETE_TYPE, 0.0, 0.0, t_ns, 20.0, how="h-g-i-g-o")
    detail = ev.find("detail")
    ET.SubElement(detail, "link", uid=uid, relation="none", type="none")
    ET.SubElement(detail, "__forcedelete")
    return ev


def drone_events(pose: Any, drone_id: str, t_ns: int, style: CotStyle, *, footprint: Sequence | None = None,
                 stale_s: float | None = None, remarks: str = "") -> list[ET.Element]:
    """The drone as a friendly UAV track at its pose (course = camera yaw) with an ATAK <sensor> cone, and
    its camera footprint as a polygon when known. stale_s 0 marks it stale at once (a clean shutdown)."""
    stale = style.track_stale_s if stale_s is None else stale_s
    name = style.callsign or drone_id
    base = f"{style.uid_prefix}.{drone_id}"
    ev = _event(base, style.drone_type, pose.lat, pose.lon, t_ns, stale, how="m-g", callsign=name)
    detail = ev.find("detail")
    ET.SubElement(detail, "track", course=f"{float(pose.yaw_deg) % 360:.1f}", speed="0.0")
    ET.SubElement(detail, "sensor", fov=f"{float(pose.hfov_deg):.1f}", azimuth=f"{float(pose.yaw_deg) % 360:.1f}",
                  elevation=f"{float(pose.pitch_deg):.1f}", roll=f"{float(pose.roll_deg):.1f}",
                  range=f"{max(1.0, float(pose.alt_agl_m) * 2):.0f}", displayMagneticReference="0")
    ET.SubElement(detail, "uid", Droid=_clean(name, 64))
    _remark(detail, f"{remarks} {float(pose.alt_agl_m):.0f} m AGL".strip())
    events = [ev]
    if footprint is not None and len(footprint) >= 3:
        lon, lat = centroid_lonlat(footprint)
        fp = _event(f"{base}.footprint", style.shape_type, lat, lon, t_ns, stale, callsign=f"{name} camera")
        _ring_detail(fp.find("detail"), footprint, FOOTPRINT, None, weight=2.0)
        events.append(fp)
    return events


def encode(events: Iterable[ET.Element]) -> bytes:
    """Events -> bytes for the wire: one XML event per line, no declaration (what TAK servers and clients
    read on a stream; a UDP datagram carries one line)."""
    return b"".join(pytak.serialize_cot(e, xml_declaration=False, trailing_newline=True) for e in events)


def mesh(line: bytes) -> bytes:
    """One XML event -> TAK Protocol Version 1 "mesh" (a 0xbf 0x01 0xbf header and the TakMessage protobuf,
    with what has no protobuf field, such as shape vertices, kept as xmlDetail): what ATAK sends on the SA
    multicast group by default."""
    import takproto

    return bytes(takproto.xml2proto(line.decode("utf-8"), takproto.TAKProtoVer.MESH))


def split(payload: bytes) -> list[bytes]:
    """The lines `encode` joined: one event each."""
    return [line for line in payload.split(b"\n") if line.strip()]
