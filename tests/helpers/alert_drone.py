"""A drone process for the snapshot/availability tests: the real mqtt or zenoh sink, alert snapshots on, sending
a fire frame (with its RGB image and pose) every --period s until killed. Prints "READY" once connected.

    python tests/helpers/alert_drone.py mqtt --port P --drone uav-s --outbox PATH
    python tests/helpers/alert_drone.py zenoh --endpoint tcp/127.0.0.1:P --drone uav-z --outbox PATH
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.net import fire_result  # noqa: E402

from firespotter.runtime.types import Pose  # noqa: E402

POSE = Pose(lat=46.5200, lon=7.5100, alt_agl_m=120.0, pitch_deg=-90.0, yaw_deg=30.0, hfov_deg=70.0)


def frame(seq: int, size: int):
    """A fire result with the picture it came from: orange flames on green ground."""
    r = fire_result(seq, size=size, seed=seq % 3, pose=POSE)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = (46, 92, 40)
    img[r.mask > 0] = (255, 120, 20)
    return dataclasses.replace(r, image=img)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("transport", choices=["mqtt", "zenoh"])
    ap.add_argument("--port", type=int)
    ap.add_argument("--endpoint")
    ap.add_argument("--drone", default="uav-s")
    ap.add_argument("--outbox", required=True)
    ap.add_argument("--period", type=float, default=0.5)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--snapshot", default="crop")
    args = ap.parse_args()
    common = dict(drone_id=args.drone, min_interval_ms=0, outbox=args.outbox, snapshot=args.snapshot,
                  state_interval_s=0.5, close_timeout_s=0)
    if args.transport == "mqtt":
        from firespotter.plugins.sinks.mqtt import MqttOptions, MqttSink

        sink = MqttSink(MqttOptions(port=args.port, keepalive_s=5, **common), name="mqtt")
    else:
        from firespotter.plugins.sinks.zenoh import ZenohOptions, ZenohSink

        sink = ZenohSink(ZenohOptions(connect=[args.endpoint], multicast_scouting=False, require_subscriber=False,
                                      **common), name="zenoh")
    sink.start({"drone_id": args.drone})
    deadline = time.monotonic() + 20
    while not sink._ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("READY" if sink._ready() else "NOT CONNECTED", flush=True)
    seq = 0
    while True:
        sink.send(frame(seq, args.size))
        seq += 1
        time.sleep(args.period)


if __name__ == "__main__":
    sys.exit(main())
