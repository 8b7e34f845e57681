"""Finding image/mask pairs on disk: `images/` + `masks/` by stem, the FLAME layout, or negatives only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.images import IMAGE_SUFFIXES, list_images

__all__ = ["IMAGE_SUFFIXES", "DatasetError", "Pair", "find_pairs", "list_images", "pairs_by_order", "pairs_by_stem"]

FLAME_IMAGES = Path("Segmentation/Data/Images")
FLAME_MASKS = Path("Segmentation/Data/Masks")


class DatasetError(FirespotterError):
    """The folder is not a dataset we can pair; the message says what was found and what was expected."""


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path | None  # None: the image is a negative, its truth is "no fire anywhere"

    @property
    def name(self) -> str:
        return self.image.stem

    @property
    def group(self) -> str:
        """File-name prefix before the first underscore (e.g. 'flame1' for flame1_t0004)."""
        return self.name.split("_", 1)[0]


def _names(paths, limit: int = 8) -> str:
    names = sorted(p if isinstance(p, str) else p.name for p in paths)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def pairs_by_stem(images_dir: Path, masks_dir: Path) -> list[Pair]:
    images = {p.stem: p for p in list_images(images_dir)}
    masks = {p.stem: p for p in list_images(masks_dir)}
    if not images:
        raise DatasetError(f"{images_dir} has no images")
    missing = sorted(set(images) - set(masks))
    extra = sorted(set(masks) - set(images))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"images without a mask in {masks_dir}: {_names(missing)}")
        if extra:
            parts.append(f"masks without an image in {images_dir}: {_names(extra)}")
        raise DatasetError("; ".join(parts) + " (pairs are matched by file name without extension)")
    return [Pair(images[s], masks[s]) for s in sorted(images)]


def pairs_by_order(images_dir: Path, masks_dir: Path) -> list[Pair]:
    images, masks = list_images(images_dir), list_images(masks_dir)
    if len(images) != len(masks):
        raise DatasetError(f"FLAME layout: {len(images)} images in {images_dir} but {len(masks)} masks in {masks_dir}; "
                           "they are paired by sorted name, so the counts must match")
    if not images:
        raise DatasetError(f"{images_dir} has no images")
    return [Pair(i, m) for i, m in zip(images, masks)]


def find_pairs(root: Path, *, negatives: bool = False) -> tuple[list[Pair], str]:
    """-> (pairs, layout). `negatives`: score every image of `root` (or root/images) as fire-free."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    if negatives:
        folder = root / "images" if (root / "images").is_dir() else root
        images = list_images(folder)
        if not images:
            raise DatasetError(f"{folder} has no images")
        return [Pair(p, None) for p in images], "negatives"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return pairs_by_stem(root / "images", root / "masks"), "images+masks"
    if (root / FLAME_IMAGES).is_dir() and (root / FLAME_MASKS).is_dir():
        return pairs_by_order(root / FLAME_IMAGES, root / FLAME_MASKS), "flame"
    if (root / "images").is_dir():
        raise DatasetError(f"{root} has images/ but no masks/", "pass --negatives to score the images as fire-free")
    raise DatasetError(f"{root} is not a dataset: expected images/ + masks/ (same file stems) or the FLAME layout "
                       f"({FLAME_IMAGES} + {FLAME_MASKS})")
