#!/usr/bin/env python3
"""Test-time adaptation on a real domain shift (issue 18, item 5): a model trained on aerial FLAME + synthetic
frames only, adapted while it streams real frames it has never seen the like of.

    python bench/tta_real.py --weights firespotter/models/recipes/fireseg-lite-aerial.pt [--size 512] [--threads 1]
                             [--passes 3] [--video-every 3] [--methods none,bnstats,tent,ostta]
                             [--no-forced] [--streams fire,negatives,video] [--json PATH]

Streams (read in place, never copied; each method gets a fresh model per stream):
- fire: the train-extra validation fire scenes (`split=val`, `khanfire_*`: 38 frames of 5 scenes), one
  stream ordered scene by scene, frames of a scene in file-name order (consecutive video frames), looped
  --passes times so the adapters have time to move. IoU x100 (micro: pixels summed) over the last pass, over
  all passes, per pass, and per scene (last pass and all passes). Frames and masks are resized to SIZE x SIZE
  (INTER_AREA / nearest) as bench/tta.py does.
- negatives: the 21 validation negatives (`split=val`, `cairneg_*`), a separate stream, looped the same way:
  share of pixels called fire and frames with any fire pixel (last pass, all passes).
- video: `dev/videos/furg_house6.mp4` (426x240, a house fire seen from the ground), every --video-every-th
  annotated frame, once, scored against its flame boxes with firespotter.models.boxes.BoxScore (the 512 px
  prediction resized to the frame, nearest): box hit rate (>= 5 % of a box predicted fire), the share of fire
  pixels inside a box, frames detected.

Methods: none, bnstats, tent, ostta (NAME@S as in bench/tta.py), each with its default options ("as shipped":
the shift detector on; pass --threshold for weights other than the shipped ones: 2.01 for the FLAME + synthetic
model, calibrated on synthetic + FLAME frames) and, unless
--no-forced, again with the detector forced on (option threshold = 0: blend 1 from the first frame), shown as
NAME/forced. Per adapter and stream: the share of frames on which the detector had adaptation switched on,
its onsets, the smoothed detector distance, and for tent/ostta updates, resets and parameter movement.
torch backend, FP32 (precision_exec fp32, weight_bits 32, simulated false), one prediction threshold 0.5.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import tta  # noqa: E402  (bench/tta.py: segmenter, adapter options, run)
from tta import read_image  # noqa: E402  (the project's image reader)

ROOT = tta.ROOT
REAL = ROOT.parent / "shared" / "data" / "fire-real"
EXTRA = REAL / "train-extra"
VIDEO = REAL / "dev" / "videos" / "furg_house6.mp4"
BOXES = REAL / "dev" / "videos" / "furg_house6_bboxes.xml"
METHODS = ("none", "bnstats", "tent", "ostta")
FORCED = {"threshold": 0.0}  # the shift detector off: adapt from the first frame


# ------------------------------------------------------------------------------------------------ data


def _resized(img: Path, mask: Path | None, size: int) -> tuple[np.ndarray, np.ndarray]:
    rgb = read_image(img)
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    if mask is None:
        return rgb, np.zeros((size, size), bool)
    m = read_image(mask, "gray")
    return rgb, cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST) > 127


def extra_val(size: int, root: Path = EXTRA) -> tuple[list, list]:
    """(fire frames [(rgb, mask, scene)] scene by scene, negatives [(rgb, mask)]) of train-extra's split=val."""
    with open(root / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "val"]
    fire_rows = sorted((r for r in rows if r["image"].startswith("khanfire_")), key=lambda r: r["image"])
    first: dict[str, str] = {}
    for r in fire_rows:
        first.setdefault(r["scene"], r["image"])
    fire_rows.sort(key=lambda r: (first[r["scene"]], r["image"]))  # scene by scene, file-name order within
    fire = [(*_resized(root / "images" / r["image"], root / "masks" / r["mask"], size), r["scene"]) for r in fire_rows]
    neg_rows = sorted((r for r in rows if r["image"].startswith("cairneg_")), key=lambda r: r["image"])
    negatives = [_resized(root / "images" / r["image"], None, size) for r in neg_rows]
    return fire, negatives


