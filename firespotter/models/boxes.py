"""Box-annotated video: reading per-frame flame boxes and scoring predicted fire masks against them.

Two annotation files are read: OpenCV FileStorage XML (`<opencv_storage>` with `<frames>`, each a
`<frameNumber>` and `<annotations>` of "x y w h" rows, as the FURG fire videos ship) and Pascal VOC (one
`<annotation>` per frame, `<object><bndbox>` with xmin/ymin/xmax/ymax; a folder of them, frame number from the
file name, or several `<annotation>` elements in one file with a `<frame>` child).

Boxes are coarse (a rectangle around a flame holds smoke, walls, sky), so pixel IoU against them means little.
What a crew needs is whether each annotated flame is seen and whether what is called fire lies on a flame:

- a box is **hit** when at least HIT_FRACTION (5 %) of its pixels are predicted fire;
- **inside** is the share of predicted fire pixels, over all scored frames, that fall inside any box;
- **frames detected**: frames with a box in which any fire pixel is predicted.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .datasets import DatasetError

HIT_FRACTION = 0.05
MAX_XML_BYTES = 32 << 20  # bounded before parsing: an annotation file of a few minutes of video is ~1 MB


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int


@dataclass
class BoxScore:
    boxes: int = 0
    hit: int = 0
    frames: int = 0  # frames with at least one box
    frames_detected: int = 0
    frames_without_boxes: int = 0
    frames_without_boxes_with_fire: int = 0
    pred_px: int = 0
    pred_px_inside: int = 0
    per_frame: list[dict] = field(default_factory=list)

    def add(self, frame: int, pred: np.ndarray, boxes: list[Box]) -> None:
        """pred: boolean fire mask of the frame; boxes already checked to lie inside it."""
        inside = np.zeros(pred.shape, bool)
        hits = 0
        for b in boxes:
            region = pred[b.y:b.y + b.h, b.x:b.x + b.w]
            inside[b.y:b.y + b.h, b.x:b.x + b.w] = True
            hits += int(region.mean() >= HIT_FRACTION) if region.size else 0
        n_pred = int(np.count_nonzero(pred))
        n_in = int(np.count_nonzero(pred & inside))
        self.pred_px += n_pred
        self.pred_px_inside += n_in
        if boxes:
            self.boxes += len(boxes)
            self.hit += hits
            self.frames += 1
            self.frames_detected += int(n_pred > 0)
        else:
            self.frames_without_boxes += 1
            self.frames_without_boxes_with_fire += int(n_pred > 0)
        self.per_frame.append({"frame": frame, "boxes": len(boxes), "hit": hits, "pred_px": n_pred,
                               "pred_px_inside": n_in})

    def report(self) -> dict:
        return {"boxes": self.boxes, "boxes_hit": self.hit,
                "box_hit_rate": self.hit / self.boxes if self.boxes else None,
                "pred_px": self.pred_px,
                "inside_rate": self.pred_px_inside / self.pred_px if self.pred_px else None,
                "frames": self.frames, "frames_detected": self.frames_detected,
                "frame_detection_rate": self.frames_detected / self.frames if self.frames else None,
                "frames_without_boxes": self.frames_without_boxes,
                "frames_without_boxes_with_fire": self.frames_without_boxes_with_fire,
                "hit_fraction": HIT_FRACTION}


def _parse(path: Path) -> ET.Element:
    if not path.is_file():
        raise DatasetError(f"box annotations {path} do not exist")
    if path.stat().st_size > MAX_XML_BYTES:
        raise DatasetError(f"box annotations {path} are over {MAX_XML_BYTES >> 20} MiB; not an annotation file")
    try:
        return ET.fromstring(path.read_bytes())
    except ET.ParseError as exc:
        raise DatasetError(f"box annotations {path} are not valid XML: {exc}") from None


def _int(text: str | None, what: str, path: Path) -> int:
    try:
        return int(round(float((text or "").strip())))
    except ValueError:
        raise DatasetError(f"{path}: {what} {text!r} is not a number") from None


def _opencv_storage(root: ET.Element, path: Path) -> tuple[dict[int, list[Box]], tuple[int, int] | None]:
    size = None
    fw, fh = root.findtext("frameWidth"), root.findtext("frameHeight")
    if fw and fh:
        size = (_int(fw, "frameWidth", path), _int(fh, "frameHeight", path))
    out: dict[int, list[Box]] = {}
    frames = root.find("frames")
    if frames is None:
        raise DatasetError(f"{path}: an <opencv_storage> annotation file needs <frames>")
    for entry in frames:
        number = _int(entry.findtext("frameNumber"), "frameNumber", path)
        boxes = []
        ann = entry.find("annotations")
        for row in (ann if ann is not None else []):
            values = (row.text or "").split()
            if len(values) != 4:
                raise DatasetError(f"{path}: frame {number}: a box must be 'x y w h', got {row.text!r}")
            x, y, w, h = (_int(v, "box value", path) for v in values)
            boxes.append(Box(x, y, w, h))
        out[number] = boxes
    return out, size


def _voc(root: ET.Element, path: Path, number: int | None) -> tuple[int, list[Box], tuple[int, int] | None]:
    if number is None:
        number = _int(root.findtext("frame"), "frame", path)
    size = None
    if root.find("size") is not None:
        size = (_int(root.findtext("size/width"), "width", path), _int(root.findtext("size/height"), "height", path))
    boxes = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        x0, y0 = _int(bb.findtext("xmin"), "xmin", path), _int(bb.findtext("ymin"), "ymin", path)
        x1, y1 = _int(bb.findtext("xmax"), "xmax", path), _int(bb.findtext("ymax"), "ymax", path)
        boxes.append(Box(x0, y0, x1 - x0, y1 - y0))
    return number, boxes, size


def read_boxes(path: Path) -> tuple[dict[int, list[Box]], tuple[int, int] | None]:
    """{frame number: boxes}, and the (width, height) the file declares (None when it declares none)."""
    path = Path(path)
    if path.is_dir():
        out: dict[int, list[Box]] = {}
        size = None
        for f in sorted(path.glob("*.xml")):
            digits = re.findall(r"\d+", f.stem)
            if not digits:
                raise DatasetError(f"{f}: a VOC file in a folder needs the frame number in its name")
            number, boxes, size = _voc(_parse(f), f, int(digits[-1]))
            out[number] = boxes
        if not out:
            raise DatasetError(f"{path} has no .xml annotation files")
        return out, size
    root = _parse(path)
    if root.tag == "opencv_storage":
        return _opencv_storage(root, path)
    if root.tag == "annotation":
        number, boxes, size = _voc(root, path, None)
        return {number: boxes}, size
    annotations = root.findall("annotation")
    if annotations:
        out, size = {}, None
        for a in annotations:
            number, boxes, size = _voc(a, path, None)
            out[number] = boxes
        return out, size
    raise DatasetError(f"{path}: unknown annotation format <{root.tag}>",
                       "expected <opencv_storage> (FURG) or Pascal VOC <annotation>")


def check_boxes(boxes: dict[int, list[Box]], width: int, height: int, path: Path) -> None:
    """Every box non-empty and inside its width x height frame, or a DatasetError naming the first that is not."""
    for number in sorted(boxes):
        for b in boxes[number]:
            if b.w <= 0 or b.h <= 0 or b.x < 0 or b.y < 0 or b.x + b.w > width or b.y + b.h > height:
                raise DatasetError(f"{path}: frame {number}: box x={b.x} y={b.y} w={b.w} h={b.h} lies outside the "
                                   f"{width}x{height} frame (or is empty)", "fix the annotation or the video")
