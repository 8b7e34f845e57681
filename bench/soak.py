#!/usr/bin/env python3
"""Soak: the whole onboard pipeline for M minutes; does memory creep, do descriptors or threads leak?

    python bench/soak.py --minutes 30 [--sample-s 30] [--model NAME] [--size 512] [--fps 5] \
        [--rtp] [--rtp-restart-s S] [--json PATH]

What runs (in this process, so the sampler sees exactly the daemon's memory):
- the source: a synthetic flight looped forever (`test://?loop=1`, paced at `--fps` in live mode), or with
  `--rtp` a live H.264 `rtp://` stream from a separate `gst-launch-1.0` sender process, optionally killed and
  restarted every `--rtp-restart-s` seconds (a camera that drops out: rebuilds the receiving pipeline);
- the model (default: the project default, fireseg-lite) through its backend;
- a files sink (masks of fire frames + events.jsonl) and an MQTT sink (SQLite outbox, forwarder) to a private
  mosquitto started on a free port, with a `mosquitto_sub` process counting what arrives;
- the daemon's supervisor (status ticks, watchdog logic) and its Prometheus/health HTTP server.

Every `--sample-s` seconds: RSS, open descriptors, threads, CPU seconds, frames, queue depths (frames, post,
each sink), outbox depth. The RSS slope is a least-squares fit over the samples after the warm-up (the first
`--warmup-frac` of the run, at least two samples): allocator pools, ORT arenas and caches fill up first.

JSON: {"minutes", "rss_slope_mb_per_10min", "fds_start", "fds_end", "threads_start", "threads_end",
"rss_start_mb", "rss_end_mb", "frames", "fps", "mqtt_received", "samples": [...], ...}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import (MOSQUITTO_SUB, Mosquitto, free_port, proc_sample, rtp_sender, slope_per_10min,  # noqa: E402
                      stop)

from firespotter import __version__  # noqa: E402


def write_config(path: Path, args, work: Path, broker_port: int, metrics_port: int, uri: str) -> None:
    model = f'[model]\nname = "{args.model}"\n' if args.model else ""
    path.write_text(f"""
[runtime]
mode = "live"
drone_id = "soak"
deadline_ms = 2000
queue_size = 2
drain_timeout_s = 10

[source]
uri = "{uri}"

{model}
[[sinks]]
type = "files"
dir = "{work / 'out'}"
masks = "fire"

[[sinks]]
type = "mqtt"
name = "mqtt"
port = {broker_port}
min_interval_ms = {args.min_interval_ms}
close_timeout_s = 5

[outbox]
dir = "{work / 'outbox'}"

[metrics]
enabled = true
address = "127.0.0.1"
port = {metrics_port}

