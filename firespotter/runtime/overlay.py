"""Drawing results on frames: a red tint over fire pixels and a yellow outline around each region."""

from __future__ import annotations

import cv2
import numpy as np

TINT_RGB = (255, 40, 0)
OUTLINE_RGB = (255, 230, 0)
TINT_ALPHA = 0.45


def draw_overlay(image: np.ndarray, mask: np.ndarray, regions, *, label: str | None = None) -> np.ndarray:
    """A new RGB image: fire pixels tinted, region outlines drawn, an optional caption top-left."""
    out = image.copy()
    fire = mask > 0
    if fire.any():
        tint = np.array(TINT_RGB, np.float32)
        out[fire] = (out[fire] * (1 - TINT_ALPHA) + tint * TINT_ALPHA).astype(np.uint8)
    thickness = max(1, round(min(image.shape[:2]) / 256))
    outlines = [np.asarray(r.polygon, np.int32).reshape(-1, 1, 2) for r in regions]
    if outlines:
        cv2.polylines(out, outlines, isClosed=True, color=OUTLINE_RGB, thickness=thickness, lineType=cv2.LINE_AA)
    if label:
        scale = max(0.35, min(image.shape[:2]) / 640)
        cv2.putText(out, label, (4, int(14 * scale / 0.35)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, label, (4, int(14 * scale / 0.35)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return out
