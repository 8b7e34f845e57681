"""Replaying an archive as Ray tasks on a real local Ray cluster (`ray start --head`, 2 CPUs, started once for
this module): three tiny flights, one task crashing once and retried, a second run skipping everything, the CLI
through the cluster's address and through Ray Client (ray://) with outputs shipped back through the driver,
and an unreachable address. Skips, saying so, where Ray is not installed."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import run_cli
from helpers.cli import one_error_line
from helpers.net import free_port, interruptible

ray = pytest.importorskip("ray", reason="Ray is not installed (the [cluster] extra: make setup installs it)")

FLIGHT = "test://?frames={n}&size=128x96&seed={seed}&fps=10"


def flights(n=5, seeds=(1, 2, 3)):
    return [FLIGHT.format(n=n, seed=s) for s in seeds]


def _reload_ray_auth() -> None:
    """Ray reads the auth settings once per process; this one imported it before they were set."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A real Ray cluster as an operator starts one (`ray start --head`, 2 CPUs, no dashboard, a 100 MB object
    store), in its own session so that it is stopped by its process group, never by `ray stop` (which would stop
    every Ray on the machine). This process connects to it as a driver; the CLI tests connect to its address."""
    import helpers.archive_faults as faults

    port, client_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("ray") / "ray-start.log"
    # A token of its own (Ray's token authentication, on by default), given to this process and the CLI runs it
    # starts through the environment, as a driver on another machine would be given it.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)
    _reload_ray_auth()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
         f"--ray-client-server-port={client_port}",
         "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
         f"--object-store-memory={100 * 1024 * 1024}", "--disable-usage-stats"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"})  # stop at once, no 30 s node drain
    # The tests' flight runner travels to the workers by value: they need not import the tests' helpers.
    ray.cloudpickle.register_pickle_by_value(faults)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                ray.init(address=address, logging_level="WARNING", log_to_driver=False)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"ray start --head did not come up: {log.read_text()[-2000:]}")
                time.sleep(1)
        yield {"address": address, "client": f"ray://127.0.0.1:{client_port}", **ray.cluster_resources()}
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(faults)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _reload_ray_auth()
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops what it started
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        # `ray start` points later `ray.init()` calls on this machine at its cluster; this one is gone.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def test_three_flights_as_ray_tasks_one_retried_then_all_skipped(tmp_path, cluster):
    import helpers.archive_faults as faults
    from firespotter.archive.api import replay_archive
    from firespotter.runtime.config import Settings

    assert cluster["CPU"] == 2
    out = tmp_path / "archive"
    lines: list[str] = []
    result, written = replay_archive(flights(), out, Settings(), ray=cluster["address"], outputs="shared",
                                     progress=False, worker=faults.fail_once, echo=lines.append)
    assert f"Ray at {cluster['address']}, this process's connection (2 CPUs" in lines[0], lines
    rows = {r["flight_id"]: r for r in result.rows}
    assert len(rows) == 3 and all(r["status"] == "replayed" for r in rows.values()), rows
    retried = [fid for fid, r in rows.items() if r["attempts"] == 2]
    assert len(retried) == 1 and faults.FAIL_ID in retried[0]
    assert (out / f".failed-once-{retried[0]}").is_file()
    for fid, r in rows.items():
        summary = json.loads((out / fid / "summary.json").read_text())
        assert r["frames"] == summary["frames"] == 5 and summary["out"] == str(out / fid)
        assert (out / fid / "report.html").is_file() and (out / fid / "overlay.mp4").is_file()
    index = json.loads(written["json"].read_text())
    assert [r["flight_id"] for r in index["flights"]] == list(rows)
    assert index["totals"]["replayed"] == 3
    # The second run finds every flight done (same inputs, model and config): no task is submitted.
    t0 = time.monotonic()
    again, _ = replay_archive(flights(), out, Settings(), ray=cluster["address"], progress=False,
                              worker=faults.fail_once, echo=lines.append)
    assert {r["status"] for r in again.rows} == {"skipped"}
    assert "0 to replay, 3 done before" in lines[-1]
    assert time.monotonic() - t0 < 10


def test_a_killed_ray_worker_is_retried(tmp_path, cluster):
    import helpers.archive_faults as faults
    from firespotter.archive.api import replay_archive
    from firespotter.runtime.config import Settings

    out = tmp_path / "archive"
    result, _ = replay_archive(flights(3, seeds=(2,)), out, Settings(), ray=cluster["address"], outputs="shared",
                               overlay=False, report=False, progress=False, worker=faults.killed_once,
                               echo=lambda line: None)
    (row,) = result.rows
    assert (out / f".killed-once-{row['flight_id']}").is_file()
    assert row["status"] == "replayed" and row["attempts"] == 2, row


def test_the_cli_on_a_cluster_address_ships_outputs_back_through_the_driver(tmp_path, cluster):
    out = tmp_path / "archive"
    r = run_cli("replay", *flights(4, seeds=(7, 8)), "--out", str(out), "--ray", cluster["address"], timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "outputs back through the driver" in r.stdout and "2 replayed" in r.stdout, r.stdout
    assert "archive: 2/2 flights, 8 frames" in r.stderr  # the progress display (frame counts from a queue actor)
    for r in json.loads((out / "index.json").read_text())["flights"]:
        folder = out / r["flight_id"]
        assert r["status"] == "replayed", r
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["out"] == str(folder)  # not the worker's temporary folder
        assert len(list((folder / "masks").iterdir())) == 4
        assert json.loads((folder / "archive.json").read_text())["input"] == r["input"]


def test_the_cli_through_ray_client(tmp_path, cluster):
    """ray://HOST:10001 (Ray Client, a driver outside the cluster): the same flights, outputs through the driver."""
    out = tmp_path / "archive"
    args = ["replay", *flights(3, seeds=(9,)), "--out", str(out), "--ray", cluster["client"], "--no-overlay",
            "--no-report"]
    r = run_cli(*args, timeout=180)
    if r.returncode == 2 and "Initialization failure from server" in r.stderr:
        # The client server starts one Python worker per client connection; on a loaded 2-core machine that start
        # can outlast its deadline. The refusal itself is the one-line error; a second connection finds it warm.
        r = run_cli(*args, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Ray at {cluster['client']}" in r.stdout and "outputs back through the driver" in r.stdout, r.stdout
    (row,) = json.loads((out / "index.json").read_text())["flights"]
    assert row["status"] == "replayed" and row["frames"] == 3
    assert len(list((out / row["flight_id"] / "masks").iterdir())) == 3


def test_ctrl_c_cancels_the_ray_tasks_and_a_rerun_finishes_the_rest(tmp_path, cluster):
    from conftest import REPO

    out = tmp_path / "archive"
    inputs = [*flights(20, seeds=(1,)), *flights(80, seeds=(2, 3, 4))]  # the stop lands while flights are left
    args = [sys.executable, "-m", "firespotter", "replay", *inputs, "--out", str(out),
            "--ray", cluster["address"], "--outputs", "shared", "--no-overlay", "--no-report"]
    p = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=interruptible)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not list(out.glob("*/archive.json")) and p.poll() is None:
            time.sleep(0.1)
        assert list(out.glob("*/archive.json")), "no flight finished within 90 s"
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (p.returncode, stderr[-2000:])
    assert "Traceback" not in stderr, stderr[-2000:]
    done = {m.parent.name for m in out.glob("*/archive.json")}
    statuses = {r["flight_id"]: r["status"] for r in json.loads((out / "index.json").read_text())["flights"]}
    assert 1 <= len(done) < 4 and {statuses[f] for f in done} == {"replayed"}
    assert set(statuses.values()) == {"replayed", "interrupted"}
    r = run_cli(*args[3:], timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{4 - len(done)} to replay, {len(done)} done before" in r.stdout
    assert {m.parent.name for m in out.glob("*/archive.json")} == set(statuses)


def test_a_flight_asking_for_more_gpus_than_the_cluster_has_is_refused(tmp_path, cluster):
    from firespotter.archive.api import replay_archive
    from firespotter.archive.plan import ArchiveError
    from firespotter.runtime.config import Settings

    with pytest.raises(ArchiveError, match=r"asks for 1 GPU\(s\) but the Ray cluster has 0"):
        replay_archive(flights(2, seeds=(1,)), tmp_path / "o", Settings(), ray="local", flight_gpus=1,
                       progress=False, echo=lambda line: None)
    assert ray.is_initialized()  # the caller's connection is left as it was


def test_an_unreachable_ray_address_is_one_line_and_exit_2(tmp_path):
    r = run_cli("replay", *flights(), "--out", str(tmp_path / "o"), "--ray", "127.0.0.1:9", timeout=60)
    one_error_line(r, "cannot reach the Ray cluster at 127.0.0.1:9", "ray start --head")
    from firespotter.archive.cluster import check_reachable
    from firespotter.archive.plan import ArchiveError

    with pytest.raises(ArchiveError, match="is not a Ray address"):
        check_reachable("not an address")
