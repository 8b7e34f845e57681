"""Geo-referencing: the projection (nadir and oblique, checked against hand computations), poses matched
to frames by time, and the telemetry readers (SRT sidecar replay, CSV, MAVLink over UDP)."""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest

from conftest import FakeSegmenter, ListSource, RecordingSink, frames_with_fire
from helpers.net import fire_result, free_port, georeferenced, wait_until
from firespotter.runtime import geo
from firespotter.runtime.types import FireRegion, Pose

LAT0, LON0 = 46.5, 7.5


def _dist_m(a, b):
    """Independent check: distance between two (lon, lat) points through WGS84 radii at their mid-latitude."""
    a_ = 6378137.0
    e2 = 0.00669437999014
    lat = math.radians((a[1] + b[1]) / 2)
    m = a_ * (1 - e2) / (1 - e2 * math.sin(lat) ** 2) ** 1.5
    n = a_ / math.sqrt(1 - e2 * math.sin(lat) ** 2)
    dn = math.radians(b[1] - a[1]) * m
    de = math.radians(b[0] - a[0]) * n * math.cos(lat)
    return math.hypot(dn, de), dn, de


def test_nadir_90_degree_camera_at_100m_sees_a_200m_square():
    cam = geo.Camera.from_hfov(1000, 1000, 90.0)
    pose = Pose(lat=LAT0, lon=LON0, alt_agl_m=100.0, pitch_deg=-90.0, yaw_deg=0.0, roll_deg=0.0)
    corners = np.array([[0, 0], [1000, 0], [1000, 1000], [0, 1000]], float)
    ring, area, ok = geo.project_polygon(corners, pose, cam)
    assert ok
    sides = [_dist_m(ring[i], ring[(i + 1) % 4])[0] for i in range(4)]
    assert all(abs(s - 200.0) < 0.5 for s in sides), sides
    assert all(abs(_dist_m(ring[i], ring[(i + 2) % 4])[0] - 200 * math.sqrt(2)) < 0.5 for i in range(2))
    assert abs(area - 40_000.0) < 100.0
    # orientation: image top-left is north-west of the drone
    _, dn, de = _dist_m((LON0, LAT0), ring[0])
    assert abs(dn - 100) < 0.5 and abs(de + 100) < 0.5
    # the image centre is straight below
    (centre,), _, _ = geo.project_polygon(np.array([[500, 500]]), pose, cam)
    assert _dist_m((LON0, LAT0), centre)[0] < 0.01


def test_oblique_camera_matches_a_hand_computed_projection():
    """Pitch -60° (30° from nadir), 90° HFOV and VFOV, 100 m above ground, looking north:
    centre ray 60° below the horizon -> 100/tan 60° = 57.735 m north;
    top-centre ray 15° below the horizon -> 100/tan 15° = 373.205 m north;
    bottom-centre ray 105° below the horizon (past nadir) -> 100/tan 105° = -26.795 m (south);
    right-centre ray: direction (0.5, 1, 0.866) in (N, E, D) -> t = 100/0.866 -> 57.735 m N, 115.470 m E."""
    cam = geo.Camera.from_hfov(1000, 1000, 90.0)
    pose = Pose(lat=LAT0, lon=LON0, alt_agl_m=100.0, pitch_deg=-60.0, yaw_deg=0.0)
    ne, ok = geo.project_to_ground(np.array([[500, 500], [500, 0], [500, 1000], [1000, 500]]), pose, cam)
    assert ok.all()
    expected = [(57.735, 0.0), (373.205, 0.0), (-26.795, 0.0), (57.735, 115.470)]
    assert np.allclose(ne, expected, atol=0.01), ne
    # the same through lon/lat
    ring, _, _ = geo.project_polygon(np.array([[1000, 500]]), pose, cam)
    _, dn, de = _dist_m((LON0, LAT0), ring[0])
    assert abs(dn - 57.735) < 0.05 and abs(de - 115.470) < 0.05
    # yaw 90 (looking east): the centre lands 57.735 m east
    east, _ = geo.project_to_ground(np.array([[500, 500]]), Pose(lat=LAT0, lon=LON0, alt_agl_m=100.0,
                                                                  pitch_deg=-60.0, yaw_deg=90.0), cam)
    assert np.allclose(east, [(0.0, 57.735)], atol=0.01)
    # roll turns the image about the optical axis: the centre stays, the right-centre pixel moves. Camera looking
    # north, 60° down, rolled 20° right-side-down; right-centre ray in body axes (1, 1, 0) -> Rx(20°):
    # (1, cos20, sin20) = (1, 0.9397, 0.3420) -> Ry(-60°): N = 0.5 - 0.8660·0.3420 = 0.2038, E = 0.9397,
    # D = 0.8660 + 0.5·0.3420 = 1.0370 -> t = 100/1.0370 -> 19.652 m N, 90.613 m E
    rolled, _ = geo.project_to_ground(np.array([[500, 500], [1000, 500]]), Pose(lat=LAT0, lon=LON0, alt_agl_m=100.0,
                                                                                pitch_deg=-60.0, roll_deg=20.0), cam)
    assert np.allclose(rolled, [(57.735, 0.0), (19.652, 90.613)], atol=0.01), rolled


