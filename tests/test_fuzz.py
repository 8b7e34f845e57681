"""Property-based fuzzing (hypothesis) of everything that reads outside input: the TOML config, the wire
format as a ground station receives it, source URIs, SRT and CSV telemetry. The property each time: any input
gives a result or the component's own clear error (ConfigError, WireError, SourceError, TelemetryError), never
another exception. Derandomized with modest example counts so CI is stable and quick; `FIRESPOTTER_FUZZ=N`
multiplies the counts for a longer local run."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install -e '.[dev]')")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import REPO  # noqa: E402
from helpers.net import fire_result  # noqa: E402
from firespotter.net import wire  # noqa: E402
from firespotter.runtime.errors import ConfigError, SourceError  # noqa: E402
from firespotter.runtime.types import Pose  # noqa: E402

SCALE = max(1, int(os.environ.get("FIRESPOTTER_FUZZ", "1")))


def fuzz(n: int):
    return settings(max_examples=n * SCALE, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


_TMP = Path(tempfile.mkdtemp(prefix="firespotter-fuzz-"))


def _file(name: str, text: str) -> Path:
    p = _TMP / name
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    return p


# --- config ---------------------------------------------------------------------------------------------------

SECTIONS = {
    "runtime": ["mode", "drone_id", "deadline_ms", "queue_size", "sink_queue_size", "drain_timeout_s"],
    "source": ["uri", "source_id", "options"],
    "model": ["name", "backend", "precision", "device", "threshold", "options"],
    "post": ["min_area_px", "suspect_threshold"],
    "metrics": ["enabled", "address", "port"],
    "daemon": ["stall_s", "reconnect_grace_s", "status_interval_s", "thermal_zones", "throttle_c"],
    "outbox": ["dir", "max_messages", "max_mb", "synchronous"],
    "camera": ["hfov_deg", "width", "height"],
    "telemetry": ["source", "path", "time_base"],
    "adapt": ["name"],
    "typo": ["x"],
}

scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["live", "replay", "test://", "colorrule", "auto", "fp16", "normal", "mqtt", "zenoh", "files",
                     "127.0.0.1", "srt", "video"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(min_size=1, max_size=8), inner,
                                                                         max_size=3)), max_leaves=6)


def toml_key(k: str) -> str:
    return json.dumps(k)  # a quoted key is always valid TOML


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


@st.composite
def config_docs(draw) -> str:
    lines = []
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=4, unique=True)):
        lines.append(f"[{section}]")
        keys = SECTIONS[section] + ["bogus"]
        for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
            lines.append(f"{key} = {toml_value(draw(values))}")
    for _ in range(draw(st.integers(0, 2))):
        lines.append("[[sinks]]")
        lines.append(f"type = {toml_value(draw(st.sampled_from(['files', 'mqtt', 'zenoh', 'mavlink', 'nope'])))}")
        for key in draw(st.lists(st.sampled_from(["dir", "port", "host", "min_interval_ms", "window", "name",
                                                  "drone_id", "outbox_max_mb"]), max_size=3, unique=True)):
            lines.append(f"{key} = {toml_value(draw(values))}")
    return "\n".join(lines) + "\n"


def _load(text: str):
    from firespotter.runtime.config import load_settings

    path = _file("c.toml", text)
    try:
        return load_settings(path)
    except ConfigError as exc:
        assert str(exc) and "c.toml" in str(exc) or "does not exist" in str(exc), str(exc)
        return exc


@fuzz(50)
@given(config_docs())
def test_config_structured_documents_give_settings_or_a_config_error(text):
    _load(text)


_EXAMPLE = (REPO / "deploy" / "configs" / "ci.toml").read_text()


@fuzz(60)
@given(st.one_of(st.text(max_size=200),
                 st.tuples(st.integers(0, len(_EXAMPLE)), st.integers(0, 40), st.text(max_size=10)).map(
                     lambda t: _EXAMPLE[: t[0]] + t[2] + _EXAMPLE[t[0] + t[1]:])))
def test_config_any_text_gives_settings_or_a_config_error(text):
    _load(text)


# --- wire format: what a ground station receives ---------------------------------------------------------------

_POSE = Pose(lat=46.0, lon=7.0, alt_agl_m=100.0, pitch_deg=-90.0, hfov_deg=80.0)


def _fire_msg() -> dict:
    r = fire_result(3, size=64, pose=_POSE)  # georeferenced by the geo processor
    return wire.fire_message(r, "uav-1", mask_max_side=32)


_VALID = {"fire": _fire_msg(), "state": wire.state_message("uav-1", source_state="streaming", fps=1.0, frames=3,
                                                           transport="mqtt", connected=True)}
_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12),
                    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated_messages(draw) -> bytes:
    kind = draw(st.sampled_from(sorted(_VALID)))
    msg = json.loads(json.dumps(_VALID[kind]))
    paths = [p for p in _paths(msg) if p]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        parent = msg
        try:
            for k in path[:-1]:
                parent = parent[k]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(_LEAVES)
        except (KeyError, IndexError, TypeError):
            pass
    return json.dumps(msg, allow_nan=True).encode()


def _ground_station_takes(topic: str, payload: bytes):
    """The listener's own path: decode + validate + fleet map. Only a WireError may come out of it."""
    from firespotter.ground.station import GroundStation

    gs = GroundStation()
    try:
        gs._handle(topic, payload)
    except wire.WireError:
        return
    gs.fleet.geojson()  # an accepted message must not break the fleet map either


