"""Helpers the reliability benches share: free ports, bounded waits, a private mosquitto and a GStreamer RTP
sender, each started and stopped by PID (never by name), and /proc sampling of a process."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
GST_LAUNCH = shutil.which("gst-launch-1.0")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
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


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Stop one process we started, by its PID; SIGKILL if it does not go within `timeout`."""
    if proc is None:
        return None
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


class Mosquitto:
    """A private mosquitto on 127.0.0.1 with its config and log in `root`."""

    def __init__(self, root: Path, port: int | None = None, persistence: bool = False):
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed (apt install mosquitto)")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        conf = self.root / "mosquitto.conf"
        # started as root, mosquitto drops to user "mosquitto" unless told otherwise, and could not write here
        conf.write_text("\n".join([f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1",
                                   "allow_anonymous true", f"log_dest file {self.root / 'mosquitto.log'}",
                                   "max_queued_messages 100000", "max_inflight_messages 0"]
                                  + (["persistence true", f"persistence_location {self.root}/", "autosave_interval 1"]
                                     if persistence else [])) + "\n")
        self.conf = conf
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> "Mosquitto":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_until(lambda: port_open(self.port), timeout):
            self.stop()
            raise RuntimeError(f"mosquitto did not listen on {self.port}")
        return self

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None


def rtp_sender(port: int, width: int = 320, height: int = 240, fps: int = 10) -> subprocess.Popen:
    """A separate GStreamer process streaming H.264 over RTP/UDP to 127.0.0.1:port (a drone camera)."""
    if GST_LAUNCH is None:
        raise RuntimeError("gst-launch-1.0 is not installed")
    cmd = (f"{GST_LAUNCH} -q videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
           f"framerate={fps}/1 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! "
           f"rtph264pay config-interval=1 pt=96 ! udpsink host=127.0.0.1 port={port}")
    return subprocess.Popen(cmd.split(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def proc_sample(pid: int | str = "self") -> dict[str, float]:
    """RSS (MB), open descriptors, threads and CPU seconds (user+system) of a process, from /proc."""
    base = Path(f"/proc/{pid}")
    rss_kb = 0
    for line in (base / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
            break
    fields = (base / "stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15 of stat)
    return {"rss_mb": rss_kb / 1024.0, "fds": len(os.listdir(base / "fd")), "threads": len(os.listdir(base / "task")),
            "cpu_s": cpu_s}


def slope_per_10min(ts_s: list[float], values: list[float]) -> float | None:
    """Least-squares slope of values over time, per 10 minutes (None with fewer than 2 points)."""
    n = len(ts_s)
    if n < 2:
        return None
    mt, mv = sum(ts_s) / n, sum(values) / n
    den = sum((t - mt) ** 2 for t in ts_s)
    if den == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in zip(ts_s, values)) / den * 600.0
