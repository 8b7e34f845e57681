"""Probability map -> binary mask at frame size -> fire regions -> alert level."""

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
    if np.isfinite(prob).all():
        return prob, False
    return np.nan_to_num(prob, nan=0.0, posinf=1.0, neginf=0.0), True


def to_frame_size(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    if prob.shape[:2] == (height, width):
        return prob
    return cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)


def extract_regions(prob: np.ndarray, mask: np.ndarray, p: PostParams) -> list[FireRegion]:
    """Connected fire components, largest first; each with its outline polygon and probability stats."""
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return []
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(-areas, kind="stable")
    regions: list[FireRegion] = []
    for idx in order[: p.max_regions]:
        label = idx + 1
        area = int(stats[label, cv2.CC_STAT_AREA])
        if area < p.min_region_px:
            break
        x, y, w, h = (int(v) for v in stats[label, :4])
        sub = labels[y : y + h, x : x + w] == label
        probs = prob[y : y + h, x : x + w][sub]
        contours, _ = cv2.findContours(sub.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contour = max(contours, key=cv2.contourArea)
        polygon = [(int(px) + x, int(py) + y) for px, py in contour.reshape(-1, 2)]
        regions.append(
            FireRegion(
                id=len(regions),
                polygon=polygon,
                area_px=area,
                bbox=(x, y, w, h),
                centroid=(float(centroids[label][0]), float(centroids[label][1])),
                mean_prob=float(probs.mean()),
                peak_prob=float(probs.max()),
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


def postprocess(prob: np.ndarray, height: int, width: int, p: PostParams):
    """-> (prob at frame size, mask uint8 0/255, regions, alert, had_nonfinite)."""
    prob, bad = sanitize(prob)
    prob = to_frame_size(prob, height, width)
    mask = np.where(prob > p.threshold, np.uint8(255), np.uint8(0))
    regions = extract_regions(prob, mask, p) if mask.any() else []
    return prob, mask, regions, alert_level(regions, p), bad
