#!/usr/bin/env python3
"""Network output: sustained `fire` messages per second with 512x512 masks over MQTT and Zenoh on loopback,
send latency, and the outbox's own cost; and the same with alert snapshots on (`<transport>+snapshot`).

    python bench/network.py [--messages 300] [--rate 30] [--seconds 5] [--size 512] [--snapshot crop|frame|off]
                            [--json PATH]

For each transport the real sink runs (wire encoding, mask PNG, SQLite outbox, forwarder) against real
components on 127.0.0.1: a private mosquitto (started and stopped by PID) for MQTT; for Zenoh a peer and a
ground station (firespotter's listener, another process) that acknowledges every fire message.

- throughput (`msgs_per_s`): `--messages` fire messages handed to the sink as fast as it takes them; the
  clock stops when the last one is acknowledged (PUBACK / the listener's ack) and left the outbox.
- latency (`p50_ms`, `p99_ms`): `--rate` messages per second for `--seconds`; per message, from `send()`
  (encode + outbox insert) to its acknowledgement.
- outbox (`insert_ms`, `ack_ms`): median cost of one put and one ack of a 512x512 fire message (WAL,
  synchronous=NORMAL), measured alone; `outbox_full` the same with synchronous=FULL (what the drone configs
  use: an fsync per commit, so the last messages survive a power loss), and `full_vs_normal` the ratio of the
  medians measured in the same run.
- auth (`sign_ms`, `verify_ms`): Ed25519 signing and verification of one such message (docs/security.md).

- snapshots (`--snapshot`, default crop): the runs again with the sink's `snapshot` option, so every message
  also carries a JPEG of the frame or of a crop around the fires (the frames have a textured RGB image);
  `snapshot_bytes` is the median JPEG size.

JSON: {"mqtt": {"msgs_per_s", "p50_ms", "p99_ms", ...}, "zenoh": {...}, "mqtt+snapshot": {...},
       "zenoh+snapshot": {...}, "outbox": {"insert_ms", "ack_ms"}, "outbox_full": {...},
       "full_vs_normal": {"insert", "ack"}, "auth": {"sign_ms", "verify_ms"}, ...}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from firespotter import __version__  # noqa: E402
from firespotter.net import wire  # noqa: E402
from firespotter.net.outbox import Outbox  # noqa: E402
from firespotter.runtime.post import PostParams, postprocess  # noqa: E402
from firespotter.runtime.types import PrecisionLabel, Result, SourceState  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_results(size: int, n: int = 16) -> list[Result]:
    """Realistic frames: a few irregular fire blobs per frame, real post-processing (outside the timing)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        prob = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(2, 5))):
            c = (int(rng.integers(size // 8, size * 7 // 8)), int(rng.integers(size // 8, size * 7 // 8)))
            axes = (int(rng.integers(size // 40 + 2, size // 8)), int(rng.integers(size // 40 + 2, size // 8)))
            cv2.ellipse(prob, c, axes, float(rng.uniform(0, 180)), 0, 360, 0.9, -1)
        noise = (rng.random((size, size)) > 0.995).astype(np.float32) * 0.9  # sparse speckle: a realistic PNG
        prob = np.maximum(prob, cv2.dilate(noise, np.ones((3, 3), np.uint8)))
        _, mask, regions, alert, _ = postprocess(prob, size, size, PostParams(max_regions=16))
        # the frame: textured ground (JPEG has to work for it, as on a real camera) with the fires painted in
        image = cv2.GaussianBlur(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), (5, 5), 0) // 2
        image[..., 1] += 60
        image[mask > 0] = (250, 120, 30)
        out.append(Result(seq=i, source_id="bench", t_capture_ns=0, t_wall_ns=0, mask=mask, regions=regions, alert=alert,
                          source_state=SourceState.STREAMING, model_id="bench", precision=PrecisionLabel(),
                          timings_ms={}, drops={}, image=image))
    return out


def _send(sink, results, i: int) -> str:
    r = results[i % len(results)]
    r.seq = i
    r.t_capture_ns = time.monotonic_ns()
    r.t_wall_ns = time.time_ns()
    sink.send(r)
    return sink.last_fire_id


def run_transport(sink, results, messages: int, rate: float, seconds: float) -> dict:
    acked_at: dict[str, int] = {}
    sink.forwarder.ack_listeners.append(lambda ids: [acked_at.setdefault(i, time.perf_counter_ns()) for i in ids])
    # warm-up: connections, first PNG, SQLite pages
    for i in range(5):
        _send(sink, results, i)
    _wait_empty(sink, 20)

    # throughput
    t0 = time.perf_counter()
    for i in range(messages):
        _send(sink, results, 10_000 + i)
    if not _wait_empty(sink, 120):
        raise RuntimeError(f"{sink.transport}: {sink.outbox.pending()} messages never acknowledged")
    elapsed = time.perf_counter() - t0

    # latency at a fixed offered rate
    sent_at: dict[str, int] = {}
    period = 1.0 / rate
    due = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        due += period
        t = time.perf_counter_ns()
        msg_id = _send(sink, results, 20_000 + i)
        sent_at[msg_id] = t
    _wait_empty(sink, 60)
    lat = sorted((acked_at[i] - t) / 1e6 for i, t in sent_at.items() if i in acked_at)
    return {
        "msgs_per_s": round(messages / elapsed, 1),
        "p50_ms": round(_pct(lat, 50), 2),
        "p99_ms": round(_pct(lat, 99), 2),
        "max_ms": round(lat[-1], 2) if lat else None,
        "latency_messages": len(lat),
        "latency_rate_per_s": rate,
        "throughput_messages": messages,
        "resent": sink.forwarder.resent,
        "lost": n - len(lat),
    }


def _pct(values, p):
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def _wait_empty(sink, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sink.outbox.pending() == 0:
            return True
        time.sleep(0.002)
    return False


LISTENER = textwrap.dedent("""
    import sys, threading, signal
    from firespotter.ground.fleet import FleetMap
    from firespotter.ground.station import GroundStation
    from firespotter.ground.transports import MqttListener, ZenohListener
    gs = GroundStation("bench", FleetMap())
    if sys.argv[1] == "zenoh":
        conn = ZenohListener(gs, "peer", [sys.argv[2]], [], False, None)
    else:
        conn = MqttListener(gs, "127.0.0.1", int(sys.argv[2]), "bench-listener", None, None, False, None, True)
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    stop.wait(600)
    conn.close()
""")


def _stop(proc) -> None:
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def bench_mqtt(tmp: Path, results, args, extra: dict | None = None, tag: str = "mqtt") -> dict:
    from firespotter.plugins.sinks.mqtt import MqttOptions, MqttSink

    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        return {"skipped": "mosquitto not installed"}
    port = free_port()
    import getpass

    conf = tmp / "mosquitto.conf"
    conf.write_text(f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n")
    broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    listener = sink = None
    try:
        _wait_port(port)
        listener = subprocess.Popen([sys.executable, "-c", LISTENER, "mqtt", str(port)], stdout=subprocess.PIPE, text=True,
                                    cwd=REPO)
        listener.stdout.readline()
        sink = MqttSink(MqttOptions(port=port, min_interval_ms=0, mask_max_side=args.size, window=64,
                                    outbox=tmp / f"{tag}.sqlite", state_interval_s=1.0, close_timeout_s=0,
                                    **(extra or {})), name="mqtt")
        sink.start({"drone_id": "bench"})
        return run_transport(sink, results, args.messages, args.rate, args.seconds)
    finally:
        if sink is not None:
            sink.close()
        _stop(listener)
        _stop(broker)


def bench_zenoh(tmp: Path, results, args, extra: dict | None = None, tag: str = "zenoh") -> dict:
    from firespotter.plugins.sinks.zenoh import ZenohOptions, ZenohSink

    endpoint = f"tcp/127.0.0.1:{free_port()}"
    sink = ZenohSink(ZenohOptions(listen=[endpoint], multicast_scouting=False, min_interval_ms=0, window=64,
                                  mask_max_side=args.size, outbox=tmp / f"{tag}.sqlite", close_timeout_s=0,
                                  **(extra or {})), name="zenoh")
    sink.start({"drone_id": "bench"})
    listener = subprocess.Popen([sys.executable, "-c", LISTENER, "zenoh", endpoint], stdout=subprocess.PIPE, text=True,
                                cwd=REPO)
    try:
        listener.stdout.readline()
        deadline = time.monotonic() + 20
        while not sink._ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        return run_transport(sink, results, args.messages, args.rate, args.seconds)
    finally:
        sink.close()
        _stop(listener)


def _wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def bench_outbox(tmp: Path, results, n: int, synchronous: str = "normal") -> dict:
    ob = Outbox(tmp / f"outbox-bench-{synchronous}.sqlite", max_messages=100_000, max_bytes=1 << 30,
                synchronous=synchronous)
    msgs = []
    for i in range(n):
        r = results[i % len(results)]
        r.seq = i
        m = wire.fire_message(r, "bench", mask_max_side=512)
        msgs.append((m["id"], wire.dumps(m)))
    ins, ack = [], []
    for mid, payload in msgs:
        t = time.perf_counter()
        ob.put(mid, "firespotter/bench/fire", payload, seq=0)
        ins.append((time.perf_counter() - t) * 1e3)
    for mid, _ in msgs:
        t = time.perf_counter()
        ob.ack([mid])
        ack.append((time.perf_counter() - t) * 1e3)
    ob.close()
    enc = []
    for i in range(min(n, 50)):
        t = time.perf_counter()
        wire.dumps(wire.fire_message(results[i % len(results)], "bench", mask_max_side=512))
        enc.append((time.perf_counter() - t) * 1e3)
    sizes = [len(p) for _, p in msgs]
    return {"insert_ms": round(statistics.median(ins), 3), "ack_ms": round(statistics.median(ack), 3),
            "insert_p99_ms": round(_pct(sorted(ins), 99), 3), "ack_p99_ms": round(_pct(sorted(ack), 99), 3),
            "encode_ms": round(statistics.median(enc), 3), "message_bytes": int(statistics.median(sizes)),
            "operations": n, "synchronous": synchronous, "journal_mode": "wal"}


def bench_auth(results, n: int = 200) -> dict:
    try:
        from firespotter.net import auth
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError as exc:
        return {"skipped": str(exc)}
    key = Ed25519PrivateKey.generate()
    signer, verifier = auth.Signer("bench", key), auth.Verifier({"bench": key.public_key()}, max_remembered=n + 1)
    payload = wire.dumps(wire.fire_message(results[0], "bench", mask_max_side=512))
    sign, verify = [], []
    for _ in range(n):
        t = time.perf_counter()
        signed = signer.sign(payload)
        sign.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        verifier.check(signed)
        verify.append((time.perf_counter() - t) * 1e3)
    return {"sign_ms": round(statistics.median(sign), 4), "verify_ms": round(statistics.median(verify), 4),
            "message_bytes": len(payload), "algorithm": "ed25519"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=300, help="throughput run: messages sent as fast as possible")
    ap.add_argument("--rate", type=float, default=30.0, help="latency run: offered messages per second")
    ap.add_argument("--seconds", type=float, default=5.0, help="latency run: duration")
    ap.add_argument("--size", type=int, default=512, help="mask side (frames are size x size, masks sent in full)")
    ap.add_argument("--outbox-ops", type=int, default=200)
    ap.add_argument("--transports", default="mqtt,zenoh")
    ap.add_argument("--snapshot", choices=["crop", "frame", "off"], default="crop",
                    help="also run with alert snapshots of this kind (off: skip those runs)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("MAVLINK20", "1")
    results = make_results(args.size)
    out: dict = {"machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
                 "versions": _versions(), "size": [args.size, args.size], "firespotter": __version__,
                 "precision_exec": "fp32", "weight_bits": 32, "simulated": False}
    with tempfile.TemporaryDirectory(prefix="fs-netbench-") as d:
        tmp = Path(d)
        out["outbox"] = bench_outbox(tmp, results, args.outbox_ops)
        out["outbox_full"] = bench_outbox(tmp, results, args.outbox_ops, synchronous="full")
        out["full_vs_normal"] = {k: round(out["outbox_full"][f"{k}_ms"] / max(out["outbox"][f"{k}_ms"], 1e-6), 2)
                                 for k in ("insert", "ack")}
        out["auth"] = bench_auth(results)
        runs = [(n.strip(), n.strip(), None) for n in args.transports.split(",")]
        if args.snapshot != "off":
            runs += [(n, f"{n}+snapshot", {"snapshot": args.snapshot}) for n, _, _ in list(runs)]
        for name, tag, extra in runs:
            fn = {"mqtt": bench_mqtt, "zenoh": bench_zenoh}[name]
            try:
                out[tag] = fn(tmp, results, args, extra, tag)
            except ImportError as exc:
                out[tag] = {"skipped": str(exc)}
        if args.snapshot != "off":
            out["snapshot"] = _snapshot_cost(results, args.snapshot)
    print(f"network output, {args.size}x{args.size} masks, message ~{out['outbox']['message_bytes']} bytes "
          f"(encode {out['outbox']['encode_ms']} ms)")
    if "snapshot" in out:
        sn = out["snapshot"]
        print(f"snapshots ({sn['mode']}): {sn['snapshot_bytes']} bytes JPEG median, encode {sn['encode_ms']} ms")
    print(f"{'transport':<16}{'msgs/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'lost':>6}")
    for name in ("mqtt", "zenoh", "mqtt+snapshot", "zenoh+snapshot"):
        r = out.get(name)
        if not r:
            continue
        if "skipped" in r:
            print(f"{name:<16} skipped: {r['skipped']}")
            continue
        print(f"{name:<16}{r['msgs_per_s']:>10}{r['p50_ms']:>10}{r['p99_ms']:>10}{r['max_ms']:>10}{r['lost']:>6}")
    o = out["outbox"]
    print(f"outbox: insert {o['insert_ms']} ms (p99 {o['insert_p99_ms']}), ack {o['ack_ms']} ms (p99 {o['ack_p99_ms']})")
    f = out["outbox_full"]
    print(f"outbox synchronous=full: insert {f['insert_ms']} ms (p99 {f['insert_p99_ms']}), ack {f['ack_ms']} ms "
          f"(p99 {f['ack_p99_ms']}); full/normal: insert x{out['full_vs_normal']['insert']}, "
          f"ack x{out['full_vs_normal']['ack']}")
    a = out["auth"]
    print("auth: " + (f"skipped ({a['skipped']})" if "skipped" in a else
                      f"Ed25519 sign {a['sign_ms']} ms, verify {a['verify_ms']} ms ({a['message_bytes']} bytes)"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def _snapshot_cost(results, mode: str) -> dict:
    """Median JPEG size and encoding time of one snapshot with the sinks' default caps."""
    from firespotter.net import snapshot

    sizes, times = [], []
    for r in results * 4:
        t = time.perf_counter()
        snap = snapshot.encode(r.image, r.regions, mode)
        times.append((time.perf_counter() - t) * 1e3)
        if snap is not None:
            sizes.append(len(snap["data"]) * 3 // 4)
    return {"mode": mode, "snapshot_bytes": int(statistics.median(sizes)) if sizes else 0,
            "encode_ms": round(statistics.median(times), 3)}


def _versions() -> dict:
    v = {"sqlite": sqlite3.sqlite_version, "opencv": cv2.__version__, "numpy": np.__version__}
    for mod, attr in (("paho.mqtt", "__version__"), ("zenoh", "__version__")):
        try:
            m = __import__(mod, fromlist=["x"])
            v[mod] = getattr(m, attr, "?")
        except ImportError:
            v[mod] = None
    try:
        from importlib.metadata import version

        v["eclipse-zenoh"] = version("eclipse-zenoh")
    except Exception:
        pass
    return v


if __name__ == "__main__":
    sys.exit(main())