@fuzz(100)
@given(st.binary(max_size=300))
def test_wire_any_bytes_give_a_message_or_a_wire_error(payload):
    try:
        msg = wire.loads(payload)
    except wire.WireError:
        return
    assert isinstance(msg, dict) and msg["v"] == 1


@fuzz(60)
@given(mutated_messages())
def test_wire_mutated_messages_are_accepted_whole_or_refused_with_a_wire_error(payload):
    try:
        msg = wire.loads(payload)
    except wire.WireError:
        msg = None
    if msg is not None:
        wire.dumps(msg)  # what was accepted can be re-encoded (no NaN slipped through)
    kind = json.loads(payload).get("kind") if isinstance(json.loads(payload), dict) else "fire"
    _ground_station_takes(f"firespotter/uav-1/{kind if kind in ('fire', 'state') else 'fire'}", payload)


# --- source URIs --------------------------------------------------------------------------------------------------


@fuzz(150)
@given(st.one_of(
    st.text(max_size=60),
    st.text(alphabet="~/[]:@?&=%.x1 ", max_size=30),
    st.builds(lambda s, rest: f"{s}://{rest}", st.sampled_from(["test", "rtp", "rtsp", "file", "dir", "v4l2", "gst",
                                                                  "csi", "", "x y"]), st.text(max_size=40)),
    st.builds(lambda k, v: f"test://?{k}={v}", st.sampled_from(["size", "frames", "fps", "seed", "shift", "loop",
                                                               "stall_after", "shift_strength"]),
              st.text(max_size=12)),
))
@example("rtp://[::1:5000")  # found: ValueError Invalid IPv6 URL
@example("~nosuchuser/flight.mp4")  # found: RuntimeError Could not determine home directory
def test_any_source_uri_parses_or_gives_a_source_error(raw):
    from firespotter.runtime.sources import float_param, int_param, parse_uri, size_param

    try:
        uri = parse_uri(raw)
    except SourceError as exc:
        assert str(exc)
        return
    for fn, args in ((int_param, ("frames", 1)), (float_param, ("fps", 1.0)), (size_param, ("size", (8, 8)))):
        try:
            fn(uri, *args)
        except SourceError:
            pass


# --- telemetry ----------------------------------------------------------------------------------------------------

_SRT_BLOCK = ("{n}\n00:00:0{s},{ms} --> 00:00:0{s},{ms2}\n<font size=\"28\">FrameCnt: {n}, DiffTime: 33ms\n"
              "{date} 10:00:0{s}.{us}\n[iso: 100] [latitude: {lat}] [longitude: {lon}] [rel_alt: {alt} abs_alt: 900]"
              " [gb_yaw: {yaw} gb_pitch: {pitch} gb_roll: 0.0] </font>\n")