[daemon]
status_interval_s = 1
""", encoding="utf-8")


def sample(pipeline, t0: float) -> dict:
    s = proc_sample()
    mqtt = next((w.sink for w in pipeline.sinks if w.name == "mqtt"), None)
    outbox = getattr(mqtt, "outbox", None)
    return {
        "t_s": round(time.monotonic() - t0, 1),
        "rss_mb": round(s["rss_mb"], 2), "fds": s["fds"], "threads": s["threads"], "cpu_s": round(s["cpu_s"], 2),
        "frames": pipeline.frames_out, "dropped": pipeline.dropped_queue + pipeline.dropped_deadline,
        "q_frames": len(pipeline.q_frames), "q_post": len(pipeline.q_post),
        "q_sinks": {w.name: len(w.queue) for w in pipeline.sinks},
        "outbox_pending": outbox.pending() if outbox is not None else None,
        "source_state": getattr(getattr(pipeline.source, "state", None), "value", None),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--sample-s", type=float, default=30.0)
    ap.add_argument("--warmup-frac", type=float, default=0.2, help="part of the run left out of the slope fit")
    ap.add_argument("--model", default=None, help="model name (default: the project default)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--min-interval-ms", type=float, default=200.0, help="the MQTT sink's fire message rate limit")
    ap.add_argument("--rtp", action="store_true", help="a live rtp:// stream from a gst-launch sender")
    ap.add_argument("--rtp-restart-s", type=float, default=0.0, help="kill and restart the sender this often")
    ap.add_argument("--broker-outage-s", type=float, default=0.0,
                    help="stop mosquitto this long at the middle of the run (the outbox must lose nothing)")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed at the end")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="firespotter-soak-")
        work = Path(tmp.name)
    else:
        work = args.workdir
        work.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, work)
    finally:
        if tmp is not None:
            tmp.cleanup()


def run(args, work: Path) -> int:
    from firespotter.runtime.assemble import build_pipeline
    from firespotter.runtime.config import load_settings
    from firespotter.runtime.daemon import Supervisor
    from firespotter.runtime.metrics import HealthServer, PipelineMetrics
    from firespotter.runtime.notify import Notifier
    from firespotter.runtime.plugins import get_registry

    # persistence: a broker restarted after an outage still holds the counting subscriber's session
    broker = Mosquitto(work / "broker", persistence=True).start()
    sub = sender = server = supervisor = None
    sender_restarts = 0
    received = work / "received.txt"
    try:
        if MOSQUITTO_SUB:
            sub = subprocess.Popen([MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(broker.port), "-t", "firespotter/+/fire",
                                    "-q", "1", "-c", "-i", "soak-counter", "-F", "%p"], stdout=open(received, "w"), stderr=subprocess.DEVNULL)
        if args.rtp:
            rtp_port = free_port(kind=2)  # SOCK_DGRAM
            sender = rtp_sender(rtp_port, args.size, args.size, int(args.fps))
            uri = f"rtp://127.0.0.1:{rtp_port}?stall_timeout=1&max_backoff=2"
        else:
            uri = f"test://?size={args.size}x{args.size}&fps={args.fps}&loop=1&frames=300"
        cfg = work / "soak.toml"
        write_config(cfg, args, work, broker.port, free_port(), uri)
        settings = load_settings(cfg)
        pipeline = build_pipeline(settings, get_registry(), where=str(cfg))
        metrics = PipelineMetrics(pipeline.describe())
        supervisor = Supervisor(pipeline, settings, Notifier(), metrics, config_path=cfg)
        server = HealthServer(settings.metrics.address, settings.metrics.port, metrics, supervisor.readiness).start()
        metrics.bind_readiness(supervisor.is_ready)
        metrics.bind_outboxes(pipeline.sinks)
        supervisor.start()
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(pipeline.run()), name="soak-pipeline", daemon=True)
        t0 = time.monotonic()
        runner.start()
        samples = [sample(pipeline, t0)]
        print(f"soak: {args.minutes} min, {pipeline.describe().get('model')} on {pipeline.describe().get('backend')}, "
              f"{uri}", flush=True)
        print(f"{'t_s':>7} {'rss_mb':>8} {'fds':>5} {'thr':>4} {'frames':>7} {'q_frm':>5} {'q_post':>6} "
              f"{'outbox':>6} state", flush=True)
        end = t0 + args.minutes * 60.0
        next_sample = t0 + args.sample_s
        next_restart = t0 + args.rtp_restart_s if args.rtp and args.rtp_restart_s > 0 else None
        outage = (t0 + args.minutes * 30.0, t0 + args.minutes * 30.0 + args.broker_outage_s) \
            if args.broker_outage_s > 0 else None
        outage_max_pending = 0
        while time.monotonic() < end and runner.is_alive():
            now = time.monotonic()
            if next_restart is not None and now >= next_restart:
                stop(sender, timeout=5)
                time.sleep(1.0)
                sender = rtp_sender(rtp_port, args.size, args.size, int(args.fps))
                sender_restarts += 1
                next_restart = time.monotonic() + args.rtp_restart_s
            if outage is not None and broker.proc is not None and outage[0] <= now < outage[1]:
                broker.stop()  # SIGTERM: mosquitto saves the counting subscriber's session
                print(f"broker stopped for {args.broker_outage_s:g} s", flush=True)
            elif outage is not None and broker.proc is None and now >= outage[1]:
                broker.start()
                print("broker back", flush=True)
            if outage is not None:
                mq = next((w.sink for w in pipeline.sinks if w.name == "mqtt"), None)
                if mq is not None and mq.outbox is not None:
                    outage_max_pending = max(outage_max_pending, mq.outbox.pending())
            if now >= next_sample:
                s = sample(pipeline, t0)
                samples.append(s)
                print(f"{s['t_s']:7.0f} {s['rss_mb']:8.1f} {s['fds']:5d} {s['threads']:4d} {s['frames']:7d} "
                      f"{s['q_frames']:5d} {s['q_post']:6d} {str(s['outbox_pending']):>6} {s['source_state']}", flush=True)
                next_sample += args.sample_s
            time.sleep(min(0.2, max(0.0, min(next_sample, end) - time.monotonic())))
        last = sample(pipeline, t0)
        if last["t_s"] > samples[-1]["t_s"]:
            samples.append(last)
        pipeline.request_stop()
        runner.join(60)
    finally:
        if supervisor is not None:
            supervisor.stop()
        if server is not None:
            server.stop()
        stop(sender)
        time.sleep(1.0)  # let mosquitto_sub write what is in flight
        stop(sub)
        broker.stop()

    warm_t = max(samples[0]["t_s"] + args.minutes * 60.0 * args.warmup_frac, samples[min(1, len(samples) - 1)]["t_s"])
    fit = [s for s in samples if s["t_s"] >= warm_t]
    if len(fit) < 2:
        fit = samples[-2:]
    slope = slope_per_10min([s["t_s"] for s in fit], [s["rss_mb"] for s in fit])
    post_warm = fit[0]
    n_received = n_unique = None
    if received.exists():
        lines = [line for line in received.read_text(errors="replace").splitlines() if line.strip()]
        n_received = len(lines)
        ids = set()
        for line in lines:
            try:
                ids.add(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                pass
        n_unique = len(ids)
    mqtt_stats = result.get("sinks", {}).get("mqtt", {})
    mqtt_sink = next((w.sink for w in pipeline.sinks if w.name == "mqtt"), None)
    out = {
        "minutes": round((samples[-1]["t_s"] - samples[0]["t_s"]) / 60.0, 2),
        "rss_slope_mb_per_10min": None if slope is None else round(slope, 3),
        "rss_start_mb": samples[0]["rss_mb"], "rss_after_warmup_mb": post_warm["rss_mb"],
        "rss_end_mb": samples[-1]["rss_mb"], "rss_max_mb": max(s["rss_mb"] for s in samples),
        "fds_start": post_warm["fds"], "fds_end": samples[-1]["fds"],
        "fds_max": max(s["fds"] for s in fit),
        "threads_start": post_warm["threads"], "threads_end": samples[-1]["threads"],
        "threads_max": max(s["threads"] for s in fit),
        "warmup_s": round(warm_t - samples[0]["t_s"], 1),
        "frames": result.get("frames", samples[-1]["frames"]),
        "fps": result.get("fps"),
        "dropped": result.get("dropped"),
        "nonfinite_frames": result.get("nonfinite_frames"),
        "infer_errors": result.get("infer_errors"),
        "fire_frames": result.get("fire_frames"),
        "max_queue_depth": {"frames": max(s["q_frames"] for s in samples), "post": max(s["q_post"] for s in samples),
                            **{f"sink_{k}": max(s["q_sinks"].get(k, 0) for s in samples) for k in samples[0]["q_sinks"]}},
        "outbox_pending_max": max((s["outbox_pending"] or 0) for s in samples),
        "mqtt_sink_errors": mqtt_stats.get("errors"),
        "mqtt_stored": getattr(mqtt_sink, "fire_messages", None),
        "mqtt_received": n_received,
        "mqtt_received_unique": n_unique,
        "mqtt_lost": None if n_unique is None or mqtt_sink is None else mqtt_sink.fire_messages - n_unique,
        "outbox_pending_end": mqtt_sink.outbox.pending() if getattr(mqtt_sink, "outbox", None) else None,
        "drained": result.get("drained"),
        "source": "rtp" if args.rtp else "test-loop",
        "rtp_sender_restarts": sender_restarts,
        "broker_outage_s": args.broker_outage_s,
        "outbox_pending_max_during_outage": outage_max_pending if args.broker_outage_s > 0 else None,
        "model": result.get("model"), "backend": result.get("backend"),
        "precision_exec": result.get("precision_exec"), "weight_bits": result.get("weight_bits"),
        "simulated": result.get("simulated"),
        "size": args.size, "target_fps": args.fps, "sample_s": args.sample_s,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "loadavg": os.getloadavg()},
        "firespotter": __version__,
        "samples": samples,
    }
    print(f"\nminutes {out['minutes']}  frames {out['frames']}  fps {out['fps']}  mqtt stored {out['mqtt_stored']}, "
          f"received {n_received} ({n_unique} unique), left in the outbox {out['outbox_pending_end']}")
    print(f"rss  {out['rss_start_mb']:.1f} MB at start, {out['rss_after_warmup_mb']:.1f} after warm-up, "
          f"{out['rss_end_mb']:.1f} at end; slope after warm-up {out['rss_slope_mb_per_10min']} MB / 10 min")
    print(f"fds  {out['fds_start']} -> {out['fds_end']} (max {out['fds_max']});  threads {out['threads_start']} -> "
          f"{out['threads_end']} (max {out['threads_max']})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if result.get("fatal_error") is None and result else 1


if __name__ == "__main__":
    sys.exit(main())
