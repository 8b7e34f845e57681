"""Training domains: named groups of frames, each with its share of every epoch.

One model must see small aerial fires (FLAME: a few hundred pixels of a 512 px frame) and frame-filling flames
(ground and oblique views) in the same epoch; folded into one list, whichever set has more frames drowns the
other. A domain names its frames (folder, globs, a labels.csv split) and its `share` of the samples drawn per
epoch; within a domain the frames are drawn as whole permutations, so every frame is seen before any repeats.

A domain can also give its flames to others: `paste_source = true` makes its masked flames cut-outs, and
`paste_onto = P` pastes one onto a frame of this domain with probability P (real flames on aerial and
negative backgrounds, at any size).

A recipe is a TOML file of TrainConfig fields plus `[[domains]]` and `[[val]]` tables
(`firespotter train --recipe FILE`); paths are relative to the current directory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.tomlfile import load_toml

KINDS = ("masks", "negatives", "synthetic")
MAX_RECIPE_BYTES = 1 << 20  # a recipe is a few kilobytes of TOML; bounded before it is parsed


class RecipeError(FirespotterError):
    """A recipe or domain that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Domain:
    name: str
    share: float
    kind: str = "masks"  # masks: images/ + masks/ (empty masks are negatives); negatives: no masks; synthetic
    folder: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    split: str | None = None  # keep only the images that the folder's labels.csv puts in this split
    paste_source: bool = False
    paste_onto: float = 0.0

    def __post_init__(self):
        where = f"domain {self.name!r}"
        if self.kind not in KINDS:
            raise RecipeError(f"{where}: unknown kind {self.kind!r}; known: {', '.join(KINDS)}")
        if not (math.isfinite(self.share) and self.share > 0):
            raise RecipeError(f"{where}: share must be a positive number, got {self.share!r}")
        if not (math.isfinite(self.paste_onto) and 0.0 <= self.paste_onto <= 1.0):
            raise RecipeError(f"{where}: paste_onto is a probability between 0 and 1, got {self.paste_onto!r}")
        if self.kind == "synthetic":
            if self.folder or self.split or self.paste_source:
                raise RecipeError(f"{where}: a synthetic domain takes no folder, split or paste_source")
        elif not self.folder:
            raise RecipeError(f"{where}: kind {self.kind} needs folder = \"PATH\"")

    @classmethod
    def from_dict(cls, d: dict) -> "Domain":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RecipeError(f"domain {d.get('name', '?')!r}: unknown key(s) {', '.join(unknown)}",
                              f"known: {', '.join(sorted(known))}")
        if "name" not in d or "share" not in d:
            raise RecipeError(f"a domain needs name and share, got {sorted(d)}")
        d = dict(d)
        for key in ("include", "exclude"):
            if isinstance(d.get(key), str):
                d[key] = (d[key],)
            d[key] = tuple(d.get(key, ()))
        return cls(**d)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["include"], out["exclude"] = list(self.include), list(self.exclude)
        return out


def epoch_counts(domains: list[Domain], samples: int) -> list[int]:
    """Samples per domain in an epoch of `samples`, proportional to the shares (largest remainders)."""
    total = sum(d.share for d in domains)
    exact = [samples * d.share / total for d in domains]
    counts = [int(math.floor(x)) for x in exact]
    for i in sorted(range(len(domains)), key=lambda i: exact[i] - counts[i], reverse=True)[: samples - sum(counts)]:
        counts[i] += 1
    return counts


def draw(pool: list[int], n: int, rng: np.random.Generator) -> list[int]:
    """n members of pool: whole permutations first, so that every member comes before any repeats."""
    out: list[int] = []
    while len(out) < n and pool:
        out.extend(int(pool[i]) for i in rng.permutation(len(pool))[: n - len(out)])
    return out


@dataclass
class Recipe:
    """A recipe file: TrainConfig settings, the training domains and the validation sets."""

    settings: dict = field(default_factory=dict)
    domains: list[dict] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)


def load_recipe(path: Path) -> Recipe:
    data = load_toml(path, "recipe", RecipeError, MAX_RECIPE_BYTES)
    domains = data.pop("domains", [])
    val = data.pop("val", [])
    if not isinstance(domains, list) or not domains:
        raise RecipeError(f"recipe {path} has no [[domains]] table")
    for d in domains:  # fail now, naming the domain, not after the data is loaded
        Domain.from_dict(d)
    for v in val:
        ValSpec.from_dict(v)
    return Recipe(settings=data, domains=domains, val=val)


@dataclass(frozen=True)
class ValSpec:
    """A validation set scored after every epoch (and used for threshold calibration when asked)."""

    name: str
    folder: str | None = None
    kind: str = "masks"  # masks | negatives | synthetic
    include: tuple[str, ...] = ()
    split: str | None = None
    frames: int = 0  # synthetic only

    def __post_init__(self):
        if self.kind not in KINDS:
            raise RecipeError(f"val set {self.name!r}: unknown kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.kind == "synthetic" and self.frames < 1:
            raise RecipeError(f"val set {self.name!r}: a synthetic set needs frames = N (N >= 1)")
        if self.kind != "synthetic" and not self.folder:
            raise RecipeError(f"val set {self.name!r}: kind {self.kind} needs folder = \"PATH\"")

    @classmethod
    def from_dict(cls, d: dict) -> "ValSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown or "name" not in d:
            raise RecipeError(f"val set {d.get('name', '?')!r}: unknown key(s) {', '.join(unknown) or '-'} "
                              f"(name is required)", f"known: {', '.join(sorted(known))}")
        d = dict(d)
        if isinstance(d.get("include"), str):
            d["include"] = (d["include"],)
        d["include"] = tuple(d.get("include", ()))
        return cls(**d)
