"""Wire format v1: messages built by net/wire.py validate against the JSON Schema; bad input is refused
with a message that says where."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.net import fire_result
from firespotter.net import wire
from firespotter.net.gate import FireGate
from firespotter.runtime.types import AlertLevel, FireRegion, Pose


def test_schema_is_valid_json_with_the_three_kinds():
    schema = json.loads(wire.SCHEMA_PATH.read_text())
    assert set(schema["$defs"]) >= {"fire", "state", "ack"}


def test_fire_message_validates_and_round_trips():
    r = fire_result(3, size=128)
    msg = wire.fire_message(r, "uav-1", mask_max_side=64)
    assert wire.validation_errors(msg) == []
    back = wire.loads(wire.dumps(msg))
    assert back == msg
    assert back["v"] == 1 and back["kind"] == "fire" and len(back["id"]) == 32
    assert back["seq"] == 3 and back["drone_id"] == "uav-1" and back["t_capture_ns"] == r.t_wall_ns
    assert back["georef"] == "no_pose" and back["pose"] is None and back["area_m2"] is None
    assert back["model"] == {"id": "test-model", "precision_exec": "fp32", "weight_bits": 32, "simulated": False}
    assert back["latency_ms"] >= 0
    assert len(back["regions"]) == len(r.regions)
    reg = back["regions"][0]
    assert reg["area_px"] == r.regions[0].area_px and reg["geo"] is None and 0 < reg["confidence"]["peak"] <= 1
    mask = wire.decode_mask(back)
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
    # the downscaled mask still covers about the same fraction of the frame
    assert abs(np.count_nonzero(mask) / mask.size - r.fire_fraction) < 0.05


def test_mask_resolution_is_configurable():
    r = fire_result(1, size=128)
    full = wire.fire_message(r, "d", mask_max_side=512)
    assert (full["mask"]["width"], full["mask"]["height"]) == (128, 128)
    assert np.array_equal(wire.decode_mask(full), r.mask)
    assert wire.fire_message(r, "d", mask_max_side=0)["mask"] is None


def test_geo_regions_are_geojson_polygons():
    r = fire_result(2, size=64, pose=Pose(lat=46.5, lon=7.5, alt_agl_m=100.0))
    ring = [(7.5, 46.5), (7.5001, 46.5), (7.5001, 46.5001)]
    for reg in r.regions:
        reg.geo_polygon, reg.area_m2 = ring, 42.0
    msg = wire.fire_message(r, "d")
    assert wire.validation_errors(msg) == []
    geo = msg["regions"][0]["geo"]
    assert geo["type"] == "Polygon" and geo["coordinates"][0][0] == geo["coordinates"][0][-1]
    assert msg["georef"] == "ok" and msg["pose"]["lat"] == 46.5 and msg["area_m2"] == 42.0 * len(r.regions)


def test_state_and_ack_messages_validate():
    s = wire.state_message("uav-1", source_state="stalled", no_frame_s=4.2, fps=0.0, frames=10,
                           drops={"queue": 1}, adapter={"name": "tent", "state": "active"},
                           outbox={"pending": 3, "bytes": 10, "oldest_age_s": 1.5, "dropped": 0, "masks_dropped": 0,
                                   "degraded": None}, transport="zenoh", connected=False, link_error="no route")
    assert wire.validation_errors(s) == []
    f = wire.fire_message(fire_result(0), "uav-1")
    a = wire.ack_message("uav-1", [f], station="gcs")
    assert wire.validation_errors(a) == [] and a["ids"] == [f["id"]] and a["seq"] == 0


def test_strip_mask_keeps_the_id_and_says_so():
    msg = wire.fire_message(fire_result(0), "d")
    small = wire.loads(wire.strip_mask(wire.dumps(msg)))
    assert small["id"] == msg["id"] and small["mask"] is None and small["mask_dropped"] is True
    assert wire.strip_mask(wire.dumps(small)) is None


@pytest.mark.parametrize("mutate, expect", [
    (lambda m: m.pop("id"), "missing key 'id'"),
    (lambda m: m.update(v=2), "message.v"),
    (lambda m: m.update(seq="3"), "message.seq: expected integer"),
    (lambda m: m.update(alert="maybe"), "message.alert"),
    (lambda m: m["regions"][0].update(polygon="x"), "message.regions[0].polygon"),
    (lambda m: m.update(extra=1), "unexpected key 'extra'"),
    (lambda m: m.update(kind="weather"), "message.kind"),
    (lambda m: m["mask"].update(data="not base64!"), "message.mask"),
])
def test_invalid_messages_are_refused_with_the_path(mutate, expect):
    msg = wire.fire_message(fire_result(0), "d")
    mutate(msg)
    with pytest.raises(wire.WireError, match=expect.replace("[", r"\[").replace("]", r"\]")):
        wire.loads(json.dumps(msg))


@pytest.mark.parametrize("payload", [b"", b"\xff\xfe", b"[1,2", b"null", b"[]", b"{}", b'{"kind":"fire"}',
                                     b"[" * 100000, b'{"kind":"state","v":NaN}', b'{"kind":"state","v":1e400}'])
def test_garbage_is_a_wire_error(payload):
    with pytest.raises(wire.WireError):
        wire.loads(payload)


def test_cross_check_with_jsonschema_when_installed():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed")
    schema = wire.load_schema()
    v = jsonschema.Draft202012Validator(schema)
    msgs = [wire.fire_message(fire_result(i), "d") for i in range(3)]
    msgs.append(wire.state_message("d"))
    msgs.append(wire.ack_message("d", msgs[:2], station="gs"))
    for m in msgs:
        assert not list(v.iter_errors(m))
    bad = dict(msgs[0], seq=-5)
    assert list(v.iter_errors(bad)) and wire.validation_errors(bad)


def test_topics():
    assert wire.topic("uav-1", "fire") == "firespotter/uav-1/fire"
    assert wire.parse_topic("firespotter/uav-1/state") == ("uav-1", "state")
    assert wire.parse_topic("firespotter/uav-1/other") is None
    assert wire.parse_topic("x/uav-1/fire") is None
    with pytest.raises(ValueError):
        wire.topic("bad/id", "fire")


def _result_with_area(seq, w, alert=AlertLevel.FIRE):
    r = fire_result(seq, fire=False)
    if w:
        poly = np.array([[0, 0], [w, 0], [w, w], [0, w]], np.int32)
        r.regions = [FireRegion(0, poly, w * w, (0, 0, w, w), (w / 2, w / 2), 0.9, 0.95)]
        r.alert = alert
    else:
        r.regions, r.alert = [], AlertLevel.NONE
    return r


def test_fire_gate_rate_limits_unless_the_fire_changes():
    gate = FireGate(min_interval_ms=1000, change_frac=0.2)
    ms = 1_000_000
    assert gate.admit(_result_with_area(0, 10), now_ns=0)  # first
    assert not gate.admit(_result_with_area(1, 10), now_ns=100 * ms)  # same fire, too soon
    assert not gate.admit(_result_with_area(2, 10), now_ns=200 * ms)
    assert gate.admit(_result_with_area(3, 14), now_ns=300 * ms)  # area +96 %: material change
    assert gate.admit(_result_with_area(4, 14), now_ns=1400 * ms)  # interval passed
    assert gate.admit(_result_with_area(5, 0), now_ns=1500 * ms)  # fire gone: said once
    assert not gate.admit(_result_with_area(6, 0), now_ns=3000 * ms)  # and never repeated
    assert gate.suppressed == 2
    strict = FireGate(min_interval_ms=0, min_alert="fire")
    assert not strict.admit(_result_with_area(0, 10, AlertLevel.SUSPECT), now_ns=0)
