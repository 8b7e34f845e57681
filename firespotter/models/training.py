"""Training the fire segmentation networks: data, loss, the loop, checkpoints.

Data: image/mask folders and the FLAME segmentation layout (`datasets.find_pairs`), fire-free image folders
(`negatives`), FLAME-layout classification folders (`Training/{Fire,No_Fire}`, `Test/{Fire,No_Fire}`: frame
labels only) and synthetic scenes rendered on the fly (`synthetic.SyntheticScene`, fresh scenes every epoch).
Every frame is first brought to the model's input size exactly as the backends do, then augmented
(`augment.py`) into square crops.

Loss: BCE + soft Dice over the whole batch for the mask (fires cover under 1 % of many aerial frames; a
batch-level Dice is not blown up by crops without fire), `focal-dice` as the alternative, plus BCE for the
frame-level head (target: any fire pixel in the crop, or the folder's label).

Reproducible: the model is initialised from `seed`; the order of an epoch comes from (seed, epoch) and each
sample's augmentation from (seed, epoch, position), so a run resumed from `last.pt` continues exactly as an
uninterrupted one would (same thread count, same machine).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import platform
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from firespotter.runtime.artifacts import sha256_file
from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.images import read_image, read_image_or_none

from .augment import AugmentParams, augment, paste_flame, resize_to
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint, model_from_checkpoint, save_checkpoint
from .datasets import IMAGE_SUFFIXES, DatasetError, find_pairs, list_images

log = logging.getLogger("firespotter.train")

FRAMES_PER_SCENE = 12  # synthetic frames drawn from one generated world (building a world costs ~30 frames)
SYNTH_USES = 2  # each rendered synthetic frame gives this many training samples (different crops and jitter)
HEAD_REFIT_SYNTHETIC = 80  # synthetic whole frames for head_refit (from worlds no training epoch drew)
SYNTH_CLOSE_ZOOM = (1.8, 5.0)  # zoom range of the low-altitude worlds (log-uniform): fronts fill 3-10 % of the frame
SYNTH_SIZES = ((256, 256), (320, 240), (384, 288), (448, 448), (512, 384), (512, 512))  # (w, h) the generator renders
SYNTH_SHIFTS = ("haze", "lowlight", "colorcast", "blur", "noise", "jpeg")


class TrainingError(FirespotterError):
    """A training run that cannot start or continue: bad settings, a checkpoint that does not match."""


# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Item:
    """One training frame. mask None + label 1: a fire frame without a mask (only the frame head learns)."""

    image: Path
    mask: Path | None
    label: int  # frame-level: 1 fire, 0 no fire
    kind: str  # "pair" | "negative" | "fire-frame" | "no-fire-frame"
    root: Path
    domain: str = ""  # the recipe domain it was drawn for ("" without domains)

    @property
    def has_mask(self) -> bool:
        return self.kind != "fire-frame"

    def rel(self, path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(" ", "_")


def _is_fire_dir(name: str) -> bool:
    return _norm(name) == "fire"


def _is_nofire_dir(name: str) -> bool:
    n = _norm(name)
    return n in ("nofire", "no_fire", "non_fire", "nonfire") or n.startswith("no_")


def _images_below(folder: Path) -> list[Path]:
    """Images in folder and its subfolders, skipping mask folders (e.g. no_flame_smoke/smoke_masks)."""
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not any("mask" in part.lower()
                                                                          for part in p.relative_to(folder).parts[:-1]):
            out.append(p)
    return out


def find_classified(root: Path) -> list[tuple[Path, int]] | None:
    """Frame-labelled images of a classification folder, or None when `root` is not one.

    Layouts: FLAME's `Training/{Fire,No_Fire}` and/or `Test/{Fire,No_Fire}`, or `{Fire,No_Fire}` directly
    (names case-insensitive; any `no_*` folder counts as fire-free, e.g. `no_flame_smoke`)."""
    root = Path(root)
    if not root.is_dir() or (root / "images").is_dir():
        return None
    splits = [d for d in sorted(root.iterdir()) if d.is_dir() and _norm(d.name) in ("training", "test", "train", "val")]
    parents = splits or [root]
    found: list[tuple[Path, int]] = []
    any_class_dir = False
    for parent in parents:
        for d in sorted(parent.iterdir()):
            if not d.is_dir():
                continue
            if _is_fire_dir(d.name):
                label = 1
            elif _is_nofire_dir(d.name):
                label = 0
            else:
                continue
            any_class_dir = True
            found.extend((p, label) for p in _images_below(d))
    if not any_class_dir:
        return None
    if not found:
        raise DatasetError(f"{root} has classification folders ({', '.join(d.name for d in parents)}) but no images")
    return found


def _match(name: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    include, exclude = list(include), list(exclude)
    if include and not any(fnmatch.fnmatch(name, g) for g in include):
        return False
    return not any(fnmatch.fnmatch(name, g) for g in exclude)


def collect(data: Iterable[Path], negatives: Iterable[Path] = (), include: Iterable[str] = (),
            exclude: Iterable[str] = ()) -> list[Item]:
    """Every training frame of the given folders, filtered by name globs (on the file stem)."""
    items: list[Item] = []
    include, exclude = list(include), list(exclude)
    for root in data:
        root = Path(root)
        classified = find_classified(root) if root.is_dir() else None
        if classified is not None:
            for path, label in classified:
                items.append(Item(path, None, label, "fire-frame" if label else "no-fire-frame", root))
            continue
        pairs, _ = find_pairs(root)  # DatasetError with a hint for images/ without masks/
        items.extend(Item(p.image, p.mask, 1, "pair", root) for p in pairs)
    for root in negatives:
        pairs, _ = find_pairs(Path(root), negatives=True)
        items.extend(Item(p.image, None, 0, "negative", Path(root)) for p in pairs)
    selected = [it for it in items if _match(it.image.stem, include, exclude)]
    if items and not selected:
        raise DatasetError(f"no training image matches --include {' '.join(include) or '-'} "
                           f"--exclude {' '.join(exclude) or '-'} ({len(items)} images before filtering)")
    return selected


def collect_domain(domain) -> list[Item]:
    """The frames of one recipe domain (not synthetic): folder, split from its labels.csv, name globs."""
    from dataclasses import replace

    root = Path(domain.folder)
    if domain.kind == "negatives":
        items = collect([], negatives=[root], include=domain.include, exclude=domain.exclude)
    else:
        items = collect([root], include=domain.include, exclude=domain.exclude)
    items = _in_split(items, root, domain.split)
    # images/ + masks/ with an empty mask are negatives: the frame head learns "no fire" from them (and they
    # are no paste donors)
    items = [replace(it, label=0) if it.mask is not None and _empty_mask(it.mask) else it for it in items]
    if not items:
        raise DatasetError(f"domain {domain.name!r} has no frames ({root}, include {list(domain.include) or '-'}, "
                           f"split {domain.split or '-'})")
    return [replace(it, domain=domain.name) for it in items]


def _in_split(items: list[Item], root: Path, split: str | None) -> list[Item]:
    """The items that root's labels.csv puts in `split` (all of them when split is None)."""
    if split is None:
        return items
    from .labels import stems_in_split

    keep = stems_in_split(root, split)
    return [it for it in items if it.image.stem in keep]


