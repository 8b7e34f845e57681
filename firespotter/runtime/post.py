"""Probability map -> binary mask at frame size -> fire regions -> alert level.

On the hot path: one contour pass per frame, statistics per region computed inside its bounding box,
polygons kept as numpy arrays (lists are built only for JSON).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .types import AlertLevel, FireRegion


@dataclass(frozen=True)
class PostParams:
    threshold: float = 0.5
    min_region_px: int = 4
    alert_min_area_px: int = 16
    alert_min_peak: float = 0.6
    max_regions: int = 64


def sanitize(prob: np.ndarray) -> tuple[np.ndarray, bool]:
    """NaN/inf from a broken model become 0 (no fire) instead of poisoning the mask. Returns (prob, had_bad)."""
    # The sum is NaN/inf exactly when an element is; cv2.sumElems is the cheapest full pass (and drops the GIL).
    if np.isfinite(cv2.sumElems(prob)[0]):
        return prob, False
    return np.nan_to_num(prob, nan=0.0, posinf=1.0, neginf=0.0), True


def to_frame_size(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    if prob.shape[:2] == (height, width):
        return prob
    return cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)


def extract_regions(prob: np.ndarray, mask: np.ndarray, p: PostParams) -> list[FireRegion]:
    """Connected fire components (8-connectivity), largest first, with outline polygon and probability stats.

    Built from one external-contour pass (much cheaper than labelling every pixel): each outer contour is one
    8-connected component; its pixels are the filled contour AND the mask, so holes are not counted. The
    per-region statistics are single OpenCV calls, which keeps this thread off the GIL while inference runs."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        if w * h < p.min_region_px:
            continue
        inside = np.zeros((h, w), np.uint8)
        cv2.drawContours(inside, [contour], -1, 255, thickness=cv2.FILLED, offset=(-x, -y))
        cv2.bitwise_and(inside, mask[y : y + h, x : x + w], dst=inside)
        m = cv2.moments(inside, binaryImage=True)
        area = int(m["m00"])
        if area < p.min_region_px:
            continue
        found.append((area, x, y, w, h, inside, contour, m))
    found.sort(key=lambda f: (-f[0], f[2], f[1]))
    regions = []
    for area, x, y, w, h, inside, contour, m in found[: p.max_regions]:
        roi = prob[y : y + h, x : x + w]
        peak = cv2.minMaxLoc(roi, inside)[1]
        regions.append(
            FireRegion(
                id=len(regions),
                polygon=contour.reshape(-1, 2),
                area_px=area,
                bbox=(x, y, w, h),
                centroid=(m["m10"] / m["m00"] + x, m["m01"] / m["m00"] + y),
                mean_prob=cv2.mean(roi, inside)[0],
                peak_prob=peak,
            )
        )
    return regions


def alert_level(regions: list[FireRegion], p: PostParams) -> AlertLevel:
    if not regions:
        return AlertLevel.NONE
    area = sum(r.area_px for r in regions)
    peak = max(r.peak_prob for r in regions)
    if area >= p.alert_min_area_px and peak >= p.alert_min_peak:
        return AlertLevel.FIRE
    return AlertLevel.SUSPECT


@dataclass(slots=True)
class Detection:
    """What post-processing makes of one probability map."""

    mask: np.ndarray  # H×W uint8 0/255 at frame size
    regions: list[FireRegion]  # largest first
    alert: AlertLevel
    nonfinite: bool  # the model's output had NaN/inf (replaced by 0 before thresholding)


def postprocess(prob: np.ndarray, height: int, width: int, p: PostParams) -> Detection:
    """A probability map -> its mask at frame size (height × width), fire regions and alert level."""
    prob, bad = sanitize(prob)
    prob = to_frame_size(prob, height, width)
    mask = cv2.compare(prob, p.threshold, cv2.CMP_GT)  # uint8 0/255
    regions = extract_regions(prob, mask, p) if cv2.countNonZero(mask) else []
    return Detection(mask, regions, alert_level(regions, p), bad)
