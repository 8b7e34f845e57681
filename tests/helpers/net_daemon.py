"""A stand-in for the onboard daemon's network side: feeds synthetic fire results to a network sink at a rate.

    python tests/helpers/net_daemon.py mqtt|zenoh --count 600 --rate 20 --outbox PATH --progress PATH \
        --drone uav-a [--port P] [--endpoint tcp/127.0.0.1:P]

Resumes after a kill from --progress (the next frame number). Prints "PUT <seq> <id>" for each fire message
stored in the outbox, then "DONE" and, once the outbox is empty, "DRAINED" (or "UNDRAINED <n>" after
--drain-timeout). Drives the real sink classes; only the frames are synthetic.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.net import fire_result  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("transport", choices=["mqtt", "zenoh"])
    ap.add_argument("--count", type=int, default=600)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--outbox", required=True)
    ap.add_argument("--progress", required=True)
    ap.add_argument("--drone", default="uav-a")
    ap.add_argument("--port", type=int)
    ap.add_argument("--endpoint", action="append", default=[])
    ap.add_argument("--drain-timeout", type=float, default=60.0)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()

    common = dict(drone_id=args.drone, min_interval_ms=0, outbox=args.outbox, resend_after_s=3.0, max_backoff_s=5.0,
                  close_timeout_s=0)
    if args.transport == "mqtt":
        from firespotter.plugins.sinks.mqtt import MqttOptions, MqttSink

        sink = MqttSink(MqttOptions(port=args.port, min_backoff_s=0.5, reconnect_max_s=1.0, **common), name="mqtt")
    else:
        from firespotter.plugins.sinks.zenoh import ZenohOptions, ZenohSink

        sink = ZenohSink(ZenohOptions(connect=args.endpoint, multicast_scouting=False, **common), name="zenoh")
    sink.start({"drone_id": args.drone})
    progress = Path(args.progress)
    start = int(progress.read_text()) if progress.exists() else 0
    period = 1.0 / args.rate
    due = time.monotonic()
    for seq in range(start, args.count):
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        due += period
        sink.send(fire_result(seq, size=args.size))
        print(f"PUT {seq} {sink.last_fire_id}", flush=True)
        # Atomic (write, then rename): a SIGKILL between truncating and writing left an empty file behind.
        tmp = progress.with_suffix(".tmp")
        tmp.write_text(str(seq + 1))
        os.replace(tmp, progress)
    print("DONE", flush=True)
    deadline = time.monotonic() + args.drain_timeout
    while sink.outbox.pending() and time.monotonic() < deadline:
        time.sleep(0.1)
    pending = sink.outbox.pending()
    print("DRAINED" if not pending else f"UNDRAINED {pending}", flush=True)
    sink.close()
    return 0 if not pending else 1


if __name__ == "__main__":
    sys.exit(main())
