#!/usr/bin/env python3
"""The fleet map's union (firespotter/ground/fleet.py, shapely's unary_union): time to dissolve N separate fire
spots scattered over a square of SIDE metres into the GeoJSON the ground station writes (--geojson) and serves
(/export/firemap.geojson).

    python bench/fleet_union.py [--spots 300] [--side-m 2000] [--repeats 7] [--json PATH]

Each spot is a 12-vertex polygon of 3-8 m radius (a typical geo-referenced fire outline), one detection each,
placed at random (seeded) without overlap checks; a second case puts every spot next to an overlapping one
(pairs), so the union has work to do. Reported: median and min milliseconds of FleetMap.geojson() over the
repeats, the number of output polygons, shapely/GEOS versions.

JSON: {"cases": [{"case", "spots", "polygons", "median_ms", "min_ms"}], "machine": {...}, "versions": {...}}
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import shapely  # noqa: E402

from firespotter.ground.fleet import Detection, FleetMap  # noqa: E402

LAT, LON = 46.0, 7.0


def spot(east_m: float, north_m: float, radius_m: float) -> list[tuple[float, float]]:
    dlat, dlon = 1 / 111_200, 1 / (111_320 * math.cos(math.radians(LAT)))
    ring = [(LON + (east_m + radius_m * math.cos(a)) * dlon, LAT + (north_m + radius_m * math.sin(a)) * dlat)
            for a in (2 * math.pi * k / 12 for k in range(12))]
    return ring + [ring[0]]


def detections(n: int, side_m: float, pairs: bool, seed: int = 0) -> list[Detection]:
    """n spots at random places; with `pairs`, every second spot 4 m east of the one before (they overlap)."""
    rnd = random.Random(seed)
    out, t = [], time.time()
    east = north = 0.0
    for i in range(n):
        if pairs and i % 2 == 1:
            east += 4.0
        else:
            east, north = rnd.uniform(0, side_m), rnd.uniform(0, side_m)
        out.append(Detection(t, f"uav-{i % 8}", f"{i:032x}", i, 0, [spot(east, north, rnd.uniform(3, 8))]))
    return out


def measure(dets: list[Detection], repeats: int) -> tuple[list[float], int]:
    fm = FleetMap(window_s=900)
    fm.detections = dets
    times, polys = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fc = fm.geojson()
        times.append((time.perf_counter() - t0) * 1e3)
        polys = sum(1 for f in fc["features"] if f["properties"]["kind"] == "fire")
    return times, polys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spots", type=int, default=300)
    ap.add_argument("--side-m", type=float, default=2000.0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cases = []
    for name, pairs in (("separate", False), ("overlapping pairs", True)):
        times, polys = measure(detections(args.spots, args.side_m, pairs), args.repeats)
        cases.append({"case": name, "spots": args.spots, "polygons": polys, "median_ms": round(statistics.median(times), 2),
                      "min_ms": round(min(times), 2)})
    print(f"{'case':<20}{'spots':>7}{'polygons':>10}{'median ms':>11}{'min ms':>9}")
    for c in cases:
        print(f"{c['case']:<20}{c['spots']:>7}{c['polygons']:>10}{c['median_ms']:>11.2f}{c['min_ms']:>9.2f}")
    out = {"cases": cases, "side_m": args.side_m, "repeats": args.repeats,
           "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu": platform.processor()},
           "versions": {"shapely": shapely.__version__, "geos": shapely.geos_version_string}}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
