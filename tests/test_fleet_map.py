"""The fleet fire map on shapely 2: RFC 7946 orientation (outer rings counter-clockwise, holes clockwise) in every
GeoJSON output, overlapping rings of one message add up (no even-odd holes), and the union runs outside the
ground station's lock. Speed: bench/fleet_union.py (300 separate spots)."""

from __future__ import annotations

import math
import threading
import time

import pytest

pytest.importorskip("shapely", reason="shapely not installed (extra `ground`: pip install 'firespotter[ground]')")

from firespotter.ground.fleet import Detection, FleetMap, union_features  # noqa: E402
from firespotter.ground.station import GroundStation  # noqa: E402

LAT, LON = 46.0, 7.0
DLAT, DLON = 1 / 111_200, 1 / (111_320 * math.cos(math.radians(LAT)))  # one metre


def square(east_m: float, north_m: float, side_m: float, clockwise: bool = False) -> list[tuple[float, float]]:
    x0, y0 = LON + east_m * DLON, LAT + north_m * DLAT
    x1, y1 = x0 + side_m * DLON, y0 + side_m * DLAT
    ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return ring[::-1] if clockwise else ring


def signed_area(ring) -> float:
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:])) / 2


def det(i: int, rings, drone: str = "a", t: float | None = None) -> Detection:
    return Detection(time.time() if t is None else t, drone, f"{i:032x}", i, 0, rings)


def annulus_detections() -> list[Detection]:
    # four clockwise 30x10 m strips around a 10x10 m unburnt square: one fire with one hole
    strips = [
        [square(0, 0, 10, True), square(10, 0, 10, True), square(20, 0, 10, True)],
        [square(0, 20, 10, True), square(10, 20, 10, True), square(20, 20, 10, True)],
        [square(0, 10, 10, True)],
        [square(20, 10, 10, True)],
    ]
    return [det(i, rings, drone="ab"[i % 2]) for i, rings in enumerate(strips)]


def check_orientation(features) -> int:
    holes = 0
    for f in features:
        if f["properties"].get("kind") != "fire":
            continue
        outer, *inner = f["geometry"]["coordinates"]
        assert signed_area(outer) > 0, "outer ring must be counter-clockwise (RFC 7946 §3.1.6)"
        for hole in inner:
            assert signed_area(hole) < 0, "holes must be clockwise (RFC 7946 §3.1.6)"
            holes += 1
    return holes


def test_union_follows_rfc7946_orientation_with_a_hole():
    feats = union_features(annulus_detections(), 900)
    assert len(feats) == 1
    assert check_orientation(feats) == 1
    assert abs(feats[0]["properties"]["area_m2"] - 800.0) < 2.0  # 30x30 minus the 10x10 hole
    assert feats[0]["properties"]["drones"] == ["a", "b"] and feats[0]["properties"]["detections"] == 4


def test_every_geojson_output_is_oriented():
    from firespotter.ground.view import GroundView

    fm = FleetMap(window_s=900)
    fm.detections = annulus_detections()
    assert check_orientation(fm.geojson()["features"]) == 1  # --geojson
    gs = GroundStation("gs", FleetMap(window_s=900))
    view = GroundView(gs, station="gs", window_s=900)
    view.history.extend(annulus_detections())
    assert check_orientation(view.firemap()["features"]) == 1  # /export/firemap.geojson
    bands = view.fires_at(time.time())["bands"]
    assert bands and all(check_orientation(b["features"]) == 1 for b in bands)  # the page


def test_overlapping_rings_of_one_message_add_up():
    # two overlapping squares in one message: an even-odd fill would punch out their overlap
    feats = union_features([det(0, [square(0, 0, 20), square(10, 10, 20)])], 900)
    assert len(feats) == 1 and len(feats[0]["geometry"]["coordinates"]) == 1, "no hole where the rings overlap"
    assert abs(feats[0]["properties"]["area_m2"] - 700.0) < 2.0


def test_self_intersecting_ring_is_repaired_not_fatal():
    bowtie = [(LON, LAT), (LON + 10 * DLON, LAT + 10 * DLAT), (LON + 10 * DLON, LAT), (LON, LAT + 10 * DLAT)]
    feats = union_features([det(0, [bowtie])], 900)
    assert feats and sum(f["properties"]["area_m2"] for f in feats) == pytest.approx(50.0, abs=1.0)
    check_orientation(feats)


def test_300_separate_spots_stay_separate():
    dets = [det(i, [square((i % 20) * 100, (i // 20) * 100, 5)]) for i in range(300)]
    feats = union_features(dets, 900)
    assert len(feats) == 300 and all(f["properties"]["detections"] == 1 for f in feats)


def test_union_is_computed_outside_the_station_lock(tmp_path):
    from firespotter.ground.run import run_station

    seen: list[bool] = []

    class Watched(FleetMap):
        def geojson(self):
            free = gs.lock.acquire(blocking=False)
            if free:
                gs.lock.release()
            seen.append(free)
            return super().geojson()

    gs = GroundStation("gs", Watched(window_s=900))
    gs.fleet.detections = annulus_detections()
    gs.map_dirty = True

    class NoTransport:
        def close(self):
            pass

    t = threading.Thread(target=run_station, args=(gs, NoTransport(), "test"),
                         kwargs={"geojson": tmp_path / "map.geojson", "duration": 1.3})
    t.start()
    t.join(10)
    assert seen and all(seen), "the union ran while the station's lock was held"
    assert (tmp_path / "map.geojson").is_file()
