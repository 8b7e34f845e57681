"""The fleet fire map: recent geo-referenced fire polygons of every drone, dissolved into their union.

Shared by the ground station (the --geojson file) and the ground view (the page's age bands and the exports).
Coordinates from the network are checked here (finite, in range) before they reach the map.
"""

from __future__ import annotations

import json
import math
import os
import time
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
    """Recent geo-referenced fire polygons of every drone, dissolved into their union.

    The union is computed on a local metric grid (cell `cell_m`, coarser when the fires spread over more than
    `max_cells` cells a side): polygons are rasterized, merged, and traced back to lon/lat outlines (with
    holes). Each union polygon says which drones saw it, when, and its area."""

    def __init__(self, window_s: float = 900.0, cell_m: float = 0.5, max_cells: int = 4096,
                 max_detections: int = 5000, max_points: int = 500_000):
        self.window_s = window_s
        # bounds on valid input: detections kept and their points in all (the oldest go first)
        self.max_detections = max_detections
        self.max_points = max_points
        self._points = 0
        self.cell_m = cell_m
        self.max_cells = max_cells
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

    def geojson(self) -> dict[str, Any]:
        import cv2
        import numpy as np

        from firespotter.runtime.geo import lonlat_to_ne, ne_to_lonlat

        features: list[dict[str, Any]] = []
        for drone, (lon, lat, t) in sorted(self.drone_positions.items()):
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(lon, 7), round(lat, 7)]},
                             "properties": {"kind": "drone", "drone_id": drone, "last_seen": iso_utc(t)}})
        dets = self.detections
        if dets:
            all_pts = np.array([p for d in dets for ring in d.rings for p in ring], np.float64)
            lat0, lon0 = float(all_pts[:, 1].mean()), float(all_pts[:, 0].mean())
            rings_ne = [[lonlat_to_ne(np.array(ring), lat0, lon0) for ring in d.rings] for d in dets]
            flat = np.concatenate([r for rs in rings_ne for r in rs])
            lo = flat.min(0) - 2 * self.cell_m
            extent = float((flat.max(0) - lo).max()) + 2 * self.cell_m
            cell = max(self.cell_m, extent / self.max_cells)
            n_rows = int(math.ceil((flat[:, 0].max() - lo[0]) / cell)) + 3
            n_cols = int(math.ceil((flat[:, 1].max() - lo[1]) / cell)) + 3
            grid = np.zeros((n_rows, n_cols), np.uint8)
            shift = 4  # sub-cell precision of fillPoly

            def to_px(ne):  # north grows up the map: row = (north - lo) / cell, flipped later only in meaning
                cols = (ne[:, 1] - lo[1]) / cell
                rows = (ne[:, 0] - lo[0]) / cell
                return np.round(np.stack([cols, rows], 1) * (1 << shift)).astype(np.int32)

            for rs in rings_ne:
                cv2.fillPoly(grid, [to_px(r) for r in rs], 255, lineType=cv2.LINE_8, shift=shift)
            n_labels, labels = cv2.connectedComponents(grid, connectivity=8)
            info: dict[int, dict[str, Any]] = {}
            for d, rs in zip(dets, rings_ne):
                for r in rs:
                    px = to_px(r[:1])[0] >> shift
                    c, rr = int(np.clip(px[0], 0, n_cols - 1)), int(np.clip(px[1], 0, n_rows - 1))
                    lab = int(labels[rr, c])
                    if lab == 0:  # a sliver thinner than a cell: take any labelled cell of its box
                        box = to_px(r) >> shift
                        c0, r0 = np.clip(box.min(0), 0, [n_cols - 1, n_rows - 1])
                        c1, r1 = np.clip(box.max(0), 0, [n_cols - 1, n_rows - 1])
                        sub = labels[r0 : r1 + 1, c0 : c1 + 1]
                        lab = int(sub.max()) if sub.size else 0
                    if lab:
                        e = info.setdefault(lab, {"drones": set(), "first": d.t, "last": d.t, "n": 0, "ids": set()})
                        e["drones"].add(d.drone_id)
                        e["first"], e["last"] = min(e["first"], d.t), max(e["last"], d.t)
                        e["ids"].add(d.msg_id)
            for lab in range(1, n_labels):
                comp = np.where(labels == lab, np.uint8(255), np.uint8(0))  # uint8: no int64 copy of the grid
                contours, hier = cv2.findContours(comp, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
                if not contours:
                    continue
                outer_i = [i for i in range(len(contours)) if hier[0][i][3] < 0]
                if not outer_i:
                    continue
                outer = max(outer_i, key=lambda i: cv2.contourArea(contours[i]))

                def ring_lonlat(cnt):
                    pts = cnt.reshape(-1, 2).astype(np.float64) + 0.5
                    ne = np.stack([pts[:, 1] * cell + lo[0], pts[:, 0] * cell + lo[1]], 1)
                    ll = ne_to_lonlat(ne, lat0, lon0)
                    ring = [[round(float(a), 7), round(float(b), 7)] for a, b in ll]
                    if len(ring) < 3:  # a single cell or a line of cells: its box
                        c, r_ = pts.min(0) - 0.5, pts.max(0) + 0.5
                        box = np.array([[c[1], c[0]], [c[1], r_[0]], [r_[1], r_[0]], [r_[1], c[0]]]) * cell + lo
                        ring = [[round(float(a), 7), round(float(b), 7)] for a, b in ne_to_lonlat(box, lat0, lon0)]
                    return ring + [ring[0]]

                coords = [ring_lonlat(contours[outer])]
                coords += [ring_lonlat(contours[i]) for i in range(len(contours)) if hier[0][i][3] == outer]
                e = info.get(lab, {"drones": set(), "first": None, "last": None, "ids": set()})
                features.append({
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": coords},
                    "properties": {
                        "kind": "fire",
                        "drones": sorted(e["drones"]),
                        "area_m2": round(float(np.count_nonzero(comp)) * cell * cell, 1),
                        "detections": len(e["ids"]),
                        "first_seen": iso_utc(e["first"]) if e["first"] else None,
                        "last_seen": iso_utc(e["last"]) if e["last"] else None,
                    },
                })
        return {"type": "FeatureCollection", "features": features,
                "properties": {"generator": "firespotter listen", "window_s": self.window_s, "updated": iso_utc(time.time()),
                               "cell_m": round(cell, 3) if dets else self.cell_m}}


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


def clusters(dets: list[Detection], cell_deg: float = 0.01) -> list[list[Detection]]:
    """Detections grouped by place: those whose bounding boxes share a cell of a cell_deg grid (~1 km) are in
    one group. Each group is dissolved on its own grid, so fires far apart (a fleet spread over 50 km) keep the
    fleet map's fine cells instead of sharing one coarse raster."""
    parent = list(range(len(dets)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[tuple[int, int], int] = {}
    for i, d in enumerate(dets):
        lons = [p[0] for r in d.rings for p in r]
        lats = [p[1] for r in d.rings for p in r]
        x0, x1 = math.floor(min(lons) / cell_deg), math.floor(max(lons) / cell_deg)
        y0, y1 = math.floor(min(lats) / cell_deg), math.floor(max(lats) / cell_deg)
        if (x1 - x0 + 1) * (y1 - y0 + 1) > 400:  # a huge outline (a broken georef): it joins what it overlaps
            x1, y1 = min(x1, x0 + 19), min(y1, y0 + 19)
        for key in ((x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)):
            j = owner.setdefault(key, i)
            if j != i:
                parent[find(i)] = find(j)
    groups: dict[int, list[Detection]] = {}
    for i, d in enumerate(dets):
        groups.setdefault(find(i), []).append(d)
    return list(groups.values())


def union_features(dets: list[Detection], window_s: float, max_cells: int = 4096) -> list[dict[str, Any]]:
    """The fleet map's fire polygons (FleetMap's union, properties included) of these detections."""
    feats: list[dict[str, Any]] = []
    for group in clusters(dets):
        fm = FleetMap(window_s=window_s, max_cells=max_cells)
        fm.detections = group
        feats += [f for f in fm.geojson()["features"] if f["properties"]["kind"] == "fire"]
    return feats