_num = st.one_of(st.sampled_from(["nan", "inf", "-inf", "1e400", "46.5", "7.25", "-90", "120", "", "1e-400"]),
                 st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**30, 10**30).map(str),
                 st.text(alphabet="0123456789.-e+", max_size=8))


@st.composite
def srt_texts(draw) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=300))
    blocks = []
    for n in range(1, draw(st.integers(1, 3)) + 1):
        blocks.append(_SRT_BLOCK.format(
            n=n, s=draw(st.integers(0, 9)), ms=draw(st.sampled_from(["000", "5", "99999", "033"])),
            ms2=draw(st.sampled_from(["100", "066"])),
            date=draw(st.sampled_from(["2024-07-01", "2024-13-45", "0000-00-00", "9999-12-31", "2024/02/30"])),
            us=draw(st.sampled_from(["000", "5", "123456789"])), lat=draw(_num), lon=draw(_num), alt=draw(_num),
            yaw=draw(_num), pitch=draw(_num)))
    return "\n".join(blocks)


def _finite_pose(p) -> bool:
    return all(math.isfinite(v) for v in (p.lat, p.lon, p.alt_agl_m, p.roll_deg, p.pitch_deg, p.yaw_deg, p.hfov_deg))


@fuzz(60)
@given(srt_texts())
@example(_SRT_BLOCK.format(n=1, s=0, ms="000", ms2="100", date="2024-13-45", us="0", lat="46.1", lon="7.2", alt="90",
                           yaw="0", pitch="-90"))  # found by this test: ValueError month must be in 1..12
def test_srt_telemetry_parses_or_gives_a_telemetry_error(text):
    from firespotter.plugins.post.telemetry import SrtTelemetry, TelemetryError

    path = _file("t.srt", text)
    try:
        tel = SrtTelemetry(path, time_base="video")
    except TelemetryError as exc:
        assert "t.srt" in str(exc) or "telemetry" in str(exc)
        return
    for t_ns in (0, 1_000_000_000, 5_000_000_000):
        pose = tel.pose_at(t_ns)
        assert pose is None or _finite_pose(pose), pose


_CSV_COLS = ["t_s", "t_ns", "time", "lat", "lon", "alt_agl_m", "roll_deg", "pitch_deg", "yaw_deg", "hfov_deg", "x"]


@st.composite
def csv_texts(draw) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=200))
    cols = draw(st.lists(st.sampled_from(_CSV_COLS), min_size=1, max_size=7, unique=True))
    rows = [",".join(cols)]
    for _ in range(draw(st.integers(0, 3))):
        cells = []
        for c in cols:
            if c == "time":
                cells.append(draw(st.sampled_from(["2024-07-01T10:00:00Z", "2024-13-01T00:00:00", "nope", "",
                                                   "0001-01-01T00:00:00+14:00"])))
            else:
                cells.append(draw(_num))
        rows.append(",".join(cells))
    return "\n".join(rows) + "\n"


@fuzz(80)
@given(csv_texts())
@example("t_s,lat,lon,alt_agl_m\ninf,46,7,100\n")  # found by this test: OverflowError
@example("t_s,lat,lon,alt_agl_m\n0,nan,7,100\n1,46,7,100\n")  # found by this test: a NaN pose
def test_csv_telemetry_parses_or_gives_a_telemetry_error(text):
    from firespotter.plugins.post.telemetry import CsvTelemetry, TelemetryError

    path = _file("t.csv", text)
    try:
        tel = CsvTelemetry(path, time_base="video")
    except TelemetryError as exc:
        assert "t.csv" in str(exc) or "telemetry" in str(exc)
        return
    for t_ns in (0, 1_000_000_000):
        pose = tel.pose_at(t_ns)
        assert pose is None or _finite_pose(pose), pose
