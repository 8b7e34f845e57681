"""Alert snapshots: a JPEG of the frame, or of a crop around the fire regions, carried by a `fire` message so a
person can tell a fire from a red roof (docs/wire-format.md, `snapshot`).

Bounded on the drone: the longer side at most `max_side`, the JPEG at most `max_bytes` (quality first, then size
is lowered until it fits), so a snapshot never makes a message the ground station refuses.
"""

from __future__ import annotations

import base64
from typing import Any, Iterable, Literal

import numpy as np

MODES = ("crop", "frame", "off")
Mode = Literal["crop", "frame", "off"]
MIN_QUALITY = 30
MAX_DATA = 512 * 1024  # base64 characters: the schema's bound (a message stays well under 1 MiB)


def crop_box(regions: Iterable[Any], width: int, height: int, margin: float = 0.5, min_side: int = 64
             ) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) around every region's bbox with `margin` × the larger side around it (context: what is next
    to the fire tells a crew more than the flames), at least min_side a side, within the frame."""
    boxes = [tuple(int(v) for v in r.bbox) for r in regions]
    if not boxes:
        return None
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    pad = int(margin * max(x1 - x0, y1 - y0))
    x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
    for lo, hi, limit in ((0, 2, width), (1, 3, height)):
        box = [x0, y0, x1, y1]
        short = min_side - (box[hi] - box[lo])
        if short > 0:
            box[lo] -= short // 2
            box[hi] += short - short // 2
        x0, y0, x1, y1 = box
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(width, x1), min(height, y1)
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def encode(image: np.ndarray | None, regions: Iterable[Any], mode: str, *, max_side: int = 480, quality: int = 75,
           max_bytes: int = 48 * 1024) -> dict[str, Any] | None:
    """The `snapshot` member of a fire message, or None (mode off, no image, crop mode without a region)."""
    import cv2

    if mode not in MODES:
        raise ValueError(f"snapshot mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "off" or image is None or image.ndim != 3 or image.size == 0:
        return None
    h, w = image.shape[:2]
    box = (0, 0, w, h) if mode == "frame" else crop_box(list(regions), w, h)
    if box is None:
        return None
    x, y, bw, bh = box
    pic = cv2.cvtColor(np.ascontiguousarray(image[y:y + bh, x:x + bw]), cv2.COLOR_RGB2BGR)
    scale = min(1.0, max_side / max(bw, bh))
    q = int(quality)
    while True:
        size = (max(1, round(bw * scale)), max(1, round(bh * scale)))
        small = cv2.resize(pic, size, interpolation=cv2.INTER_AREA) if scale < 1.0 else pic
        ok, jpg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, q])
        if not ok:
            return None
        if len(jpg) <= max_bytes or max(size) <= 16:
            break
        # over the cap: lower the quality down to MIN_QUALITY, then the size
        if q > MIN_QUALITY:
            q = max(MIN_QUALITY, q - 15)
        else:
            scale *= 0.7
    data = base64.b64encode(jpg.tobytes()).decode("ascii")
    if len(data) > MAX_DATA:
        return None
    return {"format": "jpeg", "width": int(small.shape[1]), "height": int(small.shape[0]),
            "crop": [int(x), int(y), int(bw), int(bh)], "quality": q, "data": data}


def decode(snapshot: dict[str, Any]) -> np.ndarray:
    """A `snapshot` member -> H×W×3 uint8 RGB; ValueError when it is not the JPEG it claims to be."""
    import cv2

    raw = base64.b64decode(snapshot["data"], validate=True)
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("snapshot: data is not a JPEG image")
    if img.shape[:2] != (snapshot["height"], snapshot["width"]):
        raise ValueError(f"snapshot: JPEG is {img.shape[1]}x{img.shape[0]}, message says "
                         f"{snapshot['width']}x{snapshot['height']}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
