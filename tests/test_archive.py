"""Replaying an archive on local worker processes (`replay A B 'glob' --out DIR --jobs N`): each flight's
outputs equal a single replay's, the index and fire map, skipping what is done, retries, Ctrl-C and a rerun,
and bad input (a glob matching nothing, an unreadable flight among good ones, --jobs 0). Ray: test_archive_ray.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, run_cli
from helpers.cli import one_error_line
from helpers.net import interruptible
from firespotter.archive.plan import ArchiveError, expand_inputs, flight_ids
from test_geo import SRT_NEW

FLIGHT = "test://?frames={n}&size=128x96&seed={seed}&fps=10"


def flights(n_frames=6, seeds=(1, 2, 3)):
    return [FLIGHT.format(n=n_frames, seed=s) for s in seeds]


def _index(out: Path) -> dict:
    return json.loads((out / "index.json").read_text())


def _masks(folder: Path) -> dict[str, bytes]:
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED).tobytes() for p in sorted((folder / "masks").iterdir())}


@pytest.fixture(scope="module")
def geo_config(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfg")
    (d / "flight.SRT").write_text(SRT_NEW)
    cfg = d / "geo.toml"
    cfg.write_text(f'[camera]\nhfov_deg = 84\n[telemetry]\nsource = "srt"\npath = "{d / "flight.SRT"}"\n')
    return cfg


def test_flight_ids_and_globs(tmp_path):
    for day in ("day1", "day2"):
        (tmp_path / "flights" / day).mkdir(parents=True)
        (tmp_path / "flights" / day / "cam0.mp4").write_bytes(b"x")
    (tmp_path / "flights" / "day1" / "cam1.mp4").write_bytes(b"y")
    (tmp_path / "flights" / "day1" / "cam1.mkv").write_bytes(b"z")
    found = expand_inputs([str(tmp_path / "flights/**/*.mp4"), str(tmp_path / "flights/day1/cam1.*")])
    assert [Path(p).relative_to(tmp_path).as_posix() for p in found] == [
        "flights/day1/cam0.mp4", "flights/day1/cam1.mp4", "flights/day2/cam0.mp4", "flights/day1/cam1.mkv"]
    assert flight_ids(found) == ["day1__cam0", "cam1", "day2__cam0", "cam1-2"]
    assert flight_ids(["/a/x.mp4", "/a/x.mkv", "/b/x.mp4"]) == ["a__x", "a__x-2", "b__x"]
    assert flight_ids(["test://?seed=1", "test://?seed=1&frames=3"]) == ["test-seed-1", "test-seed-1-frames-3"]
    (tmp_path / "flights" / "day3" / "images").mkdir(parents=True)  # an image-folder flight
    assert expand_inputs([str(tmp_path / "flights/*/images")]) == [str(tmp_path / "flights/day3/images")]
    assert not any(Path(p).is_dir() for p in expand_inputs([str(tmp_path / "flights/**")]))
    with pytest.raises(ArchiveError, match="no file matches"):
        expand_inputs([str(tmp_path / "nothing/**/*.mp4")])


def test_archive_on_two_local_workers_equals_single_replays_then_skips(tmp_path, geo_config):
    out = tmp_path / "archive"
    r = run_cli("replay", *flights(), "--out", str(out), "--jobs", "2", "-c", str(geo_config))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "3 to replay" in r.stdout and "2 local workers" in r.stdout
    assert "archive: 3/3 flights, 18 frames" in r.stderr  # the progress line off a terminal
    index = _index(out)
    rows = {row["flight_id"]: row for row in index["flights"]}
    assert sorted(rows) == ["test-frames-6-size-128x96-seed-1-fps-10", "test-frames-6-size-128x96-seed-2-fps-10",
                            "test-frames-6-size-128x96-seed-3-fps-10"]
    for fid, row in rows.items():
        folder = out / fid
        summary = json.loads((folder / "summary.json").read_text())
        assert row["status"] == "replayed" and row["attempts"] == 1
        assert row["frames"] == summary["frames"] == 6
        assert row["fire_frames"] == summary["fire_frames"] > 0
        assert row["model_id"] == index["model_id"] and row["precision_exec"] == "fp32"
        assert row["largest_fire_px"] > 0 and row["largest_fire_m2"] > 0 and row["cpu_s"] > 0
        assert 0 <= row["first_fire_s"] <= row["last_fire_s"] <= 0.5
        for name in ("events.jsonl", "report.html", "overlay.mp4", "archive.json"):
            assert (folder / name).is_file(), name
        assert f'href="{fid}/report.html"' in (out / "index.html").read_text()
    # Each flight's outputs are a single replay's, bit for bit.
    single = tmp_path / "single"
    r1 = run_cli("replay", flights()[1], "--out", str(single), "-c", str(geo_config), "--no-overlay")
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert not (single / "index.json").exists()
    folder = out / "test-frames-6-size-128x96-seed-2-fps-10"
    assert _masks(folder) == _masks(single)
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k not in ("t_wall_ns", "latency_ms", "timings_ms")}
                       for line in p.read_text().splitlines()]
    assert strip(folder / "events.jsonl") == strip(single / "events.jsonl")
    # The archive-wide fire map, from the flights' telemetry.
    fc = json.loads((out / "firemap.geojson").read_text())
    fires = [f for f in fc["features"] if f["geometry"]["type"] == "Polygon"]
    assert fires and set(fires[0]["properties"]["flights"]) <= set(rows)
    assert {fl for f in fires for fl in f["properties"]["flights"]} == set(rows)
    kml = ET.parse(out / "firemap.kml").getroot()
    assert len(kml.findall(".//{http://www.opengis.net/kml/2.2}Polygon")) == len(fires)
    # Second run: everything is done for the same inputs, model and config: nothing starts.
    t0 = time.monotonic()
    r2 = run_cli("replay", *flights(), "--out", str(out), "--jobs", "2", "-c", str(geo_config))
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "0 to replay, 3 done before" in r2.stdout and "3 skipped" in r2.stdout
    assert {row["status"] for row in _index(out)["flights"]} == {"skipped"}
    assert time.monotonic() - t0 < 30
    # Another threshold is another config: every flight is replayed again.
    r3 = run_cli("replay", *flights(seeds=(1,)), "--out", str(out), "--jobs", "1", "--threshold", "0.6",
                 "--no-overlay", "-c", str(geo_config))
    assert r3.returncode == 0 and "1 to replay, 0 done before" in r3.stdout, r3.stdout + r3.stderr[-2000:]


def test_a_crashed_flight_is_retried_and_the_others_go_on(tmp_path):
    import helpers.archive_faults as faults
    from firespotter.archive.api import replay_archive
    from firespotter.runtime.config import Settings

    out = tmp_path / "archive"
    settings = Settings().model_copy(deep=True)
    lines: list[str] = []
    result, _ = replay_archive(flights(4, seeds=(1, 2)), out, settings, jobs=2, overlay=False, report=False,
                               progress=False, worker=faults.fail_once, echo=lines.append)
    rows = {r["flight_id"]: r for r in result.rows}
    failed_once = next(fid for fid in rows if faults.FAIL_ID in fid)
    assert (out / f".failed-once-{failed_once}").is_file()
    assert rows[failed_once]["status"] == "replayed" and rows[failed_once]["attempts"] == 2
    assert all(r["status"] == "replayed" for r in rows.values())
    assert json.loads((out / failed_once / "archive.json").read_text())["attempts"] == 2
    # With no retries left the flight is reported as failed and the rest still finish.
    out2 = tmp_path / "archive2"
    result, _ = replay_archive(flights(4, seeds=(1, 2)), out2, settings, jobs=2, overlay=False, report=False,
                               progress=False, worker=faults.fail_once, retries=0, echo=lines.append)
    status = {r["flight_id"]: (r["status"], r["error"]) for r in result.rows}
    assert status[failed_once][0] == "failed" and "injected fault" in status[failed_once][1]
    assert [s for fid, (s, _) in status.items() if fid != failed_once] == ["replayed"]
    assert not (out2 / failed_once / "archive.json").exists()


def test_a_killed_worker_takes_its_flights_down_and_they_are_retried_on_a_fresh_pool(tmp_path):
    import helpers.archive_faults as faults
    from firespotter.archive.api import replay_archive
    from firespotter.runtime.config import Settings

    out = tmp_path / "archive"
    result, _ = replay_archive(flights(4, seeds=(1, 2, 3)), out, Settings(), jobs=2, overlay=False, report=False,
                               progress=False, worker=faults.killed_once, echo=lambda line: None)
    rows = {r["flight_id"]: r for r in result.rows}
    killed = next(fid for fid in rows if faults.FAIL_ID in fid)
    assert (out / f".killed-once-{killed}").is_file()
    assert all(r["status"] == "replayed" for r in rows.values()), rows
    assert rows[killed]["attempts"] == 2
    assert all((out / fid / "archive.json").is_file() for fid in rows)


def test_bad_input(tmp_path):
    # A glob that matches nothing: one line naming it, nothing written.
    r = run_cli("replay", str(tmp_path / "flights/**/*.mp4"), "--out", str(tmp_path / "o1"))
    one_error_line(r, "no file matches", "flights/**/*.mp4", "quote the pattern")
    # --jobs 0
    r = run_cli("replay", *flights(), "--out", str(tmp_path / "o2"), "--jobs", "0")
    one_error_line(r, "--jobs must be at least 1, got 0")
    r = run_cli("replay", *flights(), "--out", str(tmp_path / "o2"), "--outputs", "driver")
    one_error_line(r, "apply to Ray tasks only", "--ray")
    # An unreadable and a corrupt flight among a good one: both reported, the good one finishes.
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out = tmp_path / "o3"
    r = run_cli("replay", str(tmp_path / "missing.mp4"), str(broken), flights(4, seeds=(5,))[0], "--out", str(out),
                "--jobs", "2", "--no-overlay")
    err = one_error_line(r, "2 of 3 flights failed", "missing", "broken", "rerun the same command")
    rows = {row["flight_id"]: row for row in _index(out)["flights"]}
    assert rows["missing"]["status"] == "failed" and "cannot read" in rows["missing"]["error"]
    assert rows["broken"]["status"] == "failed" and rows["broken"]["error"]
    assert rows["broken"]["attempts"] == 1  # bad input is not retried: it would fail the same way
    good = rows["test-frames-4-size-128x96-seed-5-fps-10"]
    assert good["status"] == "replayed" and good["frames"] == 4, err
    assert "failed      missing: cannot read" in r.stdout


def test_ctrl_c_stops_cleanly_and_a_rerun_finishes_the_rest(tmp_path):
    out = tmp_path / "archive"
    seeds = (1, 2, 3, 4)
    # A short first flight, then long ones: the stop lands while flights are left even on a loaded machine.
    inputs = [*flights(20, seeds=seeds[:1]), *flights(80, seeds=seeds[1:])]
    args = [sys.executable, "-m", "firespotter", "replay", *inputs, "--out", str(out),
            "--jobs", "1", "--no-overlay", "--no-report"]
    p = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=interruptible)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(out.glob("*/archive.json")):
            time.sleep(0.1)
        assert list(out.glob("*/archive.json")), "no flight finished within 60 s"
        p.send_signal(signal.SIGINT)  # the driver only: it passes the stop on to its workers
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (p.returncode, stderr[-2000:])
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr[-2000:]
    done = {m.parent.name for m in out.glob("*/archive.json")}
    assert 1 <= len(done) < len(seeds)
    statuses = {r["flight_id"]: r["status"] for r in _index(out)["flights"]}
    assert {statuses[f] for f in done} == {"replayed"}
    assert set(statuses.values()) - {"replayed"} == {"interrupted"}
    r = run_cli(*args[3:])
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{len(seeds) - len(done)} to replay, {len(done)} done before" in r.stdout
    assert {m.parent.name for m in out.glob("*/archive.json")} == set(statuses)


def test_a_bare_ray_flag_means_a_local_ray():
    from firespotter.runtime.cli import _fill_optional_values

    assert _fill_optional_values(["replay", "a", "--out", "o", "--ray"]) == ["replay", "a", "--out", "o", "--ray", "local"]
    assert _fill_optional_values(["replay", "a", "--ray", "--out", "o"]) == ["replay", "a", "--ray", "local", "--out", "o"]
    assert _fill_optional_values(["replay", "a", "--ray", "auto"]) == ["replay", "a", "--ray", "auto"]


@pytest.mark.skipif(not __import__("firespotter.runtime.gst", fromlist=["gst_available"]).gst_available(),
                    reason="GStreamer/PyGObject not installed (make setup): no MP4 to record")
def test_each_flight_reads_its_own_telemetry_sidecar(tmp_path):
    from firespotter.plugins.commands.synth import write_flight

    for k, lat in ((1, "46.5"), (2, "47.5"), (3, None)):
        d = tmp_path / "flights" / f"f{k}"
        write_flight(d, 6, 128, 96, seed=k, video=True)
        if lat:  # f3 has no sidecar: it is replayed without poses
            (d / "flight.SRT").write_text(SRT_NEW.replace("latitude: 46.5", f"latitude: {lat}"))
    cfg = tmp_path / "c.toml"
    cfg.write_text('[camera]\nhfov_deg = 84\n[telemetry]\nsource = "srt"\n')  # no path: each flight's sidecar
    out = tmp_path / "archive"
    r = run_cli("replay", str(tmp_path / "flights/*/flight.mp4"), "--out", str(out), "--jobs", "2", "-c", str(cfg),
                "--no-overlay", "--no-report")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["flight_id"]: row for row in _index(out)["flights"]}
    assert sorted(rows) == ["f1__flight", "f2__flight", "f3__flight"]
    assert rows["f1__flight"]["telemetry"].endswith("f1/flight.SRT") and rows["f3__flight"]["telemetry"] is None
    assert rows["f1__flight"]["geo"] and rows["f2__flight"]["geo"] and not rows["f3__flight"]["geo"]
    fires = json.loads((out / "firemap.geojson").read_text())["features"]
    by_flight = {tuple(f["properties"]["flights"]) for f in fires}
    assert by_flight == {("f1__flight",), ("f2__flight",)}  # a degree of latitude apart: never one polygon
    lats = {f["properties"]["flights"][0]: f["geometry"]["coordinates"][0][0][1] for f in fires}
    assert abs(lats["f1__flight"] - 46.5) < 0.01 and abs(lats["f2__flight"] - 47.5) < 0.01
    # A changed sidecar is a changed input: that flight alone is replayed again.
    (tmp_path / "flights/f2/flight.SRT").write_text(SRT_NEW.replace("latitude: 46.5", "latitude: 48.5"))
    r = run_cli("replay", str(tmp_path / "flights/*/flight.mp4"), "--out", str(out), "--jobs", "2", "-c", str(cfg),
                "--no-overlay", "--no-report")
    assert r.returncode == 0 and "1 to replay, 2 done before" in r.stdout, r.stdout + r.stderr[-2000:]


def test_an_unchanged_file_is_not_hashed_again(tmp_path):
    from firespotter.archive.plan import input_hash, make_plan, write_marker

    video = tmp_path / "f.mp4"
    video.write_bytes(b"a" * 1000)
    out = tmp_path / "out"
    plan = make_plan([str(video)], out, model_id="m", cfg_hash="c")
    (f,) = plan.todo
    assert f.input_hash == input_hash(str(video)) and f.stat[0] == 1000
    (out / f.flight_id).mkdir(parents=True)
    (out / f.flight_id / "summary.json").write_text("{}")
    write_marker(out / f.flight_id, {"input": f.source, "input_hash": f.input_hash, "input_stat": f.stat,
                                     "model_id": "m", "config_hash": "c"})
    assert [g.flight_id for g, _ in make_plan([str(video)], out, model_id="m", cfg_hash="c").done] == ["f"]
    # Same size, same mtime: trusted without reading the file (as rsync and make do).
    st = video.stat()
    video.write_bytes(b"b" * 1000)
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert len(make_plan([str(video)], out, model_id="m", cfg_hash="c").done) == 1
    # A new mtime: hashed again, and the new bytes are a new input.
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert len(make_plan([str(video)], out, model_id="m", cfg_hash="c").todo) == 1
    assert len(make_plan([str(video)], out, model_id="m2", cfg_hash="c").todo) == 1