def test_above_the_horizon_is_clipped_and_attitude_composition():
    cam = geo.Camera.from_hfov(640, 480, 60.0)
    level = Pose(lat=LAT0, lon=LON0, alt_agl_m=50.0, pitch_deg=0.0)
    ne, ok = geo.project_to_ground(np.array([[320, 0], [320, 480]]), level, cam, max_range_m=1000)
    assert not ok[0] and ok[1]
    assert abs(np.hypot(*ne[0]) - 1000) < 1e-6  # clipped at max range
    assert geo.compose_attitude((0, 0, 30), (0, -90, 0)) == pytest.approx((0, -90, 30), abs=1e-6)
    r, p, y = geo.compose_attitude((0, 10, 45), (0, -45, 0))  # nose up 10° + camera tilted 45° down
    assert (p, y) == pytest.approx((-35, 45), abs=1e-6) and abs(r) < 1e-6


def test_camera_from_config():
    assert geo.Camera.from_config({"hfov_deg": 90}, width=200, height=100).fx == pytest.approx(100)
    c = geo.Camera.from_config({"fx": 1000, "cx": 960, "cy": 540, "width": 1920, "height": 1080}, width=960, height=540)
    assert (c.fx, c.fy, c.cx, c.cy) == (500, 500, 480, 270)
    assert geo.Camera.from_config(None, width=100, height=100, hfov_deg=90).hfov_deg == pytest.approx(90)
    with pytest.raises(ValueError):
        geo.Camera.from_config({}, width=10, height=10)


def test_georeference_regions_area_and_no_pose():
    size = 100
    cam = geo.Camera.from_hfov(size, size, 90.0)  # 2 m per pixel at 100 m
    poly = np.array([[10, 10], [29, 10], [29, 29], [10, 29]], np.int32)  # pixel indices: a 20x20 px square
    region = FireRegion(0, poly, 400, (10, 10, 20, 20), (19.5, 19.5), 0.8, 0.9)
    pose = Pose(lat=LAT0, lon=LON0, alt_agl_m=100.0)
    (out,) = geo.georeference([region], pose, cam)
    assert region.geo_polygon is None, "input untouched"
    assert abs(out.area_m2 - (19 * 2) ** 2) < 2  # outline through pixel centres: 19 px sides
    assert len(out.geo_polygon) == 4
    assert geo.georeference([region], None, cam)[0].geo_polygon is None
    r = fire_result(0, pose=None)  # no pose: the geo processor leaves the result as it is
    assert georeferenced(r).pose is None and all(x.geo_polygon is None for x in r.regions)
    r = fire_result(0, pose=pose)
    assert all(x.geo_polygon for x in r.regions)


