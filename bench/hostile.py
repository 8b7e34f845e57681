#!/usr/bin/env python3
"""Hostile input against `firespotter listen --http` with default settings (docs/security.md): what each attack
costs the listener, and how long a well-behaved drone waits for its acks meanwhile.

    python bench/hostile.py [--bombs 6] [--polygons 9] [--drones 300] [--json PATH]

A private mosquitto on 127.0.0.1 (started and stopped by PID) and the listener as its own process. Attacks, in
order, each measured as the listener's RSS growth (MB, /proc) and the worst ack latency of a good drone (s):

- bomb: fire messages whose mask PNG declares 20000x20000 pixels (66 kB each), honest and lying about it;
- polygons: 150,000-point polygons (1.2 MB, and 0.7 MB with one-digit coordinates) and 57,000 points of valid
  shape;
- drones: `--drones` fake drones, each a fire (noisy 128 px mask, a fire site somewhere in a 100 km square) and
  a `running: false` state; then the size of `/api/state` and the listener's CPU share over 4 s.

JSON: {"bomb": {"rss_growth_mb", "worst_ack_s"}, "polygons": {...}, "drones": {"state_mb", "drones_kept",
"cpu_share", "worst_ack_s"}, "machine", "versions"}
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import Mosquitto, free_port, proc_sample, stop, wait_until  # noqa: E402

from firespotter import __version__  # noqa: E402
from firespotter.net import wire  # noqa: E402


def png_bomb(w: int, h: int) -> bytes:
    """A 1-bit PNG of w x h zero pixels, a few tens of kB: what a decoder would inflate to w*h bytes."""
    co = zlib.compressobj(9)
    row = b"\x00" * (1 + (w + 7) // 8)
    idat = b"".join(co.compress(row) for _ in range(h)) + co.flush()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def fire(drone: str, seq: int, lat: float = 46.5, lon: float = 7.5, rng=None) -> dict:
    """A valid fire message: one square region with its geo outline, a pose, a 128 px mask."""
    d = 0.0002
    ring = [[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d], [lon - d, lat - d]]
    mask = np.zeros((128, 128), np.uint8)
    mask[40:80, 40:80] = 255
    if rng is not None:
        mask = ((rng.random((128, 128)) > 0.5) * 255).astype(np.uint8)
    return {"v": 1, "kind": "fire", "id": wire.new_id(), "drone_id": drone, "seq": seq, "t_capture_ns": time.time_ns(),
            "source_id": "cam0", "alert": "fire", "source_state": "streaming", "frame": {"width": 128, "height": 128},
            "fire_fraction": 0.1, "fire_score": None,
            "regions": [{"id": 0, "polygon": [[40, 40], [80, 40], [80, 80], [40, 80]], "area_px": 1600,
                         "bbox": [40, 40, 40, 40], "centroid": [60.0, 60.0], "confidence": {"mean": 0.9, "peak": 0.9},
                         "geo": {"type": "Polygon", "coordinates": [[[round(a, 7), round(b, 7)] for a, b in ring]]},
                         "area_m2": 1000.0}],
            "georef": "ok", "pose": {"lat": lat, "lon": lon, "alt_agl_m": 120.0, "roll_deg": 0.0, "pitch_deg": -90.0,
                                     "yaw_deg": 0.0, "hfov_deg": 70.0, "t_ns": time.time_ns()},
            "area_m2": 1000.0, "mask": wire.encode_mask(mask, 128), "mask_dropped": False,
            "model": {"id": "bench", "precision_exec": "fp32", "weight_bits": 32, "simulated": False},
            "latency_ms": 1.0, "drops": {"queue": 0, "deadline": 0}}


class Client:
    def __init__(self, port: int, name: str):
        import paho.mqtt.client as mqtt

        self.acks: dict[str, float] = {}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
        self.c.on_message = lambda c, u, m: [self.acks.setdefault(i, time.monotonic())
                                             for i in json.loads(m.payload)["ids"]]
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def pub(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def ack_s(self, seq: int, timeout: float = 30.0) -> float:
        msg = fire("good", seq)
        t0 = time.monotonic()
        self.pub("firespotter/good/fire", wire.dumps(msg))
        if not wait_until(lambda: msg["id"] in self.acks, timeout):
            return float("inf")
        return self.acks[msg["id"]] - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bombs", type=int, default=6)
    ap.add_argument("--polygons", type=int, default=9)
    ap.add_argument("--drones", type=int, default=300)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out: dict = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                             "cpus": os.cpu_count()}, "firespotter": __version__, "versions": {}}
    with tempfile.TemporaryDirectory(prefix="fs-hostile-") as d:
        broker = Mosquitto(Path(d) / "broker").start()
        http = free_port()
        gs = subprocess.Popen([sys.executable, "-m", "firespotter", "listen", "--transport", "mqtt", "--port",
                               str(broker.port), "--http", str(http), "--print-every", "3600"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
        good, bad = Client(broker.port, "good"), Client(broker.port, "attacker")
        try:
            good.c.subscribe("firespotter/good/ack", 1)
            if not wait_until(lambda: good.ack_s(0, timeout=1.0) < 5, 60):
                raise RuntimeError("the listener does not acknowledge")
            for k in range(3):
                good.ack_s(1 + k)
            urllib.request.urlopen(f"http://127.0.0.1:{http}/api/state", timeout=30).read()
            time.sleep(1.5)

            data = base64.b64encode(png_bomb(20000, 20000)).decode()
            rss = proc_sample(gs.pid)["rss_mb"]
            for k in range(args.bombs):
                m = fire("evil", k)
                side = 20000 if k % 2 else 128  # honest about the size, or lying in the message
                m["mask"] = {"format": "png", "width": side, "height": side, "data": data}
                bad.pub("firespotter/evil/fire", wire.dumps(m))
            out["bomb"] = {"messages": args.bombs, "bytes": len(data),
                           "worst_ack_s": round(max(good.ack_s(10 + k) for k in range(3)), 3),
                           "rss_growth_mb": round(proc_sample(gs.pid)["rss_mb"] - rss, 1)}

            rss = proc_sample(gs.pid)["rss_mb"]
            for k in range(args.polygons):
                m = fire("evil", 100 + k)
                if k % 3 == 0:
                    m["regions"][0]["polygon"] = [[i % 128, (i * 7) % 128] for i in range(150_000)]
                elif k % 3 == 1:
                    m["regions"][0]["polygon"] = [[i % 10, (i * 7) % 10] for i in range(150_000)]
                else:
                    m["regions"] = [dict(m["regions"][0], id=r, polygon=[[i % 128, i % 97] for i in range(4096)])
                                    for r in range(14)]
                bad.pub("firespotter/evil/fire", wire.dumps(m))
            out["polygons"] = {"messages": args.polygons,
                               "worst_ack_s": round(max(good.ack_s(20 + k) for k in range(3)), 3),
                               "rss_growth_mb": round(proc_sample(gs.pid)["rss_mb"] - rss, 1)}

            rss = proc_sample(gs.pid)["rss_mb"]
            rng = np.random.default_rng(0)
            for k in range(args.drones):
                drone = f"fake-{k:04d}"
                bad.pub(wire.topic(drone, "fire"), wire.dumps(fire(drone, k, 46.0 + rng.uniform(-0.5, 0.5),
                                                                  7.0 + rng.uniform(-0.5, 0.5), rng)))
                bad.pub(wire.topic(drone, "state"), wire.dumps(wire.state_message(drone, running=False)))
            worst = max(good.ack_s(30 + k) for k in range(3))
            time.sleep(2.5)
            c0, t0 = proc_sample(gs.pid)["cpu_s"], time.monotonic()
            time.sleep(4.0)
            cpu = (proc_sample(gs.pid)["cpu_s"] - c0) / (time.monotonic() - t0)
            body = urllib.request.urlopen(f"http://127.0.0.1:{http}/api/state", timeout=30).read()
            out["drones"] = {"fake_drones": args.drones, "worst_ack_s": round(worst, 3),
                             "state_mb": round(len(body) / 1e6, 2),
                             "drones_kept": json.loads(body)["counters"]["drones"], "cpu_share": round(cpu, 3),
                             "rss_growth_mb": round(proc_sample(gs.pid)["rss_mb"] - rss, 1)}
        finally:
            for c in (good, bad):
                c.c.loop_stop()
                c.c.disconnect()
            stop(gs)
            broker.stop()
    print(f"{'attack':<10}{'RSS +MB':>10}{'worst ack s':>13}  other")
    for name in ("bomb", "polygons", "drones"):
        r = out[name]
        other = (f"/api/state {r['state_mb']} MB, {r['drones_kept']} drones kept, CPU {r['cpu_share']:.0%} of a core"
                 if name == "drones" else f"{r['messages']} messages")
        print(f"{name:<10}{r['rss_growth_mb']:>10}{r['worst_ack_s']:>13}  {other}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