def house_video(every: int, video: Path = VIDEO, boxes_path: Path = BOXES):
    """([(frame number, RGB at the video's size)], {number: [Box]}): every `every`-th annotated frame."""
    from firespotter.models.boxes import check_boxes, read_boxes

    boxes, _ = read_boxes(boxes_path)
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {video}")
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    check_boxes(boxes, w, h, boxes_path)
    wanted = set(sorted(boxes)[::every])
    frames, number = [], 0
    while number <= max(wanted, default=-1):
        ok, bgr = cap.read()
        if not ok:
            break
        if number in wanted:
            frames.append((number, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        number += 1
    cap.release()
    return frames, boxes


# ------------------------------------------------------------------------------------------------ measuring


def _iou(inter: int, union: int) -> float:
    return round(100 * inter / union, 2) if union else 100.0


def _tracked(method: str, frames, size: int, options: dict | None, extra=None) -> tuple[dict, list[dict]]:
    """tta.run, plus per frame: the detector's state after the frame (adaptation on?, smoothed distance) and
    whatever `extra(i, pred)` returns."""
    per: list[dict] = []

    def on_frame(i, pred, ad):
        row = {"active": None, "distance": None}
        if ad is not None:
            row["active"] = bool(ad.engine.stats.active)
            row["distance"] = ad.engine.stats.distance
        if extra is not None:
            row.update(extra(i, pred))
        per.append(row)

    return tta.run(method, frames, size, options, on_frame=on_frame), per


def _adapter_info(r: dict, per: list[dict], last: slice | None = None) -> dict | None:
    s = r["summary"]
    if not s:
        return None
    rows = per[last] if last is not None else per
    dist = [p["distance"] for p in rows if p["distance"] is not None]
    shift = s.get("shift", {})
    out = {"active_share": round(statistics.fmean(p["active"] for p in per), 3),
           "active_share_last_pass": round(statistics.fmean(p["active"] for p in rows), 3),
           "active_at_end": per[-1]["active"], "shift_onsets": shift.get("shift_onsets"),
           "threshold": shift.get("threshold"),
           "distance_mean": round(statistics.fmean(dist), 3) if dist else None,
           "distance_max": round(max(dist), 3) if dist else None,
           "updates": s.get("updates"), "resets": s.get("resets"), "reset_reasons": s.get("reset_reasons")}
    for k in ("mean_selected", "mean_fire_adapted", "mean_fire_frozen", "max_moved"):
        if k in s:
            out[k] = s[k]
    return out


def fire_stream(method: str, frames, size: int, passes: int, options: dict | None) -> dict:
    """frames: [(rgb, mask, scene)] of one pass; the stream is `passes` of them back to back."""
    n = len(frames)
    stream = [(rgb, mask) for rgb, mask, _ in frames] * passes
    r, per = _tracked(method, stream, size, options,
                      lambda i, pred: {"inter": int((pred & stream[i][1]).sum()),
                                       "union": int((pred | stream[i][1]).sum())})
    inter = [p["inter"] for p in per]
    union = [p["union"] for p in per]
    scenes = list(dict.fromkeys(s for _, _, s in frames))
    last = slice((passes - 1) * n, passes * n)

    def scene_iou(scene, idx):
        k = [i for i in idx if frames[i % n][2] == scene]
        return _iou(sum(inter[i] for i in k), sum(union[i] for i in k))

    out = {"iou_last_pass": _iou(sum(inter[last]), sum(union[last])),
           "iou_all": _iou(sum(inter), sum(union)),
           "iou_per_pass": [_iou(sum(inter[p * n:(p + 1) * n]), sum(union[p * n:(p + 1) * n])) for p in range(passes)],
           "inter": sum(inter), "union": sum(union),
           "scenes_last_pass": {s: scene_iou(s, range(last.start, last.stop)) for s in scenes},
           "scenes_all": {s: scene_iou(s, range(len(stream))) for s in scenes},
           "mean_fire": round(statistics.fmean(r["fire"]), 5), "s_per_frame": round(r["s_per_frame"], 4)}
    out["adapter"] = _adapter_info(r, per, last)
    return out


def negative_stream(method: str, frames, size: int, passes: int, options: dict | None) -> dict:
    n = len(frames)
    r, per = _tracked(method, list(frames) * passes, size, options)
    fire = r["fire"]
    last = fire[(passes - 1) * n:]
    out = {"fire_px_pct_last_pass": round(100 * statistics.fmean(last), 4),
           "fire_px_pct_all": round(100 * statistics.fmean(fire), 4),
           "frames_with_fire_last_pass": sum(f > 0 for f in last), "frames": n,
           "frames_with_fire_all": sum(f > 0 for f in fire), "s_per_frame": round(r["s_per_frame"], 4)}
    out["adapter"] = _adapter_info(r, per, slice((passes - 1) * n, passes * n))
    return out


def video_stream(method: str, frames, boxes, size: int, options: dict | None) -> dict:
    """frames: [(number, rgb)] at the video's size; the segmenter resizes to SIZE x SIZE itself."""
    from firespotter.models.boxes import BoxScore

    score = BoxScore()
    h, w = frames[0][1].shape[:2]
    none_mask = np.zeros((size, size), bool)  # run() scores IoU against it; unused here

    def extra(i, pred):
        full = cv2.resize(pred.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        number = frames[i][0]
        score.add(number, full, boxes.get(number, []))
        return {}

    r, per = _tracked(method, [(rgb, none_mask) for _, rgb in frames], size, options, extra)
    rep = score.report()
    rep.pop("hit_fraction", None)
    out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rep.items()}
    out.update(mean_fire=round(statistics.fmean(r["fire"]), 5), s_per_frame=round(r["s_per_frame"], 4))
    out["adapter"] = _adapter_info(r, per)
    return out


def variants(methods, forced: bool) -> list[tuple[str, str, dict | None]]:
    """(key, method, options): each method as shipped, then each adapter with the detector forced on."""
    out = [(m, m, None) for m in methods]
    if forced:
        out += [(f"{m}/forced", m, dict(FORCED)) for m in methods if tta.method_options(m)[0] != "none"]
    return out


def measure(fire, negatives, video, size: int, methods=METHODS, passes: int = 3, forced: bool = True,
            log=print) -> dict:
    """The bench's core: fire = [(rgb, mask, scene)], negatives = [(rgb, mask)], video = ([(number, rgb)],
    {number: [Box]}) or None; any stream may be empty. -> {"fire": {key: ...}, "negatives": ..., "video": ...}."""
    result: dict = {"fire": {}, "negatives": {}, "video": {}}
    for key, method, options in variants(methods, forced):
        t = time.perf_counter()
        if fire:
            result["fire"][key] = fire_stream(method, fire, size, passes, options)
        if negatives:
            result["negatives"][key] = negative_stream(method, negatives, size, passes, options)
        if video and video[0]:
            result["video"][key] = video_stream(method, video[0], video[1], size, options)
        log(f"  {key:16s} done in {time.perf_counter() - t:6.1f} s")
    return result


# ------------------------------------------------------------------------------------------------ report


def _f(v, fmt="{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def table(result: dict) -> list[str]:
    keys = list(dict.fromkeys([*result["fire"], *result["negatives"], *result["video"]]))
    head = ("| method | fire IoU last pass | fire IoU all passes | per pass | neg. fire px % (last / all) | "
            "neg. frames with fire (last) | video box hit % | video fire px inside boxes % | video frames detected % | "
            "detector on (fire / neg. / video) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for k in keys:
        f, n, v = result["fire"].get(k, {}), result["negatives"].get(k, {}), result["video"].get(k, {})
        on = []
        for s in (f, n, v):
            a = s.get("adapter") if s else None
            on.append("-" if not a else f"{100 * a['active_share']:.0f}%")
        lines.append(
            f"| {k} | {_f(f.get('iou_last_pass'))} | {_f(f.get('iou_all'))} | "
            f"{' / '.join(_f(x) for x in f.get('iou_per_pass', []))} | {_f(n.get('fire_px_pct_last_pass'), '{:.3f}')} / {_f(n.get('fire_px_pct_all'), '{:.3f}')} | "
            f"{_f(n.get('frames_with_fire_last_pass'), '{}')}/{_f(n.get('frames'), '{}')} | "
            f"{_f(100 * v['box_hit_rate'] if v.get('box_hit_rate') is not None else None, '{:.1f}')} | "
            f"{_f(100 * v['inside_rate'] if v.get('inside_rate') is not None else None, '{:.1f}')} | "
            f"{_f(100 * v['frame_detection_rate'] if v.get('frame_detection_rate') is not None else None, '{:.1f}')} | "
            f"{' / '.join(on)} |")
    return lines


def scene_table(result: dict) -> list[str]:
    fire = result["fire"]
    if not fire:
        return []
    scenes = list(next(iter(fire.values()))["scenes_last_pass"])
    lines = ["| method | " + " | ".join(scenes) + " |", "|---|" + "---|" * len(scenes)]
    for k, e in fire.items():
        lines.append(f"| {k} | " + " | ".join(_f(e["scenes_last_pass"][s]) for s in scenes) + " |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="fireseg-lite weights (folder, .pt or manifest); default the zoo's")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--passes", type=int, default=3, help="times the fire and negative streams are looped")
    ap.add_argument("--video-every", type=int, default=3, help="every N-th annotated frame of furg_house6")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--no-forced", action="store_true", help="skip the runs with the shift detector forced on")
    ap.add_argument("--streams", default="fire,negatives,video")
    ap.add_argument("--threshold", type=float, help="the shift detector's threshold for these weights (default: "
                    "the adapters' own, calibrated for the shipped model; 2.01 for fireseg-lite-aerial.pt)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.passes < 1 or args.video_every < 1:
        ap.error("--passes and --video-every must be at least 1")
    streams = {s.strip() for s in args.streams.split(",") if s.strip()}
    if streams - {"fire", "negatives", "video"}:
        ap.error("--streams: use fire, negatives, video")
    tta.WEIGHTS = args.weights
    tta.THRESHOLD = args.threshold

    import torch

    from firespotter.models.adapt.engine import SHIFT_THRESHOLD

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    fire, negatives = extra_val(args.size) if streams & {"fire", "negatives"} else ([], [])
    fire = fire if "fire" in streams else []
    negatives = negatives if "negatives" in streams else []
    video = house_video(args.video_every) if "video" in streams else None
    print(f"fire frames {len(fire)} x {args.passes} passes, negatives {len(negatives)} x {args.passes}, "
          f"video frames {len(video[0]) if video else 0}, {args.size} px, {args.threads} thread(s)", flush=True)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    result = measure(fire, negatives, video, args.size, methods, args.passes, not args.no_forced,
                     log=lambda s: print(s, flush=True))
    print("\n".join(table(result)))
    print()
    print("\n".join(scene_table(result)))
    result["config"] = {
        "weights": args.weights or "zoo fireseg-lite", "size": args.size, "threads": args.threads,
        "passes": args.passes, "video_every": args.video_every, "methods": methods, "forced": not args.no_forced,
        "forced_options": FORCED, "shipped_threshold": SHIFT_THRESHOLD,
        "threshold_note": "the shipped detector threshold was calibrated on synthetic + FLAME training frames",
        "fire_frames": len(fire), "fire_scenes": list(dict.fromkeys(s for _, _, s in fire)),
        "negative_frames": len(negatives), "video": str(VIDEO.name) if video else None,
        "video_frames": len(video[0]) if video else 0, "prediction_threshold": 0.5,
        "backend": "torch", "precision_exec": "fp32", "weight_bits": 32, "simulated": False,
        "torch": torch.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