def test_pose_track_interpolates_by_time_with_wrapping_yaw():
    s = 1_000_000_000
    track = geo.PoseTrack([Pose(lat=0, lon=0, alt_agl_m=100, yaw_deg=170, t_ns=0),
                           Pose(lat=1e-4, lon=2e-4, alt_agl_m=110, yaw_deg=-170, t_ns=s),
                           Pose(lat=1e-4, lon=2e-4, alt_agl_m=110, yaw_deg=-170, t_ns=10 * s)], max_gap_s=2.0)
    p = track.pose_at(s // 4)
    assert p.lat == pytest.approx(0.25e-4) and p.alt_agl_m == pytest.approx(102.5) and p.yaw_deg == pytest.approx(175)
    assert track.pose_at(s // 2).yaw_deg == pytest.approx(180) or track.pose_at(s // 2).yaw_deg == pytest.approx(-180)
    assert track.pose_at(3 * s) is None  # a 9 s gap: no pose rather than a wrong one
    assert track.pose_at(-2 * s) is None and track.pose_at(10 * s + s // 10) is not None


SRT_NEW = """1
00:00:00,000 --> 00:00:00,033
<font size="28">FrameCnt: 1, DiffTime: 33ms
2024-07-01 12:00:00.000
[iso: 100] [shutter: 1/1000.0] [fnum: 2.8] [ev: 0] [focal_len: 24.00] [latitude: 46.500000] [longitude: 7.500000] [rel_alt: 100.000 abs_alt: 600.000] [gb_yaw: 0.0 gb_pitch: -90.0 gb_roll: 0.0] </font>

2
00:00:01,000 --> 00:00:01,033
<font size="28">FrameCnt: 31, DiffTime: 33ms
2024-07-01 12:00:01.000
[iso: 100] [latitude: 46.500900] [longitude: 7.500000] [rel_alt: 120.000 abs_alt: 620.000] [gb_yaw: 90.0 gb_pitch: -90.0 gb_roll: 0.0] </font>

3
00:00:02,000 --> 00:00:02,033
<font size="28">FrameCnt: 61
2024-07-01 12:00:02.000
[latitude: 46.501800] [longitude: 7.500000] [rel_alt: 120.000 abs_alt: 620.000] [gb_yaw: 90.0 gb_pitch: -90.0 gb_roll: 0.0] </font>
"""

SRT_OLD = """1
00:00:00,000 --> 00:00:01,000
HOME(7.5000,46.5000) 2017.08.05 14:11:51
GPS(7.5001,46.5002,19) BAROMETER:99.8
ISO:100 Shutter:60 EV:0 Fnum:2.2

2
00:00:01,000 --> 00:00:02,000
F/2.8, SS 1000, ISO 100, EV 0, GPS (7.5003, 46.5004, 19), D 10.5m, H 50.0m, H.S 0.0m/s, V.S 0.0m/s
"""


def test_srt_formats_parse():
    from firespotter.plugins.post.telemetry import parse_srt

    new = parse_srt(SRT_NEW)
    assert [s.t_video_ns for s in new] == [0, 1_000_000_000, 2_000_000_000]
    assert (new[1].lat, new[1].lon, new[1].alt_m, new[1].gimbal) == (46.5009, 7.5, 120.0, (0.0, -90.0, 90.0))
    assert new[0].t_wall_ns == 1719835200 * 10**9
    old = parse_srt(SRT_OLD)
    assert (old[0].lon, old[0].lat, old[0].alt_m) == (7.5001, 46.5002, 19.0)
    assert (old[1].lon, old[1].lat, old[1].alt_m) == (7.5003, 46.5004, 50.0)  # H (height above home) wins


def geo_processor(registry, info):
    """The `geo` processor as a pipeline built from a config with [camera] and [telemetry] would get it."""
    from firespotter.runtime.assemble import build_processors
    from firespotter.runtime.config import ProcessorSettings

    return build_processors(registry, [ProcessorSettings(type="geo")], info)


def test_srt_sidecar_replays_with_poses_through_the_pipeline(tmp_path, registry):
    """A replay with [camera] and [telemetry]: every frame gets its interpolated pose and every region a lon/lat
    outline, through the `geo` processor."""
    from firespotter.runtime.pipeline import Pipeline, PipelineOptions

    srt = tmp_path / "DJI_0001.SRT"
    srt.write_text(SRT_NEW)
    images = frames_with_fire(20, size=64)
    sink = RecordingSink()
    info = {"camera": {"hfov_deg": 90.0}, "telemetry": {"source": "srt", "path": str(srt)}, "source_fps": 10.0}
    p = Pipeline(ListSource(images), FakeSegmenter(), [("rec", sink)], PipelineOptions(mode="replay"),
                 processors=geo_processor(registry, info), hook=registry.hook(), info=info)
    summary = p.run()
    assert summary["hook_errors"] == 0
    assert summary["processors"]["geo"] == {"with_pose": 20, "without_pose": 0, "telemetry_errors": 0, "errors": 0}
    assert len(sink.results) == 20 and all(r.pose is not None for r in sink.results)
    r5 = sink.results[5]  # 0.5 s: halfway between the first two samples
    assert r5.pose.lat == pytest.approx(46.50045) and r5.pose.alt_agl_m == pytest.approx(110.0)
    assert r5.pose.yaw_deg == pytest.approx(45.0) and r5.pose.hfov_deg == 90.0
    fire = [r for r in sink.results if r.regions]
    assert fire and all(reg.geo_polygon and reg.area_m2 > 0 for r in fire for reg in r.regions)
    # 10x10 px at 64 px / 90° HFOV / 100 m: 200/64 m per pixel -> about 9²·3.125² ≈ 790 m² (outline via centres)
    a = sink.results[0].regions[0].area_m2
    assert 700 < a < 1000, a


def test_frames_without_a_pose_still_publish_pixel_regions(tmp_path, registry):
    from firespotter.net import wire
    from firespotter.runtime.pipeline import Pipeline, PipelineOptions

    srt = tmp_path / "short.SRT"
    srt.write_text(SRT_NEW.split("\n\n")[0] + "\n")  # one sample at t=0 only
    sink = RecordingSink()
    info = {"camera": {"hfov_deg": 90.0}, "telemetry": {"source": "srt", "path": str(srt)}, "source_fps": 1.0}
    Pipeline(ListSource(frames_with_fire(4, size=32)), FakeSegmenter(), [("rec", sink)],
             PipelineOptions(mode="replay"), processors=geo_processor(registry, info), hook=registry.hook(),
             info=info).run()
    assert sink.results[0].pose is not None and sink.results[2].pose is None  # 2 s later: beyond the track
    msg = wire.fire_message(sink.results[2], "d")
    assert msg["georef"] == "no_pose" and msg["regions"] and all(r["geo"] is None for r in msg["regions"])


def test_csv_telemetry(tmp_path):
    from firespotter.plugins.post.telemetry import CsvTelemetry, Mount, TelemetryError

    f = tmp_path / "flight.csv"
    f.write_text("t_s,latitude,longitude,rel_alt,roll,pitch,yaw\n0,46.5,7.5,100,0,0,0\n2,46.5,7.502,100,0,0,90\n")
    tel = CsvTelemetry(f, attitude="body", mount=Mount(pitch_deg=-90.0), hfov_deg=70)
    p = tel.pose_at(1_000_000_000)
    assert p.lon == pytest.approx(7.501) and p.pitch_deg == pytest.approx(-90) and p.hfov_deg == 70
    bad = tmp_path / "bad.csv"
    bad.write_text("t_s,lat\n0,1\n")
    with pytest.raises(TelemetryError, match="lacks column"):
        CsvTelemetry(bad)


def test_built_in_telemetry_readers_are_registered_and_check_their_keys(tmp_path, registry):
    from firespotter.plugins.post.telemetry import TelemetryError

    assert {"srt", "csv", "mavlink"} <= set(registry.specs("telemetry_readers"))
    f = tmp_path / "flight.csv"
    f.write_text("t_s,lat,lon,alt_agl_m\n0,46.5,7.5,100\n")
    csv_reader = registry.get("telemetry_readers", "csv").factory
    assert len(csv_reader({"path": str(f)}, camera={"hfov_deg": 80.0})) == 1
    with pytest.raises(TelemetryError, match="a csv reader takes no colour"):
        csv_reader({"path": str(f), "colour": "red"}, camera={"hfov_deg": 80.0})


def test_mavlink_telemetry_over_udp():
    pytest.importorskip("pymavlink", reason="pymavlink is not installed")
    os.environ.setdefault("MAVLINK20", "1")
    from pymavlink import mavutil

    from firespotter.plugins.post.telemetry import MavlinkTelemetry

    port = free_port()
    tel = MavlinkTelemetry(f"udpin:127.0.0.1:{port}", hfov_deg=80)
    tx = mavutil.mavlink_connection(f"udpout:127.0.0.1:{port}", source_system=1, dialect="common")
    try:
        def burst():
            tx.mav.global_position_int_send(1000, int(46.5 * 1e7), int(7.5 * 1e7), 600_000, 100_000, 0, 0, 0, 9000)
            tx.mav.attitude_send(1000, 0.0, 0.0, math.radians(90), 0, 0, 0)

        assert wait_until(lambda: (burst(), len(tel) > 0)[1], 5, step=0.1)
        p = tel.pose_at(time.time_ns())
        assert p is not None and p.lat == pytest.approx(46.5) and p.alt_agl_m == pytest.approx(100.0)
        assert p.pitch_deg == pytest.approx(-90.0) and p.yaw_deg == pytest.approx(90.0, abs=1e-3)  # nadir mount
        # a gimbal tilted 30° down, yaw in the vehicle frame: camera yaw = vehicle 90 + gimbal 10
        cy, sy = math.cos(math.radians(10) / 2), math.sin(math.radians(10) / 2)
        cp, sp = math.cos(math.radians(-30) / 2), math.sin(math.radians(-30) / 2)
        q = [cy * cp, -sy * sp, cy * sp, sy * cp]
        tx.mav.gimbal_device_attitude_status_send(0, 0, 1000, 32, q, 0, 0, 0, 0)
        assert wait_until(lambda: (burst(), tel.pose_at(time.time_ns()).pitch_deg > -50)[1], 5, step=0.1)
        p = tel.pose_at(time.time_ns())
        assert p.pitch_deg == pytest.approx(-30, abs=0.01) and p.yaw_deg == pytest.approx(100, abs=0.01)
    finally:
        tel.close()
        tx.close()


def test_camera_and_telemetry_sections_geo_reference_a_replay_from_the_config(tmp_path):
    import json

    from conftest import run_cli

    srt = tmp_path / "DJI_0002.SRT"
    srt.write_text(SRT_NEW)
    cfg = tmp_path / "geo.toml"
    cfg.write_text(f"""
[source]
uri = "test://?frames=6&size=128x96&seed=4&fps=10"
[camera]
hfov_deg = 84
[telemetry]
source = "srt"
path = "{srt}"
[[sinks]]
type = "files"
dir = "{tmp_path / 'out'}"
""")
    r = run_cli("run", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    events = [json.loads(l) for l in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    regions = [reg for e in events for reg in e["regions"]]
    assert regions and all(reg["geo_polygon"] and reg["area_m2"] is not None for reg in regions)
    assert max(reg["area_m2"] for reg in regions) > 10
    # A missing sidecar or a telemetry section without a camera stops start-up with the key named.
    cfg.write_text(cfg.read_text().replace(str(srt), str(tmp_path / "missing.SRT")))
    r = run_cli("run", "-c", str(cfg))
    assert r.returncode == 2 and "telemetry" in r.stderr and "missing.SRT" in r.stderr
    cfg.write_text(f'[source]\nuri = "test://"\n[telemetry]\nsource = "srt"\npath = "{srt}"\n')
    r = run_cli("run", "-c", str(cfg))
    assert r.returncode == 2 and "needs a [camera] section" in r.stderr


def test_geo_is_implied_whenever_a_pose_may_appear():
    """Sinks never georeference: [camera], [telemetry] or a source whose frames carry poses bring the `geo`
    processor in (first), unless a [[processors]] table already names it."""
    from firespotter.runtime.assemble import processor_tables
    from firespotter.runtime.config import parse_settings

    class PosedSource(ListSource):
        carries_poses = True

    plain = parse_settings({"source": {"uri": "test://"}})
    assert processor_tables(plain) == [] and processor_tables(plain, ListSource([])) == []
    assert [t.type for t in processor_tables(plain, PosedSource([]))] == ["geo"]
    camera = parse_settings({"source": {"uri": "test://"}, "camera": {"hfov_deg": 80.0}})
    assert [t.type for t in processor_tables(camera)] == ["geo"]
    named = parse_settings({"source": {"uri": "test://"}, "camera": {"hfov_deg": 80.0},
                            "processors": [{"type": "geo", "camera": {"hfov_deg": 70.0}}]})
    assert len(processor_tables(named, PosedSource([]))) == 1


def test_a_sink_publishes_what_the_processors_made_and_never_georeferences():
    """A result with a pose that no `geo` processor saw goes out as it is: no outlines, georef "failed"."""
    from firespotter.net import wire

    pose = Pose(lat=LAT0, lon=LON0, alt_agl_m=100.0)
    r = fire_result(0, pose=None)
    r.pose = pose  # set after the helper's geo step: nothing georeferenced it
    msg = wire.fire_message(r.freeze(), "d")
    assert msg["georef"] == "failed" and all(reg["geo"] is None for reg in msg["regions"])
    assert all(reg.geo_polygon is None for reg in r.regions)
