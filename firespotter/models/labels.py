"""A dataset folder's `labels.csv`: which image belongs to which split (train / val) and scene.

Real fire sets are split by scene, never by frame (frames of one video are near-duplicates), so the split is
read from the file the dataset ships instead of being drawn here. Used by training (`[[domains]] split = ...`)
and by evaluation suites (`split = ...` in a suite's set).
"""

from __future__ import annotations

import csv
from pathlib import Path

from .datasets import DatasetError

LABELS_FILE = "labels.csv"
MAX_LABELS_BYTES = 16 << 20  # a labels file is a few kilobytes; anything this large is not one


def read_labels(folder: Path) -> list[dict[str, str]]:
    """Rows of FOLDER/labels.csv (column names as written), or a DatasetError naming what is missing."""
    path = Path(folder) / LABELS_FILE
    if not path.is_file():
        raise DatasetError(f"{folder} has no {LABELS_FILE}", "a split needs the dataset's labels.csv "
                           "(columns image, split)")
    if path.stat().st_size > MAX_LABELS_BYTES:
        raise DatasetError(f"{path} is over {MAX_LABELS_BYTES >> 20} MiB; not a labels file")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "image" not in rows[0]:
        raise DatasetError(f"{path} has no 'image' column", "labels.csv needs at least the columns image and split")
    return rows


def stems_in_split(folder: Path, split: str) -> set[str]:
    """File stems of the images that labels.csv puts in `split` (e.g. 'train' or 'val')."""
    rows = read_labels(folder)
    if "split" not in rows[0]:
        raise DatasetError(f"{Path(folder) / LABELS_FILE} has no 'split' column")
    known = sorted({r["split"] for r in rows})
    if split not in known:
        raise DatasetError(f"{Path(folder) / LABELS_FILE} has no split {split!r}; its splits: {', '.join(known)}")
    return {Path(r["image"]).stem for r in rows if r["split"] == split}
