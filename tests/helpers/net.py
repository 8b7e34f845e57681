"""Helpers for the network tests: free ports, a mosquitto broker started and stopped by PID, synthetic results.

Everything listens on 127.0.0.1 only. Every wait is bounded.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np

from firespotter.runtime.post import PostParams, postprocess
from firespotter.runtime.types import PrecisionLabel, Result, SourceState

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """A private mosquitto on 127.0.0.1:port with its own config (and persistence) in `root`."""

    def __init__(self, root: Path, port: int | None = None, persistence: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.root / "mosquitto.conf"
        # mosquitto started as root drops to user "mosquitto" unless told otherwise, and could not write here
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "allow_anonymous true", f"log_dest file {self.root / 'mosquitto.log'}",
                 "max_queued_messages 10000", "max_inflight_messages 0"]
        if persistence:
            lines += ["persistence true", f"persistence_location {self.root}/", "autosave_interval 1"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_until(lambda: port_open(self.port), timeout):
            self.stop()
            raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log()[-500:]}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def log(self) -> str:
        p = self.root / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""


def georeferenced(result: Result, camera: dict | None = None) -> Result:
    """`result` after the `geo` processor, as a pipeline hands it to the sinks (sinks never georeference)."""
    from firespotter.plugins.post.geo import GeoOptions, make_geo

    processor = make_geo(GeoOptions(camera=camera), info={})
    processor.process(result)
    processor.close()
    return result


def fire_result(seq: int, size: int = 128, seed: int | None = None, pose=None, fire: bool = True,
                state: SourceState = SourceState.STREAMING) -> Result:
    """A realistic processed frame: blob-shaped fire regions, real post-processing; with a pose, also the
    `geo` processor's lon/lat outlines."""
    rng = np.random.default_rng(seq if seed is None else seed)
    prob = np.zeros((size, size), np.float32)
    if fire:
        for _ in range(int(rng.integers(1, 4))):
            c = (int(rng.integers(size // 8, size - size // 8)), int(rng.integers(size // 8, size - size // 8)))
            axes = (int(rng.integers(size // 32 + 2, size // 6)), int(rng.integers(size // 32 + 2, size // 6)))
            cv2.ellipse(prob, c, axes, float(rng.uniform(0, 180)), 0, 360, 0.9, -1)
    found = postprocess(prob, size, size, PostParams())
    mask, regions, alert = found.mask, found.regions, found.alert
    now = time.monotonic_ns()
    result = Result(seq=seq, source_id="cam0", t_capture_ns=now, t_wall_ns=time.time_ns(), mask=mask,
                    regions=regions, alert=alert, source_state=state, model_id="test-model",
                    precision=PrecisionLabel(), timings_ms={"infer": 1.0}, drops={"queue": 0, "deadline": 0},
                    pose=pose)
    return result if pose is None else georeferenced(result)


# A Zenoh peer in its own process: argv endpoint, seconds; prints "ready", then every fire payload, one a line.
ZENOH_SUBSCRIBER = textwrap.dedent("""
    import json, sys, time, zenoh
    conf = zenoh.Config()
    conf.insert_json5("mode", '"peer"')
    conf.insert_json5("connect/endpoints", json.dumps([sys.argv[1]]))
    conf.insert_json5("scouting/multicast/enabled", "false")
    s = zenoh.open(conf)
    sub = s.declare_subscriber("firespotter/*/fire", lambda sample: print(sample.payload.to_bytes().decode(), flush=True))
    print("ready", flush=True)
    time.sleep(float(sys.argv[2]))
    s.close()
""")


def kill_process(p: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout` s: a process the test started, by its PID."""
    if p.poll() is None:
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(10)


def start_listen(*args: str, cwd: Path) -> subprocess.Popen:
    """`firespotter listen ARGS` as its own process (text pipes), as an operator starts the ground station."""
    import sys

    return subprocess.Popen([sys.executable, "-m", "firespotter", "listen", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)


def stop_process(p: subprocess.Popen, timeout: float = 15) -> tuple[str, str]:
    """SIGTERM (a clean stop: the exit summary is printed), SIGKILL if it does not end within `timeout`; its output."""
    if p.poll() is None:
        os.kill(p.pid, signal.SIGTERM)
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        return p.communicate(timeout=5)


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    """(status, body) of a GET, error statuses included (a 503 from /readyz is an answer, not an exception)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def interruptible() -> None:
    """Popen preexec_fn: the child takes Ctrl-C as a terminal's foreground job does. A test run started in the
    background by a non-interactive shell (nohup ... &) has SIGINT ignored, and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
