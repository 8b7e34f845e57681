"""Scoring a bound segmenter on image/mask pairs, with the runtime's own post-processing (what a flight sees)."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from firespotter.runtime.images import read_image_or_none
from firespotter.runtime.post import PostParams, postprocess

from .datasets import Pair
from .metrics import Counts, scores, summarize

log = logging.getLogger("firespotter.eval")


@dataclass
class EvalRun:
    rows: list[dict] = field(default_factory=list)  # one per scored image
    skipped: list[str] = field(default_factory=list)  # unreadable images or masks
    resized: list[str] = field(default_factory=list)  # masks of another size than their image

    def report(self) -> dict:
        per_image = [(r["name"], Counts(r["tp"], r["fp"], r["fn"], r["tn"])) for r in self.rows]
        groups: dict[str, list] = defaultdict(list)
        for row, item in zip(self.rows, per_image):
            groups[row["group"]].append(item)
        return {
            **summarize(per_image),
            "groups": {g: summarize(items) for g, items in sorted(groups.items())},
            "skipped": len(self.skipped),
            "skipped_files": self.skipped,
            "resized_masks": len(self.resized),
        }


def read_truth(pair: Pair, shape: tuple[int, int], run: EvalRun) -> np.ndarray | None:
    """Boolean fire mask at the image's size; None when unreadable. Resizing is nearest-neighbour."""
    if pair.mask is None:
        return np.zeros(shape, bool)
    mask = read_image_or_none(pair.mask, "mask")
    if mask is None:
        return None
    if mask.shape != shape:
        run.resized.append(pair.mask.name)
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return mask > 0


def evaluate(pairs: list[Pair], predict: Callable[[np.ndarray], np.ndarray], params: PostParams,
             on_image: Callable[[int], None] | None = None) -> EvalRun:
    run = EvalRun()
    for i, pair in enumerate(pairs):
        rgb = read_image_or_none(pair.image)
        if rgb is None:
            run.skipped.append(pair.image.name)
            log.warning("skipping %s: not a readable image", pair.image)
            continue
        truth = read_truth(pair, rgb.shape[:2], run)
        if truth is None:
            run.skipped.append(pair.mask.name)
            log.warning("skipping %s: its mask %s is not a readable image", pair.image.name, pair.mask)
            continue
        prob = predict(rgb[None])[0]
        found = postprocess(prob, rgb.shape[0], rgb.shape[1], params)
        mask, regions, alert = found.mask, found.regions, found.alert
        c = Counts.of(mask > 0, truth)
        s = scores(c)
        run.rows.append({
            "name": pair.name, "group": pair.group, "tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn,
            "iou": s["iou"], "f1": s["f1"], "precision": s["precision"], "recall": s["recall"],
            "truth_px": c.tp + c.fn, "pred_px": c.tp + c.fp, "regions": len(regions), "alert": alert.value,
            "mask_resized": bool(run.resized and pair.mask is not None and run.resized[-1] == pair.mask.name),
        })
        if on_image is not None:
            on_image(i + 1)
    return run


def frame_scores(segmenter):
    """(predict, scores): a predict function that also records each frame's fire score, and the list it fills.
    Models with a frame head give their score; others get the peak pixel probability as a stand-in."""
    scores: list[float] = []
    head = segmenter.frame_head

    def predict(batch):
        prob, s = segmenter.predict_scored(batch)
        scores.extend(float(v) for v in (s if s is not None else prob.reshape(len(prob), -1).max(axis=1)))
        return prob

    return predict, scores, ("frame head" if head else "peak pixel probability")


def frame_accuracy(truth: list[bool], scores: list[float], threshold: float = 0.5) -> dict:
    """Frame-level fire / no-fire accuracy of scores against truth labels."""
    tp = sum(1 for t, s in zip(truth, scores) if t and s >= threshold)
    fn = sum(1 for t, s in zip(truth, scores) if t and s < threshold)
    fp = sum(1 for t, s in zip(truth, scores) if not t and s >= threshold)
    tn = sum(1 for t, s in zip(truth, scores) if not t and s < threshold)
    n = tp + fn + fp + tn
    return {"accuracy": (tp + tn) / n if n else None, "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None, "n_frames": n, "n_fire": tp + fn,
            "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn}, "score_threshold": threshold}


def classification_eval(items, segmenter) -> dict:
    """Frame-level accuracy on classification folders: [(path, label)] -> report."""
    predict, scores, source = frame_scores(segmenter)
    truth, rows, skipped = [], [], []
    for path, label in items:
        rgb = read_image_or_none(path)
        if rgb is None:
            skipped.append(path.name)
            continue
        predict(rgb[None])
        truth.append(bool(label))
        rows.append({"name": path.stem, "folder": path.parent.name, "label": int(label), "score": scores[-1]})
    return {**frame_accuracy(truth, scores), "score_source": source, "frames": rows, "skipped_files": skipped}
