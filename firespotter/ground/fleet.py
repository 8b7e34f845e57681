"""The fleet fire map: recent geo-referenced fire polygons of every drone, dissolved into their union.

Shared by the ground station (the --geojson file) and the ground view (the page's age bands and the exports).
Coordinates from the network are checked here (finite, in range) before they reach the map.
"""

from __future__ import annotations

import json
import math
import os
import time
from copy import copy as shallow_copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _npoints(rings: list) -> int:
    return sum(len(r) for r in rings)


@dataclass
class Detection:
    t: float  # receive time (time.time())
    drone_id: str
    msg_id: str
    seq: int
    t_capture_ns: int
    rings: list[list[tuple[float, float]]]  # (lon, lat) rings


class FleetMap:
    """Recent geo-referenced fire polygons of every drone, dissolved into their union (shapely's unary_union).

    Every ring of every message is a filled polygon (overlapping rings of one message add up, they never cut
    holes as an even-odd fill would); a self-intersecting ring is repaired first (make_valid). The output
    follows RFC 7946 §3.1.6: outer rings counter-clockwise, holes clockwise. Each union polygon says which
    drones saw it, when, and its area.

    Not thread-safe: the ground station takes a `snapshot()` under its lock and computes `geojson()` on the
    snapshot outside it, so a large union never holds up incoming messages."""

    def __init__(self, window_s: float = 900.0, max_detections: int = 5000, max_points: int = 500_000):
        self.window_s = window_s
        # bounds on valid input: detections kept and their points in all (the oldest go first)
        self.max_detections = max_detections
        self.max_points = max_points
        self._points = 0
        self.detections: list[Detection] = []
        self.drone_positions: dict[str, tuple[float, float, float]] = {}  # drone -> (lon, lat, t)

    def add(self, msg: dict[str, Any], t: float | None = None) -> bool:
        t = time.time() if t is None else t
        pos = pose_lonlat(msg)
        if pos is not None:
            self.drone_positions[msg["drone_id"]] = (pos[0], pos[1], t)
        rings = fire_rings(msg)
        if not rings:
            return False
        self.detections.append(Detection(t, msg["drone_id"], msg["id"], msg["seq"], msg["t_capture_ns"], rings))
        self._points += _npoints(rings)
        while len(self.detections) > self.max_detections or (self._points > self.max_points and len(self.detections) > 1):
            self._points -= _npoints(self.detections.pop(0).rings)
        return True

    def prune(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        keep = [d for d in self.detections if now - d.t <= self.window_s]
        changed = len(keep) != len(self.detections)
        self.detections = keep
        self._points = sum(_npoints(d.rings) for d in keep)
        horizon = now - max(self.window_s, 3600.0)
        for k in [k for k, v in self.drone_positions.items() if v[2] < horizon]:
            del self.drone_positions[k]
        return changed

    def snapshot(self) -> "FleetMap":
        """A copy that shares the (never mutated) detections: cheap under a lock, safe to union outside it."""
        copy = shallow_copy(self)
        copy.detections = list(self.detections)
        copy.drone_positions = dict(self.drone_positions)
        return copy

    def geojson(self) -> dict[str, Any]:
        features: list[dict[str, Any]] = []
        for drone, (lon, lat, t) in sorted(self.drone_positions.items()):
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(lon, 7), round(lat, 7)]},
                             "properties": {"kind": "drone", "drone_id": drone, "last_seen": iso_utc(t)}})
        features += union_features(self.detections, self.window_s)
        return {"type": "FeatureCollection", "features": features,
                "properties": {"generator": "firespotter listen", "window_s": self.window_s, "updated": iso_utc(time.time())}}


GRID_DECIMALS = 7  # 1e-7 degrees, about 1 cm


def detection_shape(det: Detection):
    """The area a detection covers: the union of its rings as filled polygons, repaired where self-intersecting.
    Coordinates are snapped to 1e-7 degrees first (~1 cm, the precision of the output): rings that touch then share
    exact vertices and edges, so neighbouring outlines dissolve instead of leaving float slivers between them."""
    import numpy as np
    import shapely

    polys = [shapely.Polygon(np.round(np.asarray(r, np.float64), GRID_DECIMALS)) for r in det.rings]
    polys = [p if p.is_valid else shapely.make_valid(p) for p in polys]
    return polys[0] if len(polys) == 1 else shapely.unary_union(polys)


def area_m2(poly) -> float:
    """Area of a lon/lat polygon in m²: degrees² scaled by the local radii at its centroid (fires are small
    enough that the scale does not change across one)."""
    from firespotter.runtime.geo import radii

    lat = poly.centroid.y
    m, n = radii(lat)
    return poly.area * math.radians(1.0) ** 2 * m * n * math.cos(math.radians(lat))


def ring_coords(ring) -> list[list[float]]:
    return [[round(x, GRID_DECIMALS), round(y, GRID_DECIMALS)] for x, y in ring.coords]


def union_features(dets: list[Detection], window_s: float) -> list[dict[str, Any]]:
    """The fleet map's fire polygons of these detections: their union, one Feature per connected polygon, RFC 7946
    orientation, with the drones, detection count and first/last time of the detections that touch it."""
    import shapely
    from shapely.geometry.polygon import orient

    if not dets:
        return []
    shapes = [detection_shape(d) for d in dets]
    union = shapely.unary_union(shapes)
    polys = [g for g in getattr(union, "geoms", [union]) if isinstance(g, shapely.Polygon) and not g.is_empty]
    tree = shapely.STRtree(shapes)
    feats = []
    for poly in polys:
        poly = orient(poly, sign=1.0)  # exterior counter-clockwise, holes clockwise
        touching = [dets[i] for i in tree.query(poly, predicate="intersects")]
        coords = [ring_coords(poly.exterior)] + [ring_coords(h) for h in poly.interiors]
        feats.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": coords},
            "properties": {
                "kind": "fire",
                "drones": sorted({d.drone_id for d in touching}),
                "area_m2": round(area_m2(poly), 1),
                "detections": len({d.msg_id for d in touching}),
                "first_seen": iso_utc(min(d.t for d in touching)) if touching else None,
                "last_seen": iso_utc(max(d.t for d in touching)) if touching else None,
            },
        })
    return feats


def lonlat_ok(lon: Any, lat: Any) -> bool:
    return (isinstance(lon, (int, float)) and isinstance(lat, (int, float)) and math.isfinite(lon)
            and math.isfinite(lat) and -180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0)


def fire_rings(msg: dict[str, Any]) -> list[list[tuple[float, float]]]:
    """The outer (lon, lat) rings of a fire message's geo-referenced regions. The wire schema checks shapes,
    not ranges: a ring with a non-finite or out-of-range coordinate (a drone's broken georef, NaN sent as a
    JSON extension) is left out rather than poisoning the fleet map."""
    rings = []
    for r in msg.get("regions") or ():
        geo = r.get("geo") if isinstance(r, dict) else None
        if not geo:
            continue
        ring = [(p[0], p[1]) for p in geo["coordinates"][0]]
        if len(ring) >= 3 and all(lonlat_ok(lon, lat) for lon, lat in ring):
            rings.append(ring)
    return rings


def pose_lonlat(msg: dict[str, Any]) -> tuple[float, float] | None:
    """(lon, lat) of a fire message's pose, None without one (or with a non-finite one)."""
    pose = msg.get("pose")
    if not pose or not lonlat_ok(pose.get("lon"), pose.get("lat")):
        return None
    return float(pose["lon"]), float(pose["lat"])


def iso_utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)
