#!/usr/bin/env python3
"""GStreamer input speed: decode-to-numpy throughput for a 640x512 H.264 file, and capture-to-appsink latency of
H.264 over RTP on loopback.

    python bench/gst_decode.py [--frames 300] [--rtp-frames 150] [--json PATH]

Decode: the same file read to RGB numpy arrays through firespotter's GStreamer file source and through OpenCV
(FFmpeg); the ratio is measured in the same run. Latency: an in-process sender (appsrc -> encoder -> RTP ->
udpsink on 127.0.0.1) stamps each frame's index into the picture as black/white blocks; the receiver is
firespotter's rtp:// source; latency = arrival at the appsink consumer - push into the sender.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from firespotter import __version__
from firespotter.runtime.gst import GstRegistry, choose_decoder, choose_encoder, encode_chain, load_gst
from firespotter.runtime.plugins import new_registry
from firespotter.runtime.sources import open_source
from firespotter.runtime.video import VideoWriter

W, H = 640, 512
BITS = 16  # frame index bits drawn as blocks
BLOCK = 32
WARMUP_INDEX = (1 << BITS) - 1


def stamp(image: np.ndarray, index: int) -> np.ndarray:
    for b in range(BITS):
        value = 255 if (index >> b) & 1 else 0
        image[0:BLOCK, b * BLOCK : (b + 1) * BLOCK] = value
    return image


def read_stamp(image: np.ndarray) -> int:
    index = 0
    for b in range(BITS):
        block = image[BLOCK // 4 : 3 * BLOCK // 4, b * BLOCK + BLOCK // 4 : (b + 1) * BLOCK - BLOCK // 4]
        if block.mean() > 127:
            index |= 1 << b
    return index


def make_file(path: Path, frames: int) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (H // 8, W // 8, 3), dtype=np.uint8)
    with VideoWriter(path, W, H, 30.0) as writer:
        for i in range(frames):
            img = cv2.resize(np.roll(base, i, axis=1), (W, H), interpolation=cv2.INTER_LINEAR)
            writer.write(img)


def decode_fps_gst(path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = sum(1 for _ in open_source(str(path), new_registry()))
    return n / (time.perf_counter() - t0), n


def decode_fps_opencv(path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    cap = cv2.VideoCapture(str(path))
    n = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        n += 1
    return n / (time.perf_counter() - t0), n


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rtp_latency(frames: int, fps: float = 30.0) -> dict:
    Gst = load_gst()[0]
    port = free_udp_port()
    source = open_source(f"rtp://127.0.0.1:{port}?latency=0&connect_timeout=10", new_registry(), live=True)
    arrivals: dict[int, int] = {}
    done = threading.Event()

    def receive():
        for frame in source:
            arrivals.setdefault(read_stamp(frame.image), time.monotonic_ns())
            if done.is_set():
                break

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    sender = Gst.parse_launch(
        f"appsrc name=src is-live=true format=time caps=video/x-raw,format=RGB,width={W},height={H},framerate=30/1 "
        f"! {encode_chain(GstRegistry(), kbps=4000)} ! rtph264pay config-interval=1 pt=96 "
        f"! udpsink host=127.0.0.1 port={port} sync=false async=false")
    appsrc = sender.get_by_name("src")
    sender.set_state(Gst.State.PLAYING)
    sent: dict[int, int] = {}
    rng = np.random.default_rng(1)
    background = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    period = 1.0 / fps
    # Warm-up: send unstamped frames until the receiver decodes one (its pipeline is listening and has a key
    # frame), so start-up time is not counted as latency. Bounded: 15 s.
    warm = WARMUP_INDEX
    t_give_up = time.monotonic() + 15
    pts = 0
    while WARMUP_INDEX not in arrivals and time.monotonic() < t_give_up:
        buf = Gst.Buffer.new_wrapped(stamp(background.copy(), warm).tobytes())
        buf.pts, buf.duration = int(pts * period * Gst.SECOND), int(period * Gst.SECOND)
        appsrc.push_buffer(buf)
        pts += 1
        time.sleep(period)
    t_next = time.monotonic()
    for i in range(frames):
        img = stamp(background.copy(), i)
        buf = Gst.Buffer.new_wrapped(img.tobytes())
        buf.pts = int((pts + i) * period * Gst.SECOND)
        buf.duration = int(period * Gst.SECOND)
        sent[i] = time.monotonic_ns()
        appsrc.push_buffer(buf)
        t_next += period
        time.sleep(max(0.0, t_next - time.monotonic()))
    time.sleep(1.0)
    done.set()
    source.close()
    appsrc.end_of_stream()
    sender.set_state(Gst.State.NULL)
    receiver.join(5)
    lat = [(arrivals[i] - sent[i]) / 1e6 for i in sent if i in arrivals and arrivals[i] >= sent[i]]
    # frames counts only stamped frames, not the warm-up ones
    if not lat:
        return {"received": 0, "sent": frames}
    a = np.asarray(lat)
    return {"sent": frames, "received": len(lat), "median_ms": round(float(np.median(a)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3), "max_ms": round(float(a.max()), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=300, help="frames in the decode test file")
    ap.add_argument("--rtp-frames", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    registry = GstRegistry()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip_640x512.mp4"
        make_file(clip, args.frames)
        gst_runs, cv_runs = [], []
        for _ in range(args.repeats):
            gst_runs.append(decode_fps_gst(clip))
            cv_runs.append(decode_fps_opencv(clip))
    gst_fps = statistics.median(r[0] for r in gst_runs)
    cv_fps = statistics.median(r[0] for r in cv_runs)
    latency = rtp_latency(args.rtp_frames)
    result = {
        "decode": {
            "size": [W, H], "frames": gst_runs[0][1], "gstreamer_fps": round(gst_fps, 2),
            "opencv_fps": round(cv_fps, 2), "ratio_gst_over_opencv": round(gst_fps / cv_fps, 3),
            "decoder": (choose_decoder("h264", registry) or ("decodebin",))[0],
        },
        "rtp_latency": {**latency, "encoder": (choose_encoder(registry) or ("none",))[0], "size": [W, H]},
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "versions": {"firespotter": __version__, "gstreamer": load_gst()[0].version_string(), "opencv": cv2.__version__},
    }
    d, r = result["decode"], result["rtp_latency"]
    print(f"decode 640x512 H.264 -> RGB numpy ({d['frames']} frames, {d['decoder']}): GStreamer {d['gstreamer_fps']:.1f} fps, "
          f"OpenCV {d['opencv_fps']:.1f} fps, ratio {d['ratio_gst_over_opencv']:.2f}")
    if r.get("received"):
        print(f"RTP loopback capture->appsink latency ({r['encoder']}, {r['received']}/{r['sent']} frames): "
              f"median {r['median_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms")
    else:
        print("RTP loopback: no frame received")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
