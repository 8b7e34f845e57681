#!/usr/bin/env python3
"""Fleet scale on one machine: N simulated drones publish to one ground station (`firespotter listen`) per transport.

    python bench/fleet.py [--drones 8] [--frames 60] [--mode replay|live] [--fps 10] [--size 128]
                          [--transports zenoh,mqtt] [--json PATH]

Each drone is a separate `firespotter run` process (the onboard daemon) replaying its own synthetic flight
(`test://?seed=i`; `--mode replay`: as fast as it can, the default, to load the ground station; `live`: at
`--fps`) through `--model colorrule` into one Zenoh sink and one MQTT sink, each with its SQLite outbox, every
fire frame a `fire` message (min_interval_ms = 0). One `firespotter listen` process per transport: over Zenoh
the drones connect to it as peers and it acknowledges every message; over MQTT everything goes through a private
mosquitto (QoS 1, the listener's persistent session).

Checked per transport: every fire message a drone stored arrived exactly once after deduplication (the listener
counts unique ids; ids only come from drones, so equal counts mean equal sets), every drone's outbox ended empty.
Reported: unique fire messages per second at the listener (from the first drone's first processed frame to the
last drone's exit, which waits for its outbox to drain), the listener's CPU (seconds, % of one core), duplicates.

JSON: {"zenoh": {"drones", "stored", "received_unique", "duplicates", "lost", "msgs_per_s", "listener_cpu_s",
"listener_cpu_pct", "outbox_pending_end", ...}, "mqtt": {...}, "config": {...}, "machine": {...}}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import Mosquitto, free_port, proc_sample, stop, wait_until  # noqa: E402

SUMMARY = re.compile(r"listen: (\d+) messages, (\d+) fire messages from (\d+) drones, (\d+) duplicates, (\d+) malformed")


def drone_config(path: Path, i: int, args, sinks: dict[str, str], work: Path) -> None:
    tables = "".join(f"""
[[sinks]]
name = "{name}"
{body}
min_interval_ms = 0
mask_max_side = 64
close_timeout_s = 45
outbox = "{work / f'outbox-{name}-{i:02d}.sqlite'}"
""" for name, body in sinks.items())
    path.write_text(f"""
[runtime]
mode = "{args.mode}"
drone_id = "uav-{i:02d}"
deadline_ms = 5000
drain_timeout_s = 60

[source]
uri = "test://?size={args.size}x{args.size}&fps={args.fps}&frames={args.frames}&seed={i}"