def _empty_mask(path: Path) -> bool:
    m = read_image_or_none(path, "gray")
    return m is not None and not m.any()


def read_rgb(path: Path) -> np.ndarray:
    return read_image(path, "rgb", error=DatasetError)


def read_mask(path: Path, image_shape: tuple[int, int], image: Path) -> np.ndarray:
    mask = read_image(path, "mask", error=DatasetError, what="mask ")
    if mask.shape[:2] != image_shape:
        raise DatasetError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image {image.name} is "
                           f"{image_shape[1]}x{image_shape[0]}",
                           "a training mask must have its image's size (width x height)")
    return np.where(mask > 0, 255, 0).astype(np.uint8)


def load_item(item: Item, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """(rgb, mask or None) at the model's input size."""
    rgb = read_rgb(item.image)
    if item.mask is not None:
        mask = read_mask(item.mask, rgb.shape[:2], item.image)
    elif item.has_mask:  # negatives and fire-free frames: the truth is "no fire anywhere"
        mask = np.zeros(rgb.shape[:2], np.uint8)
    else:
        mask = None
    return resize_to(rgb, mask, size)


def validate_items(items: list[Item]) -> None:
    """Read every mask header-to-pixel once before training: a bad pair fails now, not after an hour."""
    for it in items:
        if it.mask is not None:
            rgb_shape = _image_shape(it.image)
            read_mask(it.mask, rgb_shape, it.image)


def _image_shape(path: Path) -> tuple[int, int]:
    return read_image(path, "any", error=DatasetError).shape[:2]


def data_summary(items: list[Item], synthetic: int, epochs: int, seed: int) -> dict:
    """Exactly what was trained on: every file (path relative to its --data folder, sha256) and the synthetic
    frames' recipe."""
    by_kind: dict[str, int] = {}
    files = []
    for it in items:
        by_kind[it.kind] = by_kind.get(it.kind, 0) + 1
        files.append({"root": str(it.root), "image": it.rel(it.image), "mask": it.rel(it.mask), "kind": it.kind,
                      "label": it.label, "sha256": sha256_file(it.image), **({"domain": it.domain} if it.domain else {})})
    return {
        "real_frames": len(items), "by_kind": by_kind, "files": files,
        "synthetic": {"frames_per_epoch": synthetic, "frames_total": synthetic * epochs,
                      "generator": "firespotter.models.synthetic.SyntheticScene", "frames_per_scene": FRAMES_PER_SCENE,
                      "samples_per_rendered_frame": SYNTH_USES, "frames_rendered_per_epoch": -(-synthetic // SYNTH_USES),
                      "sizes": [f"{w}x{h}" for w, h in SYNTH_SIZES], "scene_seeds": f"derived from seed {seed} and epoch",
                      "shifts": list(SYNTH_SHIFTS)} if synthetic else None,
    }


class SyntheticEpoch:
    """The synthetic frames of one epoch, rendered on the fly; scenes are built lazily and reused by their
    frames (FRAMES_PER_SCENE frames per generated world)."""

    def __init__(self, n: int, seed: int, epoch: int, size: tuple[int, int], shift_prob: float = 0.3,
                 close_prob: float = 0.0):
        self.n, self.seed, self.epoch, self.size = n, seed, epoch, size
        self.shift_prob, self.close_prob = shift_prob, close_prob
        self._scene = None
        self._scene_k = -1

    def scene(self, k: int):
        from .synthetic import SyntheticScene

        if k != self._scene_k:
            rng = np.random.default_rng([self.seed, 7919, self.epoch, k])
            w, h = SYNTH_SIZES[int(rng.integers(len(SYNTH_SIZES)))]
            k_size = max(self.size) / 512.0  # the sizes are for a 512 px model; small models get small worlds
            w, h = max(32, int(w * k_size)), max(32, int(h * k_size))
            n_fires = 0 if rng.random() < 0.25 else None  # a quarter of the worlds burn nowhere: pure negatives
            shift = SYNTH_SHIFTS[int(rng.integers(len(SYNTH_SHIFTS)))] if rng.random() < self.shift_prob else None
            seed, strength = int(rng.integers(1 << 62)), float(rng.uniform(0.4, 1.2))
            zoom = 1.0
            if self.close_prob and rng.random() < self.close_prob:  # drawn last: close_prob=0 keeps older epochs
                zoom = float(np.exp(rng.uniform(*np.log(SYNTH_CLOSE_ZOOM))))
            self._scene = SyntheticScene(width=w, height=h, frames=FRAMES_PER_SCENE * 3, seed=seed, n_fires=n_fires,
                                         shift=shift, shift_strength=strength, zoom=zoom)
            self._scene_k = k
        return self._scene

    def frame(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        scene = self.scene(j // FRAMES_PER_SCENE)
        rgb, mask = scene.render((j % FRAMES_PER_SCENE) * 3 + 1)
        return resize_to(rgb, mask, self.size)


class EpochPlan:
    """What each epoch draws: real items by index (0..len(items)-1), then synthetic slots (len(items)..).

    Without domains: every real frame `repeat` times plus `synthetic` frames, shuffled (as before recipes).
    With domains: each domain's share of `samples_per_epoch`, real domains drawn as whole permutations."""

    def __init__(self, cfg: "TrainConfig", items: list[Item], domains: list, counts: list[int]):
        self.cfg, self.items, self.domains, self.counts = cfg, items, domains, counts
        self.by_domain: dict[str, list[int]] = {}
        for k, it in enumerate(items):
            self.by_domain.setdefault(it.domain, []).append(k)
        self.domain_frames = {name: len(ks) for name, ks in self.by_domain.items()}
        synth = [(d, c) for d, c in zip(domains, counts) if d.kind == "synthetic"]
        self.synthetic = sum(c for _, c in synth) if domains else cfg.synthetic
        self.synthetic_domain = synth[0][0].name if synth else ""
        self.paste_onto = {d.name: d.paste_onto for d in domains if d.paste_onto > 0}
        sources = {d.name for d in domains if d.paste_source}
        self.donors = [k for k, it in enumerate(items) if it.domain in sources and it.mask is not None
                       and it.label == 1]
        if self.paste_onto and not self.donors:
            raise TrainingError("a domain has paste_onto but no domain with paste_source = true has a fire mask")
        self.samples_per_epoch = (cfg.samples_per_epoch if domains
                                  else len(items) * cfg.repeat + cfg.synthetic)

    @classmethod
    def from_config(cls, cfg: "TrainConfig") -> "EpochPlan":
        if not cfg.domains:
            items = collect([Path(d) for d in cfg.data], [Path(d) for d in cfg.negatives], cfg.include, cfg.exclude)
            if not items and not cfg.synthetic:
                raise TrainingError("no training images found and --synthetic is 0")
            return cls(cfg, items, [], [])
        from .domains import Domain, epoch_counts

        domains = [Domain.from_dict(d) for d in cfg.domains]
        if sum(d.kind == "synthetic" for d in domains) > 1:
            raise TrainingError("at most one synthetic domain per recipe")
        items: list[Item] = []
        for d in domains:
            if d.kind != "synthetic":
                items.extend(collect_domain(d))
        return cls(cfg, items, domains, epoch_counts(domains, cfg.samples_per_epoch))

    def order(self, epoch: int) -> list[int]:
        cfg, n_items = self.cfg, len(self.items)
        erng = np.random.default_rng([cfg.seed, epoch])
        if not self.domains:
            n_real = n_items * cfg.repeat
            return [int(k) % n_items if k < n_real else n_items + int(k) - n_real
                    for k in erng.permutation(self.samples_per_epoch)]
        from .domains import draw

        plan: list[int] = []
        j = 0
        for i, (d, c) in enumerate(zip(self.domains, self.counts)):
            if d.kind == "synthetic":
                plan.extend(n_items + j + s for s in range(c))
                j += c
            else:
                plan.extend(draw(self.by_domain[d.name], c, np.random.default_rng([cfg.seed, epoch, 7, i])))
        return [plan[int(o)] for o in erng.permutation(len(plan))]


# --------------------------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    arch: str
    data: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    synthetic: int = 0  # synthetic frames per epoch
    epochs: int = 10
    repeat: int = 1  # each real frame appears this many times per epoch (fresh augmentation each time)
    batch: int = 12
    crop: int = 256
    input_size: tuple[int, int] | None = None  # (h, w); None = the architecture's
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 30  # optimizer steps
    loss: str = "bce-dice"
    head_weight: float = 0.3
    seed: int = 0
    amp: bool = False
    device: str = "cpu"
    threads: int | None = None
    val: list[str] = field(default_factory=list)
    val_include: list[str] = field(default_factory=list)
    val_negatives: list[str] = field(default_factory=list)
    val_synthetic: int = 0
    augment: dict = field(default_factory=dict)
    synthetic_shifts: float = 0.3  # fraction of synthetic worlds rendered under a camera shift (haze, dusk, ...)
    synthetic_close: float = 0.0  # fraction of synthetic worlds seen from low altitude (large fronts, close flames)
    calibrate: bool = True  # after training: move the 0.5 threshold to the best one on the training data
    ema: float = 0.995  # exponential moving average of the weights (0 = off): validated, calibrated and shipped
    light_epochs: int = 0  # the last N epochs use light augmentation (AugmentParams.light)
    domains: list[dict] = field(default_factory=list)  # domains.Domain tables: each domain's share of every epoch
    samples_per_epoch: int = 0  # with domains: samples drawn per epoch (split by the domains' shares)
    val_sets: list[dict] = field(default_factory=list)  # domains.ValSpec tables, scored after every epoch
    calibrate_on: str = "train"  # train: the training frames; val: the validation sets (every domain's scenes)
    init: str | None = None  # start from this checkpoint's weights (fine-tuning) instead of a random init
    arch_kwargs: dict = field(default_factory=dict)  # architecture options, e.g. {gated = true} for fireseg-lite
    teacher: str | None = None  # a checkpoint whose masks the model also learns on distill_domains' frames
    distill_domains: list[str] = field(default_factory=list)
    distill_weight: float = 1.0
    head_refit: bool = False  # after training: refit the frame head on whole training frames (models/headfit.py)

    # Settings that may differ between a run and its resumption (they do not change what is computed).
    # head_refit runs after the last epoch: resuming a finished run with it changed redoes only the steps after.
    RESUMABLE_CHANGES = ("threads", "head_refit")

    def __post_init__(self):
        from .arch import arch_info

        info = arch_info(self.arch)
        if self.input_size is None:
            self.input_size = info.input_size
        self.input_size = tuple(int(v) for v in self.input_size)
        if self.loss not in ("bce-dice", "focal-dice"):
            raise TrainingError(f"unknown loss {self.loss!r}; known: bce-dice, focal-dice")
        if not 0 <= self.light_epochs <= self.epochs:
            raise TrainingError(f"--light-epochs {self.light_epochs} must be between 0 and --epochs {self.epochs}")
        if not 0.0 <= self.synthetic_shifts <= 1.0:
            raise TrainingError(f"--synthetic-shifts {self.synthetic_shifts} must be a fraction between 0 and 1")
        if not 0.0 <= self.synthetic_close <= 1.0:
            raise TrainingError(f"synthetic_close {self.synthetic_close} must be a fraction between 0 and 1")
        if self.augment:
            from .augment import AugmentParams

            self.augment = {k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()}

            known = {f.name for f in fields(AugmentParams)}
            unknown = sorted(set(self.augment) - known)
            if unknown:
                raise TrainingError(f"--augment: unknown setting(s) {', '.join(unknown)}",
                                    f"known: {', '.join(sorted(known))}")
        if self.epochs < 1 or self.batch < 2 or self.repeat < 1:
            raise TrainingError("--epochs and --repeat must be at least 1 and --batch at least 2 (batch norm)")
        if self.crop % 32 or any(v % 32 for v in self.input_size):
            raise TrainingError(f"--crop {self.crop} and the input size {self.input_size} must be multiples of 32 "
                                "(the networks' largest stride)")
        if self.crop > min(self.input_size):
            raise TrainingError(f"--crop {self.crop} is larger than the input size {self.input_size}")
        if self.domains:
            from .domains import Domain

            doms = [Domain.from_dict(d) for d in self.domains]
            if self.data or self.negatives or self.synthetic or self.repeat != 1:
                raise TrainingError("a recipe with [[domains]] says what to train on; leave out --data, "
                                    "--negatives, --synthetic and --repeat")
            if self.samples_per_epoch < self.batch:
                raise TrainingError(f"samples_per_epoch {self.samples_per_epoch} must be at least the batch "
                                    f"({self.batch}) when training on domains")
            if len({d.name for d in doms}) != len(doms):
                raise TrainingError("two domains share a name; each domain needs its own")
        elif not self.data and not self.negatives and not self.synthetic:
            raise TrainingError("nothing to train on: give --data DIR and/or --synthetic N")
        if self.distill_domains and not self.teacher:
            raise TrainingError("distill_domains needs teacher = \"CHECKPOINT\"")
        if self.distill_domains:
            unknown = sorted(set(self.distill_domains) - {d.get("name") for d in self.domains})
            if unknown:
                raise TrainingError(f"distill_domains names no domain: {', '.join(unknown)}")
        if self.calibrate_on not in ("train", "val"):
            raise TrainingError(f"calibrate_on must be train or val, got {self.calibrate_on!r}")
        if self.calibrate_on == "val" and not (self.val_sets or self.val or self.val_negatives):
            raise TrainingError("calibrate_on = \"val\" needs validation sets ([[val]] in the recipe, or --val)")

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["input_size"] = list(self.input_size)
        return d



def augment_params(cfg: TrainConfig) -> AugmentParams:
    return AugmentParams(**cfg.augment) if cfg.augment else AugmentParams()


# --------------------------------------------------------------------------------------------- loss


def seg_loss(logits, target, weight, kind: str):
    """Mask loss over samples with weight 1 (those with a known mask). logits/target: N×1×H×W."""
    import torch
    import torch.nn.functional as F

    w = weight.view(-1, 1, 1, 1)
    if float(weight.sum()) == 0:
        return logits.sum() * 0.0
    logits = logits.float()
    if kind == "focal-dice":
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p = torch.sigmoid(logits)
        pt = p * target + (1 - p) * (1 - target)
        alpha = 0.75 * target + 0.25 * (1 - target)
        pix = alpha * (1 - pt) ** 2 * bce * 4.0
    else:
        pix = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pixel_term = (pix * w).sum() / (w.sum() * pix[0].numel())
    p = torch.sigmoid(logits) * w
    t = target * w
    dice = 1.0 - (2.0 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
    return pixel_term + dice


# --------------------------------------------------------------------------------------------- validation


def predict_frames(model, frames: list[np.ndarray], size: tuple[int, int], batch: int = 4):
    """Full frames (any size) -> (prob at each frame's size, fire score), as the backends compute them."""
    import torch

    from .arch import MEAN, STD

    mean = np.asarray(MEAN, np.float32).reshape(1, 3, 1, 1) * 255.0
    scale = 1.0 / (np.asarray(STD, np.float32).reshape(1, 3, 1, 1) * 255.0)
    probs, scores = [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            chunk = frames[i : i + batch]
            x = np.stack([resize_to(f, None, size)[0] for f in chunk]).transpose(0, 3, 1, 2).astype(np.float32)
            x = (x - mean) * scale
            logits, fire = model(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))
            p = torch.sigmoid(logits.float())[:, 0].numpy()
            s = torch.sigmoid(fire.float())[:, 0].numpy()
            for f, pi, si in zip(chunk, p, s):
                probs.append(cv2.resize(pi, (f.shape[1], f.shape[0]), interpolation=cv2.INTER_LINEAR)
                             if pi.shape != f.shape[:2] else pi)
                scores.append(float(si))
    return probs, scores


@dataclass
class ValSet:
    name: str
    frames: list[np.ndarray]
    masks: list[np.ndarray]  # bool, frame size


def _frames_and_masks(items: list[Item]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """RGB frames and boolean fire masks of labelled items, each mask checked against its image's size."""
    frames, masks = [], []
    for it in items:
        rgb = read_rgb(it.image)
        m = read_mask(it.mask, rgb.shape[:2], it.image) if it.mask is not None else np.zeros(rgb.shape[:2], np.uint8)
        frames.append(rgb)
        masks.append(m > 0)
    return frames, masks


def load_val_sets(cfg: TrainConfig) -> list[ValSet]:
    sets = []
    for root in cfg.val:
        items = collect([Path(root)], include=cfg.val_include)
        items = [it for it in items if it.has_mask]
        frames, masks = _frames_and_masks(items)
        sets.append(ValSet(Path(root).name + (f"[{','.join(cfg.val_include)}]" if cfg.val_include else ""),
                           frames, masks))
    for root in cfg.val_negatives:
        items = collect([], negatives=[Path(root)])
        frames = [read_rgb(it.image) for it in items]
        sets.append(ValSet(Path(root).name + "(negatives)", frames, [np.zeros(f.shape[:2], bool) for f in frames]))
    if cfg.val_synthetic:
        sets.append(synthetic_val_set(f"synthetic({cfg.val_synthetic})", cfg.val_synthetic, size_of(cfg)))
    sets.extend(load_val_spec(spec, size_of(cfg)) for spec in cfg.val_sets)
    return sets


def load_val_spec(spec: dict, size: tuple[int, int]) -> ValSet:
    """A recipe's [[val]] set. Negative sets are named 'NAME(negatives)': their IoU says nothing, their share of
    pixels called fire does."""
    from .domains import ValSpec

    v = ValSpec.from_dict(spec)
    if v.kind == "synthetic":
        return synthetic_val_set(v.name, v.frames, size)
    root = Path(v.folder)
    items = (collect([], negatives=[root], include=v.include) if v.kind == "negatives"
             else collect([root], include=v.include))
    items = [it for it in _in_split(items, root, v.split) if it.has_mask]
    if not items:
        raise DatasetError(f"val set {v.name!r} has no frames ({root}, include {list(v.include) or '-'}, "
                           f"split {v.split or '-'})")
    frames, masks = _frames_and_masks(items)
    if v.kind == "negatives" or not any(m.any() for m in masks):
        return ValSet(f"{v.name}(negatives)", frames, [np.zeros(f.shape[:2], bool) for f in frames])
    return ValSet(v.name, frames, masks)


def synthetic_val_set(name: str, n: int, size: tuple[int, int]) -> ValSet:
    """n synthetic frames at the model's input size, from seeds no training scene uses."""
    from .synthetic import SyntheticScene

    frames, masks = [], []
    for k in range(n):
        scene = SyntheticScene(width=size[1], height=size[0], frames=5, seed=10_000_019 + k)
        rgb, m = scene.render(2)
        frames.append(rgb)
        masks.append(m > 0)
    return ValSet(name, frames, masks)


def size_of(cfg: TrainConfig) -> tuple[int, int]:
    return tuple(cfg.input_size)


def score_set(model, vs: ValSet, size, threshold: float = 0.5) -> dict:
    probs, scores = predict_frames(model, vs.frames, size)
    tp = fp = fn = 0
    correct = 0
    for p, m, s in zip(probs, vs.masks, scores):
        pred = p > threshold
        tp += int(np.count_nonzero(pred & m))
        fp += int(np.count_nonzero(pred & ~m))
        fn += int(np.count_nonzero(~pred & m))
        correct += int((s >= 0.5) == bool(m.any()))
    total_px = sum(m.size for m in vs.masks)
    return {"iou": tp / (tp + fp + fn) if tp + fp + fn else None,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
            "fire_px_rate": (tp + fp) / total_px, "head_accuracy": correct / max(1, len(vs.frames))}


# --------------------------------------------------------------------------------------------- calibration

CALIBRATION_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(2, 20))  # 0.10 .. 0.95


def _iou_by_threshold(probs, masks) -> dict[float, float]:
    out = {}
    for t in CALIBRATION_THRESHOLDS:
        tp = fp = fn = 0
        for p, m in zip(probs, masks):
            pred = p > t
            tp += int(np.count_nonzero(pred & m))
            fp += int(np.count_nonzero(pred & ~m))
            fn += int(np.count_nonzero(~pred & m))
        out[t] = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    return out


def calibrate(model, items: list[Item], cfg: TrainConfig, size: tuple[int, int]) -> dict:
    """Pick the threshold that maximises IoU on the training data (every real training frame with a mask, whole
    and unaugmented, and synthetic frames from scenes drawn like the training ones but never trained on), then
    shift the mask logit's bias so that 0.5 means that threshold. Only training data: the validation sets stay
    untouched. The mean of the real and the synthetic IoU is maximised, so neither set's pixel count dominates."""
    import torch

    sets: dict[str, tuple[list, list]] = {}
    real = [it for it in items if it.has_mask]
    if real:
        frames, masks = _frames_and_masks(real)
        sets["training frames"] = (frames, masks)
    if cfg.synthetic:
        synth = SyntheticEpoch(min(48, max(12, cfg.synthetic // 4)), cfg.seed, cfg.epochs, size)  # epoch index never trained
        pairs = [synth.frame(j) for j in range(synth.n)]
        sets["synthetic (training distribution)"] = ([a for a, _ in pairs], [b > 0 for _, b in pairs])
    curves = {}
    for name, (frames, masks) in sets.items():
        probs, _ = predict_frames(model, frames, size)
        curves[name] = _iou_by_threshold(probs, masks)
    if not curves:
        return {"threshold": 0.5, "bias_shift": 0.0, "note": "no labelled training frames"}
    mean = {t: float(np.mean([c[t] for c in curves.values()])) for t in CALIBRATION_THRESHOLDS}
    best = max(CALIBRATION_THRESHOLDS, key=lambda t: (mean[t], -abs(t - 0.5)))
    shift = -math.log(best / (1.0 - best))
    with torch.no_grad():
        model.logit.bias += shift
    return {"threshold": best, "bias_shift": shift, "mean_iou_at_0.5": mean[0.5], "mean_iou_at_threshold": mean[best],
            "sets": {name: {"frames": len(sets[name][0]), "iou_at_0.5": c[0.5], "iou_at_threshold": c[best]}
                     for name, c in curves.items()}}


NEGATIVE_PX_BUDGET = 0.0005  # calibration on validation: at most 0.05 % of a negative set's pixels called fire


def calibrate_on_val(model, val_sets: list[ValSet], size: tuple[int, int]) -> dict:
    """Pick one threshold for every domain on the validation sets: the best mean IoU over the sets with fire,
    among the thresholds that keep every negative set under NEGATIVE_PX_BUDGET of its pixels called fire (or, if
    none does, the one with the smallest excess); then shift the logit's bias so that 0.5 means it."""
    import torch

    fire_curves, neg_curves, frames = {}, {}, {}
    for vs in val_sets:
        frames[vs.name] = len(vs.frames)
        probs, _ = predict_frames(model, vs.frames, size)
        if any(m.any() for m in vs.masks):
            fire_curves[vs.name] = _iou_by_threshold(probs, vs.masks)
        else:
            total = sum(p.size for p in probs)
            neg_curves[vs.name] = {t: sum(int(np.count_nonzero(p > t)) for p in probs) / total
                                   for t in CALIBRATION_THRESHOLDS}
    if not fire_curves:
        return {"threshold": 0.5, "bias_shift": 0.0, "note": "no validation set with fire"}
    mean = {t: float(np.mean([c[t] for c in fire_curves.values()])) for t in CALIBRATION_THRESHOLDS}
    excess = {t: sum(max(0.0, c[t] - NEGATIVE_PX_BUDGET) for c in neg_curves.values()) for t in CALIBRATION_THRESHOLDS}
    feasible = [t for t in CALIBRATION_THRESHOLDS if excess[t] == 0.0]
    if feasible:
        best = max(feasible, key=lambda t: (mean[t], -abs(t - 0.5)))
    else:
        best = min(CALIBRATION_THRESHOLDS, key=lambda t: (excess[t], -mean[t]))
    shift = -math.log(best / (1.0 - best))
    with torch.no_grad():
        model.logit.bias += shift
    return {"on": "validation", "threshold": best, "bias_shift": shift, "mean_iou_at_0.5": mean[0.5],
            "mean_iou_at_threshold": mean[best], "negative_px_budget": NEGATIVE_PX_BUDGET,
            "sets": {**{n: {"frames": frames[n], "iou_at_0.5": c[0.5],
                            "iou_at_threshold": c[best]} for n, c in fire_curves.items()},
                     **{n: {"fire_px_at_0.5": c[0.5], "fire_px_at_threshold": c[best]} for n, c in neg_curves.items()}}}


# --------------------------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    out: Path
    checkpoint: Path
    history: list[dict]
    wall_s: float
    resumed_from_epoch: int | None = None


def head_refit_frames(items: list[Item], real, plan: "EpochPlan", cfg: TrainConfig, size: tuple[int, int]):
    """Whole training frames for head_refit, each also mirrored, plus synthetic frames when the recipe trains on
    them: (frames, labels). Only what training drew from: never a validation frame."""
    frames, labels = [], []
    for k, item in enumerate(items):
        rgb, mask = real(k)
        label = int(mask.any()) if item.has_mask else int(item.label)
        frames += [rgb, np.ascontiguousarray(rgb[:, ::-1])]
        labels += [label, label]
    if plan.synthetic:
        # An epoch index no training epoch used: worlds drawn the same way, never seen by the network.
        synth = SyntheticEpoch(2 * HEAD_REFIT_SYNTHETIC, cfg.seed, cfg.epochs, size, cfg.synthetic_shifts,
                               cfg.synthetic_close)
        for j in range(0, 2 * HEAD_REFIT_SYNTHETIC, 2):
            rgb, mask = synth.frame(j)
            frames.append(rgb)
            labels.append(int(mask.any()))
    return frames, labels


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _versions() -> dict:
    import torch

    import firespotter

    return {"firespotter": firespotter.__version__, "torch": str(torch.__version__), "numpy": np.__version__,
            "opencv": cv2.__version__, "python": platform.python_version(), "machine": platform.machine()}


def train(cfg: TrainConfig, out: Path, *, resume: bool = False, command: str | None = None,
          on_progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `cfg.arch`, writing OUT/last.pt every epoch and OUT/model.pt + OUT/train.json at the end."""
    import torch

    from .arch import MEAN, STD, build, count_params

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.pt"
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda: CUDA is not available here", "use --device cpu")

    plan = EpochPlan.from_config(cfg)
    items = plan.items
    init_record = None
    teacher = None
    if cfg.teacher:
        teacher = model_from_checkpoint(load_checkpoint(Path(cfg.teacher))).to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    validate_items(items)
    size = tuple(cfg.input_size)
    aug = augment_params(cfg)
    val_sets = load_val_sets(cfg)

    torch.manual_seed(cfg.seed)
    model = build(cfg.arch, **cfg.arch_kwargs).to(device).to(memory_format=torch.channels_last)
    if cfg.init:
        from .arch import grow_state, load_state

        start = load_checkpoint(Path(cfg.init))
        if start.get("arch") != cfg.arch:
            raise TrainingError(f"--init {cfg.init} is a {start.get('arch')} checkpoint, not {cfg.arch}")
        state, added = grow_state(model, start["model"])
        load_state(model, state, str(cfg.init))
        init_record = {"checkpoint": str(cfg.init), "sha256": sha256_file(Path(start["path"])),
                       "command": start.get("command"), "data": start.get("data")}
        if added:
            init_record["added"] = sorted({k.split(".")[0] for k in added})
            log.info("--init %s: %s added on top of its weights (starting as a near no-op)", cfg.init,
                     ", ".join(init_record["added"]))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    n_samples = plan.samples_per_epoch
    steps_per_epoch = max(1, n_samples // cfg.batch)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = min(cfg.warmup, max(1, total_steps // 10))  # short runs (tests) must not spend themselves warming up
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total_steps, warmup))
    amp_dtype = None
    if cfg.amp:
        amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda") if (cfg.amp and device.type == "cuda") else None

    ema = None
    if cfg.ema:
        import copy

        ema = copy.deepcopy(model).eval()
        for p in ema.parameters():
            p.requires_grad_(False)

    def update_ema(step_no: int) -> None:
        # Early on the average follows the model closely (decay grows to cfg.ema), as timm's ModelEmaV2 does.
        d = min(cfg.ema, (1.0 + step_no) / (10.0 + step_no))
        with torch.no_grad():
            for e, p in zip(ema.state_dict().values(), model.state_dict().values()):
                if e.dtype.is_floating_point:
                    e.mul_(d).add_(p.detach(), alpha=1.0 - d)
                else:
                    e.copy_(p)

    history: list[dict] = []
    start_epoch, step, wall_before = 0, 0, 0.0
    resumed_from = None
    if resume and last.is_file():
        ckpt = load_checkpoint(last)
        stored = ckpt.get("config", {})
        mine = cfg.as_dict()
        # A setting newer than the checkpoint counts as its default there: the default computes what the older
        # version did (every new setting is added that way).
        defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(TrainConfig)
                    if f.default is not MISSING or f.default_factory is not MISSING}
        diffs = [k for k in mine if k not in TrainConfig.RESUMABLE_CHANGES
                 and stored.get(k, defaults.get(k)) != mine[k]]
        if diffs:
            raise TrainingError(f"{last} was trained with other settings ({', '.join(diffs)} differ)",
                                "resume with the same options, or choose another --out")
        from .arch import load_state

        load_state(model, ckpt["train_model"] if "train_model" in ckpt else ckpt["model"], str(last))
        if ema is not None:
            load_state(ema, ckpt["model"], str(last))
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step = int(ckpt["epoch"]) + 1, int(ckpt["step"])
        history = list(ckpt.get("history", []))
        wall_before = float(ckpt.get("wall_s", 0.0))
        resumed_from = int(ckpt["epoch"])
        log.info("resuming from %s after epoch %d", last, resumed_from + 1)
    elif resume:
        log.info("--resume: no %s yet, starting fresh", last)

    cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    cache_budget = 1 << 30
    cache_bytes = 0

    def real(k: int):
        nonlocal cache_bytes
        if k in cache:
            return cache[k]
        rgb, mask = load_item(items[k], size)
        nbytes = rgb.nbytes + (mask.nbytes if mask is not None else 0)
        if cache_bytes + nbytes <= cache_budget:
            cache[k] = (rgb, mask)
            cache_bytes += nbytes
        return rgb, mask

    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255.0
    t_start = time.monotonic()
    base = {"arch": cfg.arch, "arch_kwargs": dict(cfg.arch_kwargs), "input_size": list(size), "mean": list(MEAN), "std": list(STD),
            "output": "logits", "params": count_params(model)}

    light = aug.settled()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        aug_e = light if epoch >= cfg.epochs - cfg.light_epochs else aug
        order = plan.order(epoch)
        n_synth = plan.synthetic
        synth = (SyntheticEpoch(n_synth, cfg.seed, epoch, size, cfg.synthetic_shifts, cfg.synthetic_close)
                 if n_synth else None)
        # Render synthetic frames in index order (scene reuse), then look them up during the epoch.
        synth_frames = [synth.frame(j) for j in range(-(-n_synth // SYNTH_USES))] if synth else []
        losses = []
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch : (b + 1) * cfg.batch]
            xs, ys, ws, labels, distilled = [], [], [], [], []
            for pos, k in zip(range(b * cfg.batch, (b + 1) * cfg.batch), idx):
                rng = np.random.default_rng([cfg.seed, epoch, int(pos)])
                k = int(k)
                if k < len(items):
                    item = items[k]
                    rgb, mask = real(k)
                    known, domain = item.has_mask, item.domain
                else:
                    rgb, mask = synth_frames[(k - len(items)) // SYNTH_USES]
                    known, domain = True, plan.synthetic_domain
                onto = plan.paste_onto.get(domain, 0.0)
                pasted = False
                if known and onto > 0 and plan.donors and rng.random() < onto:
                    donor_rgb, donor_mask = real(plan.donors[int(rng.integers(len(plan.donors)))])
                    rgb, mask = paste_flame(rgb, mask, donor_rgb, donor_mask, rng)
                    pasted = True
                distilled.append(teacher is not None and domain in cfg.distill_domains and not pasted)
                if known:
                    crop_rgb, crop_mask = augment(rgb, mask, cfg.crop, rng, aug_e)
                    label = int(crop_mask.any())  # the head's target: any fire pixel in what the network sees
                else:  # a fire frame without a mask: keep the whole frame so that the label stays true
                    small = cv2.resize(rgb, (cfg.crop, cfg.crop), interpolation=cv2.INTER_AREA)
                    no_geo = AugmentParams(**{**asdict(aug_e), "scale": (1.0, 1.0), "rotate": False,
                                              "fire_centred": 0.0})
                    crop_rgb, _ = augment(small, None, cfg.crop, rng, no_geo)
                    crop_mask = np.zeros((cfg.crop, cfg.crop), np.uint8)
                    label = item.label
                xs.append(crop_rgb)
                ys.append(crop_mask)
                ws.append(1.0 if known else 0.0)
                labels.append(float(label))
            x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float()
            x = ((x - mean) / std).contiguous(memory_format=torch.channels_last).to(device)
            y = torch.from_numpy(np.stack(ys)[:, None].astype(np.float32) / 255.0).to(device)
            w = torch.tensor(ws, device=device)
            lab = torch.tensor(labels, device=device).view(-1, 1)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits, fire = model(x)
            loss_seg = seg_loss(logits.float(), y, w, cfg.loss)
            loss_head = torch.nn.functional.binary_cross_entropy_with_logits(fire.float(), lab)
            loss = loss_seg + cfg.head_weight * loss_head
            if any(distilled):  # learning without forgetting: the teacher's masks on its own domains
                keep = torch.tensor(distilled, device=device)
                with torch.no_grad():
                    soft = torch.sigmoid(teacher(x[keep])[0].float())
                loss = loss + cfg.distill_weight * torch.nn.functional.binary_cross_entropy_with_logits(
                    logits[keep].float(), soft)
            if not torch.isfinite(loss.detach()):
                raise TrainingError(f"the loss became {float(loss)} at epoch {epoch + 1}, step {step + 1}",
                                    "lower --lr, or train without --amp")
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            sched.step()
            if ema is not None:
                update_ema(step)
            step += 1
            losses.append(float(loss.detach()))
            if on_progress:
                on_progress({"epoch": epoch + 1, "epochs": cfg.epochs, "step": b + 1, "steps": steps_per_epoch,
                             "loss": float(np.mean(losses[-20:])), "val": history[-1]["val"] if history else {}})
        model.eval()
        served = ema if ema is not None else model  # what validation sees is what ships
        val = {vs.name: score_set(served, vs, size) for vs in val_sets}
        record = {"epoch": epoch + 1, "step": step, "loss": float(np.mean(losses)) if losses else None,
                  "lr": float(sched.get_last_lr()[0]), "val": val,
                  "wall_s": round(wall_before + time.monotonic() - t_start, 1)}
        history.append(record)
        log.info("epoch %d/%d loss %.4f %s", epoch + 1, cfg.epochs, record["loss"] or float("nan"),
                 " ".join(f"{k} IoU {v['iou'] if v['iou'] is None else round(v['iou'], 4)}" for k, v in val.items()))
        save_checkpoint(last, {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **base,
            "model": {k: v.detach().cpu() for k, v in served.state_dict().items()},
            **({"train_model": {k: v.detach().cpu() for k, v in model.state_dict().items()}} if ema is not None else {}),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch, "step": step, "history": history, "config": cfg.as_dict(),
            "wall_s": record["wall_s"], "amp": _amp_label(amp_dtype), "command": command,
        })
        if on_progress:  # after the checkpoint: an interrupted run resumes from this epoch's end
            on_progress({"epoch": epoch + 1, "epochs": cfg.epochs, "step": steps_per_epoch, "steps": steps_per_epoch,
                         "loss": record["loss"], "val": val, "end_of_epoch": True})

    if ema is not None:
        model = ema
    refit = None
    if cfg.head_refit:
        from .headfit import refit_frame_head

        frames, labels = head_refit_frames(items, real, plan, cfg, size)
        refit = refit_frame_head(model, frames, labels, MEAN, STD)
        del frames
        log.info("frame head refitted on %d whole training frames (%d with fire): accuracy %.3f -> %.3f%s",
                 refit["frames"], refit["with_fire"], refit["accuracy_before"], refit["accuracy_after"],
                 " (diverged: the trained head was kept)" if refit.get("diverged") else "")
    calibration = None
    if cfg.calibrate and cfg.calibrate_on == "val":
        calibration = calibrate_on_val(model, val_sets, size)
        log.info("calibrated on validation: threshold %.2f is now 0.5", calibration["threshold"])
    elif cfg.calibrate:
        calibration = calibrate(model, items, cfg, size)
        log.info("calibrated: threshold %.2f on the training data is now 0.5", calibration["threshold"])
    wall = wall_before + time.monotonic() - t_start
    summary = data_summary(items, plan.synthetic, cfg.epochs, cfg.seed)
    if plan.domains:
        summary["domains"] = [{**d.as_dict(), "frames": plan.domain_frames.get(d.name), "samples_per_epoch": c}
                              for d, c in zip(plan.domains, plan.counts)]
        summary["samples_per_epoch"] = plan.samples_per_epoch
        summary["paste_donors"] = len(plan.donors)
    if cfg.teacher:
        summary["teacher"] = {"checkpoint": cfg.teacher, "sha256": sha256_file(Path(cfg.teacher)),
                              "domains": list(cfg.distill_domains), "weight": cfg.distill_weight}
    if init_record is not None:  # fine-tuned: what the starting weights were trained on was trained on too
        summary["init"] = {k: v for k, v in init_record.items() if k != "data"}
        earlier = (init_record.get("data") or {}).get("files", [])
        summary["files"] = summary["files"] + [{**f, "via": "init"} for f in earlier]
        if (init_record.get("data") or {}).get("synthetic"):
            summary["init"]["synthetic"] = init_record["data"]["synthetic"]
    final = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **base,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": cfg.epochs - 1, "step": step, "history": history, "config": cfg.as_dict(), "wall_s": round(wall, 1),
        "amp": _amp_label(amp_dtype), "command": command, "seed": cfg.seed, "epochs": cfg.epochs,
        "threads": torch.get_num_threads(), "device": str(device), "versions": _versions(),
        "data": summary, "calibration": calibration, **({"head_refit": refit} if refit is not None else {}),
    }
    save_checkpoint(out / "model.pt", final)
    record = {k: v for k, v in final.items() if k != "model"}
    (out / "train.json").write_text(json.dumps(record, indent=2) + "\n")
    return TrainResult(out, out / "model.pt", history, wall, resumed_from)


def _amp_label(dtype) -> str | None:
    if dtype is None:
        return None
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(dtype), str(dtype))
