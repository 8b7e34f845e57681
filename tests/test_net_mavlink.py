"""The mavlink sink: a pymavlink receiver on 127.0.0.1 decodes STATUSTEXT, FIRE_DETECTION and HEARTBEAT; the
committed dialect module is what mavgen makes of the committed XML."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.net import fire_result, free_port
from firespotter.runtime.types import Pose

pytest.importorskip("pymavlink", reason="pymavlink is not installed (pip install 'firespotter[mavlink]')")
os.environ.setdefault("MAVLINK20", "1")

from pymavlink import mavutil  # noqa: E402

from firespotter.plugins.sinks.mavlink import MavlinkOptions, MavlinkSink  # noqa: E402
from firespotter.plugins.sinks.mavlink_dialect import register  # noqa: E402

DIALECT = Path(__file__).resolve().parents[1] / "firespotter" / "plugins" / "sinks" / "mavlink_dialect"


def _receive(rx, n, timeout=5.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        m = rx.recv_match(type=["STATUSTEXT", "FIRE_DETECTION", "HEARTBEAT"], blocking=True, timeout=0.3)
        if m is not None:
            got.append(m)
    return got


def test_gcs_decodes_statustext_and_fire_detection():
    port = free_port()
    rx = mavutil.mavlink_connection(f"udpin:127.0.0.1:{port}", dialect="common")
    register(rx.mav)
    sink = MavlinkSink(MavlinkOptions(url=f"udpout:127.0.0.1:{port}", heartbeat_s=0.2, source_system=7, min_interval_ms=0),
                       name="mavlink")
    sink.start({"drone_id": "uav-01"})
    try:
        pose = Pose(lat=46.5, lon=7.5, alt_agl_m=100.0, pitch_deg=-90.0, hfov_deg=90.0)
        geo_result = fire_result(4, size=128, pose=pose)
        sink.send(geo_result)
        sink.send(fire_result(5, size=128, pose=None))
        got = _receive(rx, 6)
    finally:
        sink.close()
        rx.close()
    by = {}
    for m in got:
        by.setdefault(m.get_type(), []).append(m)
    assert len(by.get("STATUSTEXT", [])) == 2 and len(by.get("FIRE_DETECTION", [])) == 2, got
    assert by["HEARTBEAT"][0].get_srcSystem() == 7
    st, st2 = by["STATUSTEXT"]
    assert st.severity == 1 and st.text.startswith("FIRE uav-01") and "m2" in st.text
    lat, lon = (float(v) for v in st.text.split()[-1].split(","))
    assert abs(lat - 46.5) < 0.001 and abs(lon - 7.5) < 0.001
    assert "nopose" in st2.text
    fd, fd2 = by["FIRE_DETECTION"]
    assert fd.seq == 4 and fd.alert == 2 and fd.georef == 1 and fd.regions == len(geo_result.regions)
    assert abs(fd.lat / 1e7 - 46.5) < 0.001 and abs(fd.lon / 1e7 - 7.5) < 0.001
    assert fd.lat_min <= fd.lat <= fd.lat_max and fd.lon_min <= fd.lon <= fd.lon_max
    assert fd.area_m2 > 0 and fd.area_px == sum(r.area_px for r in geo_result.regions)
    assert fd.drone_id == "uav-01" and len(bytes(fd.msg_id)) == 16
    assert fd2.georef == 0 and fd2.lat == 2**31 - 1 and math.isnan(fd2.area_m2)


def test_committed_dialect_is_what_mavgen_generates(tmp_path):
    out = tmp_path / "firespotter.py"
    r = subprocess.run([sys.executable, "-m", "pymavlink.tools.mavgen", "--lang=Python3", "--wire-protocol=2.0",
                        "-o", str(out), str(DIALECT / "firespotter.xml")], capture_output=True, text=True, timeout=120)
    if r.returncode != 0 and "No module named pymavlink.tools.mavgen" in r.stderr:
        pytest.skip("mavgen is not runnable as a module here")
    assert r.returncode == 0, r.stderr
    assert out.read_text() == (DIALECT / "firespotter.py").read_text(), "regenerate mavlink_dialect/firespotter.py"


def test_fire_sites_as_camera_pins_a_stock_gcs_draws():
    """QGroundControl draws CAMERA_IMAGE_CAPTURED (capture_result 1) at lat/lon as a map pin: one per fire site,
    at its centre, and no second pin on a fire already pinned."""
    port = free_port()
    rx = mavutil.mavlink_connection(f"udpin:127.0.0.1:{port}", dialect="common")
    sink = MavlinkSink(MavlinkOptions(url=f"udpout:127.0.0.1:{port}", heartbeat_s=0, source_system=7,
                                      min_interval_ms=0, change_frac=0), name="mavlink")
    sink.start({"drone_id": "uav-01"})
    pose = Pose(lat=46.5, lon=7.5, alt_agl_m=100.0, pitch_deg=-90.0, hfov_deg=90.0)
    r = fire_result(4, size=128, pose=pose)
    try:
        sink.send(r)
        sink.send(fire_result(4, size=128, pose=pose))  # the same fire again: no new pins
        pins = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            m = rx.recv_match(type="CAMERA_IMAGE_CAPTURED", blocking=True, timeout=0.3)
            if m is not None:
                pins.append(m)
    finally:
        sink.close()
        rx.close()
    assert len(pins) == len(r.regions) > 0
    for k, (pin, region) in enumerate(zip(pins, r.regions)):
        ring = region.geo_polygon[:-1] if region.geo_polygon[0] == region.geo_polygon[-1] else region.geo_polygon
        lon = sum(p[0] for p in ring) / len(ring)
        lat = sum(p[1] for p in ring) / len(ring)
        north = (pin.lat / 1e7 - lat) * 111_000
        east = (pin.lon / 1e7 - lon) * 111_000 * math.cos(math.radians(lat))
        assert math.hypot(north, east) < 1.0
        assert pin.capture_result == 1 and pin.get_srcSystem() == 7
        assert pin.file_url.startswith(f"FIRE uav-01 #{k + 1}")
