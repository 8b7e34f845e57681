"""Evaluation suites: one TOML file names every set a model is judged on, each scored the same way every time.

    [[sets]]
    name = "large-flames-val"
    kind = "masks"                 # masks | negatives | boxes-video | classification | synthetic
    folder = "../shared/data/fire-real/train-extra"
    include = ["khanfire_*"]       # globs on the file stem
    split = "val"                  # the folder's labels.csv split column

`boxes-video` sets name `video` and `boxes` (see boxes.py) and may score every N-th annotated frame (`every`);
`synthetic` sets render `flights` x `frames` frames of `size` from `seed` (what `firespotter synth` writes).
Paths are relative to the current directory. Everything is checked before any model runs: a missing folder,
an unknown kind or key, a box outside its frame or a mask of another size than its image is one clear error.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.images import read_image_or_none
from firespotter.runtime.tomlfile import load_toml

from .datasets import DatasetError, Pair, find_pairs

KINDS = ("masks", "negatives", "boxes-video", "classification", "synthetic")
MAX_SUITE_BYTES = 1 << 20
MAX_VIDEO_FRAMES = 100_000


class SuiteError(FirespotterError):
    """A suite file or one of its sets that cannot be scored; the message names the set and the field."""


@dataclass(frozen=True)
class SuiteSet:
    name: str
    kind: str
    folder: str | None = None
    include: tuple[str, ...] = ()
    split: str | None = None
    video: str | None = None
    boxes: str | None = None
    every: int = 1  # boxes-video: score every N-th annotated frame
    flights: int = 8  # synthetic
    frames: int = 10
    size: str = "256x256"
    seed: int = 9000

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "SuiteSet":
        known = {f.name for f in fields(cls)}
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise SuiteError(f"{where}: a set needs name = \"...\"")
        unknown = sorted(set(d) - known)
        if unknown:
            raise SuiteError(f"{where}: set {name!r}: unknown key(s) {', '.join(unknown)}",
                             f"known: {', '.join(sorted(known))}")
        kind = d.get("kind")
        if kind not in KINDS:
            raise SuiteError(f"{where}: set {name!r}: unknown kind {kind!r}", f"known: {', '.join(KINDS)}")
        d = dict(d)
        if isinstance(d.get("include"), str):
            d["include"] = [d["include"]]
        d["include"] = tuple(d.get("include", ()))
        s = cls(**d)
        s.check(where)
        return s

    def check(self, where: str) -> None:
        """Required fields and files exist (before any model is loaded)."""
        label = f"{where}: set {self.name!r} ({self.kind})"
        if self.kind == "boxes-video":
            for key in ("video", "boxes"):
                value = getattr(self, key)
                if not value:
                    raise SuiteError(f"{label} needs {key} = \"PATH\"")
                if not Path(value).exists():
                    raise SuiteError(f"{label}: {key} {value} does not exist")
            if self.every < 1:
                raise SuiteError(f"{label}: every must be at least 1")
        elif self.kind == "synthetic":
            if self.flights < 1 or self.frames < 1:
                raise SuiteError(f"{label}: flights and frames must be at least 1")
        else:
            if not self.folder:
                raise SuiteError(f"{label} needs folder = \"PATH\"")
            if not Path(self.folder).is_dir():
                raise SuiteError(f"{label}: folder {self.folder} does not exist")


def load_suite(path: Path) -> list[SuiteSet]:
    data = load_toml(path, "suite", SuiteError, MAX_SUITE_BYTES)
    raw = data.get("sets")
    if not isinstance(raw, list) or not raw:
        raise SuiteError(f"suite {path} has no [[sets]]")
    sets = [SuiteSet.from_dict(d, str(path)) for d in raw]
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise SuiteError(f"suite {path}: two sets share a name")
    return sets


# --------------------------------------------------------------------------------------------- inputs


def select_pairs(s: SuiteSet) -> list[Pair]:
    """The image/mask pairs of a masks or negatives set, sizes checked."""
    from .labels import stems_in_split

    pairs, _ = find_pairs(Path(s.folder), negatives=s.kind == "negatives")
    if s.include:
        pairs = [p for p in pairs if any(fnmatch.fnmatch(p.name, g) for g in s.include)]
    if s.split is not None:
        keep = stems_in_split(Path(s.folder), s.split)
        pairs = [p for p in pairs if p.name in keep]
    if not pairs:
        raise SuiteError(f"set {s.name!r}: no image of {s.folder} matches include {list(s.include) or '-'} "
                         f"split {s.split or '-'}")
    for p in pairs:
        if p.mask is None:
            continue
        image, mask = read_image_or_none(p.image, "any"), read_image_or_none(p.mask, "any")
        if image is None or mask is None:
            raise SuiteError(f"set {s.name!r}: {p.image if image is None else p.mask} is not a readable image")
        if image.shape[:2] != mask.shape[:2]:
            raise SuiteError(f"set {s.name!r}: mask {p.mask} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                             f"{image.shape[1]}x{image.shape[0]}", "a mask must have its image's size")
    return pairs


def synthetic_pairs(s: SuiteSet, folder: Path) -> list[Pair]:
    """Render the set's flights into folder (images/ + masks/) and pair them."""
    from .synthetic import SyntheticScene

    try:
        width, height = (int(v) for v in s.size.lower().split("x"))
    except ValueError:
        raise SuiteError(f"set {s.name!r}: size {s.size!r} must be WIDTHxHEIGHT") from None
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    for k in range(s.flights):
        scene = SyntheticScene(width=width, height=height, frames=s.frames, seed=s.seed + k)
        for i in range(s.frames):
            rgb, mask = scene.render(i)
            name = f"f{s.seed + k}_{i:06d}.png"
            cv2.imwrite(str(folder / "images" / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(folder / "masks" / name), mask)
    pairs, _ = find_pairs(folder)
    return pairs


def video_frames(s: SuiteSet):
    """(frame number, RGB) of the annotated frames to score, and the boxes; checks boxes against the frame."""
    from .boxes import check_boxes, read_boxes

    boxes, declared = read_boxes(Path(s.boxes))
    cap = cv2.VideoCapture(str(s.video))
    if not cap.isOpened():
        raise SuiteError(f"set {s.name!r}: video {s.video} cannot be opened")
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if declared is not None and declared != (width, height):
        cap.release()
        raise SuiteError(f"set {s.name!r}: {s.boxes} is for {declared[0]}x{declared[1]} frames but {s.video} is "
                         f"{width}x{height}")
    try:
        check_boxes(boxes, width, height, Path(s.boxes))
    except DatasetError:
        cap.release()
        raise
    wanted = set(sorted(boxes)[:: s.every])

    def frames():
        try:
            number = 0
            while number < MAX_VIDEO_FRAMES and number <= max(wanted, default=-1):
                ok, bgr = cap.read()
                if not ok:
                    break
                if number in wanted:
                    yield number, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                number += 1
        finally:
            cap.release()

    return frames(), boxes


# --------------------------------------------------------------------------------------------- scoring


def masks_summary(report: dict, scores: list[float] | None, truth: list[bool]) -> dict:
    """The figures one suite table shows for a masks/negatives/synthetic set."""
    has_truth = any(truth)  # on a fire-free set IoU, F1 and precision say nothing; the pixels called fire do
    out = {"images": report["n_images"], **{k: report[k] if has_truth else None
                                            for k in ("iou", "f1", "precision", "recall")},
           "fire_px_rate": report["pred_px"] / report["total_px"] if report.get("total_px") else None,
           "frames_with_fire_px": report["n_frames_with_fire_px"]}
    if scores is not None and len(scores) == len(truth):
        out["head_false_alarms"] = sum(1 for t, s in zip(truth, scores) if not t and s >= 0.5)
        out["head_missed"] = sum(1 for t, s in zip(truth, scores) if t and s < 0.5)
        out["head_accuracy"] = sum(1 for t, s in zip(truth, scores) if t == (s >= 0.5)) / max(1, len(truth))
    return out


def score_video(s: SuiteSet, predict, params) -> dict:
    from firespotter.runtime.post import postprocess

    from .boxes import BoxScore

    frames, boxes = video_frames(s)
    score = BoxScore()
    for number, rgb in frames:
        prob = predict(rgb[None])[0]
        mask = postprocess(prob, rgb.shape[0], rgb.shape[1], params).mask
        score.add(number, mask > 0, boxes.get(number, []))
    out = score.report()
    out["every"] = s.every
    return out

