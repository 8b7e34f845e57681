"""Segmentation metrics for the fire class, computed as FLAME reports them: sums over the whole set.

Per image we keep the confusion counts (tp, fp, fn, tn); set-level IoU and F1 are ratios of the summed counts,
not means of per-image ratios (that one is reported separately as `mean_image_iou`). A ratio whose
denominator is zero is None (JSON null): e.g. precision when nothing was predicted as fire.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @classmethod
    def of(cls, pred: np.ndarray, truth: np.ndarray) -> "Counts":
        """pred, truth: boolean arrays of one shape (True = fire)."""
        if pred.shape != truth.shape:
            raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
        tp = int(np.count_nonzero(pred & truth))
        fp = int(np.count_nonzero(pred)) - tp
        fn = int(np.count_nonzero(truth)) - tp
        return cls(tp, fp, fn, int(pred.size) - tp - fp - fn)

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return None if not vals else float(np.mean(vals))


def scores(c: Counts) -> dict[str, float | None]:
    iou_fire = _ratio(c.tp, c.tp + c.fp + c.fn)
    iou_bg = _ratio(c.tn, c.tn + c.fp + c.fn)
    recall_fire = _ratio(c.tp, c.tp + c.fn)
    recall_bg = _ratio(c.tn, c.tn + c.fp)
    return {
        "iou": iou_fire,
        "f1": _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn),
        "precision": _ratio(c.tp, c.tp + c.fp),
        "recall": recall_fire,
        "pixel_accuracy": _ratio(c.tp + c.tn, c.total),
        "miou": _mean([iou_fire, iou_bg]),  # two classes: fire and background
        "mpa": _mean([recall_fire, recall_bg]),  # mean per-class pixel accuracy
        "false_positive_rate": _ratio(c.fp, c.fp + c.tn),
    }


def summarize(per_image: list[tuple[str, Counts]]) -> dict:
    """Set-level scores from per-image counts, plus per-image means and counts of empty-truth images."""
    total = sum((c for _, c in per_image), Counts())
    image_ious = [scores(c)["iou"] for _, c in per_image]
    negatives = [c for _, c in per_image if c.tp + c.fn == 0]
    return {
        **scores(total),
        # Images with no fire in truth and none predicted have no IoU (0/0) and are left out of this mean.
        "mean_image_iou": _mean(image_ious),
        "n_images": len(per_image),
        "n_empty_truth": len(negatives),
        "n_empty_truth_with_false_fire": sum(1 for c in negatives if c.fp > 0),
        "counts": asdict(total),
    }