[model]
name = "colorrule"
{tables}""", encoding="utf-8")


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def run_fleet(transports: list[str], args, work: Path) -> dict:
    """All drones publish over every transport at once (one daemon, one sink per transport: fewer processes to
    start); one listener process per transport, so each listener's CPU is its own."""
    cli = [sys.executable, "-m", "firespotter"]
    broker = None
    sinks: dict[str, str] = {}
    listeners: dict[str, tuple[subprocess.Popen, Path]] = {}
    drones: list[subprocess.Popen] = []
    try:
        for transport in transports:
            if transport == "mqtt":
                broker = Mosquitto(work / "broker").start()
                sinks["mqtt"] = f'type = "mqtt"\nport = {broker.port}'
                listen_args = ["--transport", "mqtt", "--port", str(broker.port), "--station", "fleet-bench"]
            elif transport == "zenoh":
                endpoint = f"tcp/127.0.0.1:{free_port()}"
                sinks["zenoh"] = (f'type = "zenoh"\nconnect = ["{endpoint}"]\nmulticast_scouting = false\n'
                                  "resend_after_s = 5")
                listen_args = ["--transport", "zenoh", "--listen", endpoint, "--no-multicast"]
            else:
                raise SystemExit(f"--transports: {transport!r} is not zenoh or mqtt")
            err = work / f"listen-{transport}.err"
            listeners[transport] = (subprocess.Popen(cli + ["listen", *listen_args, "--print-every", "3600"], cwd=REPO,
                                                     stdout=subprocess.DEVNULL, stderr=open(err, "w")), err)
        for transport, (proc, err) in listeners.items():
            if not wait_until(lambda: "connecting to" in _text(err) or proc.poll() is not None, 120):
                raise RuntimeError(f"the {transport} listener did not start: {_text(err)[-1000:]}")
            if transport == "mqtt":  # the persistent QoS 1 subscription must exist before the first message
                if not wait_until(lambda: "as firespotter-listen-fleet-bench" in _text(broker.root / "mosquitto.log"),
                                  60):
                    raise RuntimeError("the listener did not connect to mosquitto")
                time.sleep(0.5)
        cpu0 = {t: proc_sample(p.pid)["cpu_s"] for t, (p, _) in listeners.items()}
        t_launch = time.monotonic()
        for i in range(args.drones):
            cfg = work / f"drone-{i:02d}.toml"
            drone_config(cfg, i, args, sinks, work)
            drones.append(subprocess.Popen(cli + ["run", "-c", str(cfg), "--summary-json",
                                                  str(work / f"summary-{i:02d}.json")], cwd=REPO,
                                           stdout=subprocess.DEVNULL, stderr=open(work / f"drone-{i:02d}.err", "w")))
        # The clock starts when the first drone has processed its first frame (not at process start: imports
        # and model loading are not the network's cost) and stops when the last drone has exited, which is once
        # its outbox was drained (every fire message acknowledged) or close_timeout_s passed.
        t_first = None
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and any(d.poll() is None for d in drones):
            if t_first is None and any("ready:" in _text(work / f"drone-{i:02d}.err") for i in range(args.drones)):
                t_first = time.monotonic()
            time.sleep(0.1)
        t_end = time.monotonic()
        t_first = t_first or t_launch
        time.sleep(1.0)  # the last acks in flight
        usage = {t: proc_sample(p.pid) for t, (p, _) in listeners.items()}
    finally:
        for d in drones:
            stop(d, timeout=20)
        for p, _ in listeners.values():
            stop(p, timeout=20)
        if broker is not None:
            broker.stop()
    wall = max(t_end - t_first, 1e-6)
    summaries = [json.loads((work / f"summary-{i:02d}.json").read_text()) for i in range(args.drones)]
    out = {}
    for transport, (proc, err) in listeners.items():
        m = SUMMARY.search(_text(err))
        if m is None:
            raise RuntimeError(f"no summary from the {transport} listener: {_text(err)[-1500:]}")
        messages, unique, n_drones, duplicates, malformed = (int(x) for x in m.groups())
        deliveries = [s["sinks"][transport]["delivery"] for s in summaries]
        stored = sum(d["fire_messages"] for d in deliveries)
        pending = sum((d["outbox"] or {}).get("pending", 0) for d in deliveries)
        cpu = usage[transport]["cpu_s"] - cpu0[transport]
        out[transport] = {
            "drones": args.drones, "drones_seen": n_drones, "drone_exit_codes": [d.returncode for d in drones],
            "stored": stored, "received_unique": unique, "duplicates": duplicates, "malformed": malformed,
            "lost": stored - unique, "acked": sum(d["acked"] for d in deliveries), "outbox_pending_end": pending,
            "messages_total": messages, "wall_s": round(wall, 2), "msgs_per_s": round(unique / wall, 1),
            "listener_cpu_s": round(cpu, 2), "listener_cpu_pct": round(100.0 * cpu / wall, 1),
            "listener_rss_mb": round(usage[transport]["rss_mb"], 1),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drones", type=int, default=8)
    ap.add_argument("--frames", type=int, default=60, help="frames per drone's flight")
    ap.add_argument("--fps", type=float, default=10.0, help="live mode: the cameras' rate")
    ap.add_argument("--mode", choices=["replay", "live"], default="replay",
                    help="replay: each drone publishes as fast as it can (load on the listener); live: at --fps")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--transports", default="zenoh,mqtt")
    ap.add_argument("--timeout", type=float, default=300.0, help="bound on each transport's run")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out: dict = {"config": {"drones": args.drones, "frames": args.frames, "fps": args.fps, "size": args.size,
                            "mode": args.mode, "model": "colorrule"}}
    with tempfile.TemporaryDirectory(prefix="firespotter-fleet-") as tmp:
        out.update(run_fleet([t.strip() for t in args.transports.split(",") if t.strip()], args, Path(tmp)))
    print(f"{'transport':<9} {'drones':>6} {'stored':>7} {'unique':>7} {'dups':>5} {'lost':>5} {'msgs/s':>7} "
          f"{'listener cpu':>13} {'outbox left':>11}")
    for t in ("zenoh", "mqtt"):
        if t in out:
            r = out[t]
            print(f"{t:<9} {r['drones']:>6} {r['stored']:>7} {r['received_unique']:>7} {r['duplicates']:>5} "
                  f"{r['lost']:>5} {r['msgs_per_s']:>7} {r['listener_cpu_pct']:>11} % {r['outbox_pending_end']:>11}")
    out["machine"] = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                      "loadavg": os.getloadavg()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    ok = all(out[t]["lost"] == 0 and out[t]["outbox_pending_end"] == 0 for t in ("zenoh", "mqtt") if t in out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
