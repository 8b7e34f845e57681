"""Training on domains: shares per epoch, splits from labels.csv, flame pasting, and crops wide enough that a
frame-filling flame and a FLAME-size fire are both common."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest

from firespotter.models.augment import AugmentParams, augment, paste_flame
from firespotter.models.domains import Domain, RecipeError, draw, epoch_counts, load_recipe
from firespotter.models.training import EpochPlan, TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "firespotter" / "models" / "recipes" / "fireseg-lite.toml"


def test_epoch_counts_follow_the_shares_and_draws_cover_a_domain_before_repeating():
    doms = [Domain("a", 0.3, folder="x"), Domain("b", 0.5, folder="y"), Domain("s", 0.2, kind="synthetic")]
    assert epoch_counts(doms, 100) == [30, 50, 20]
    assert sum(epoch_counts(doms, 97)) == 97
    picks = draw([5, 6, 7], 7, np.random.default_rng(0))
    assert sorted(picks[:3]) == [5, 6, 7] and sorted(picks[3:6]) == [5, 6, 7] and len(picks) == 7


def test_bad_domains_are_named():
    with pytest.raises(RecipeError, match="unknown kind"):
        Domain.from_dict({"name": "a", "share": 1, "kind": "video", "folder": "x"})
    with pytest.raises(RecipeError, match="share must be a positive number"):
        Domain.from_dict({"name": "a", "share": float("inf"), "folder": "x"})
    with pytest.raises(RecipeError, match="unknown key"):
        Domain.from_dict({"name": "a", "share": 1, "folder": "x", "shares": 2})


def test_shipped_recipe_never_trains_on_evaluation_data():
    recipe = load_recipe(RECIPE)
    suite = tomllib.loads((REPO / "eval" / "suite.toml").read_text())["sets"]
    for d in recipe.domains:
        assert d.get("split") in (None, "train")
        assert not any("flame1_t01" in g for g in d.get("include", []))
        assert "classification" not in d.get("folder", "") and "aerial_thermal_proxy" not in d.get("folder", "")
    assert {s["name"] for s in suite} >= {"flame-split", "large-flames-val", "hard-negatives-val", "smoke-negatives",
                                          "synthetic-val", "furg_house6", "classification"}


def big_flame(size=512):
    """A frame whose flame covers about 30 % (the large-flame scenes: 1-39 % of the frame)."""
    rgb = np.full((size, size, 3), (70, 80, 90), np.uint8)
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (size // 2, size // 2), (size // 3, size // 4), 0, 0, 360, 255, -1)
    rgb[mask > 0] = (255, 170, 40)
    return rgb, mask


def test_a_frame_filling_flame_appears_in_the_training_crops():
    cfg = tomllib.loads(RECIPE.read_text())
    params = AugmentParams(scale=tuple(cfg["augment"]["scale"]))
    rgb, mask = big_flame()
    fractions = []
    for k in range(60):
        _, m = augment(rgb, mask, cfg["crop"], np.random.default_rng(k), params)
        fractions.append(float((m > 0).mean()))
    assert sum(f >= 0.9 for f in fractions) >= 6  # frame-filling: at least 90 % of the crop is flame
    # ...and a FLAME-size fire (a few hundred pixels of the 512 px frame) stays small in most crops
    small = np.zeros((512, 512), np.uint8)
    small[200:216, 300:318] = 255
    sizes = [int((augment(rgb, small, cfg["crop"], np.random.default_rng(k), params)[1] > 0).sum())
             for k in range(30)]
    assert np.median([s for s in sizes if s]) < 0.05 * cfg["crop"] ** 2


def test_paste_flame_blends_a_real_cutout_and_extends_the_mask():
    donor_rgb, donor_mask = big_flame(256)
    bg = np.full((512, 512, 3), 30, np.uint8)
    out, m = paste_flame(bg, None, donor_rgb, donor_mask, np.random.default_rng(3))
    assert m.any() and (out[m > 0] != 30).all(axis=-1).mean() > 0.95
    assert (out[m == 0] == 30).mean() > 0.8  # only the flame and its feathered edge change
    empty, m2 = paste_flame(bg, None, donor_rgb, np.zeros_like(donor_mask), np.random.default_rng(3))
    assert not m2.any() and (empty == bg).all()


def labelled_set(root: Path):
    """images/ + masks/ + labels.csv: two fire scenes (train, val) and a negative."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["image,split,scene"]
    for name, split, fire in [("fire_a", "train", True), ("fire_b", "val", True), ("neg_a", "train", False)]:
        rgb, mask = big_flame(64)
        if not fire:
            rgb[:] = (200, 80, 40)
            mask[:] = 0
        cv2.imwrite(str(root / "images" / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"{name}.png"), mask)
        rows.append(f"{name}.png,{split},{name}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def test_training_on_domains_uses_only_the_train_split_and_lists_it(tmp_path):
    labelled_set(tmp_path / "data")
    folder = str(tmp_path / "data")
    cfg = TrainConfig(arch="fireseg-lite", input_size=(64, 64), crop=64, batch=4, epochs=1, samples_per_epoch=8,
                      calibrate_on="val", arch_kwargs={"gated": True},
                      domains=[{"name": "fire", "folder": folder, "include": ["fire_*"], "split": "train",
                                "share": 0.5, "paste_source": True},
                               {"name": "neg", "folder": folder, "include": ["neg_*"], "share": 0.25,
                                "paste_onto": 0.5},
                               {"name": "synth", "kind": "synthetic", "share": 0.25}],
                      val_sets=[{"name": "val", "folder": folder, "include": ["fire_*"], "split": "val"}])
    plan = EpochPlan.from_config(cfg)
    assert sorted(it.image.stem for it in plan.items) == ["fire_a", "neg_a"]
    assert [it.label for it in plan.items if it.image.stem == "neg_a"] == [0]  # empty mask: the head learns "no"
    order = plan.order(0)
    assert len(order) == 8 and sum(k >= len(plan.items) for k in order) == 2  # 25 % synthetic
    result = train(cfg, tmp_path / "out")
    record = json.loads((tmp_path / "out" / "train.json").read_text())
    assert {f["image"] for f in record["data"]["files"]} == {"images/fire_a.png", "images/neg_a.png"}
    assert [d["name"] for d in record["data"]["domains"]] == ["fire", "neg", "synth"]
    assert record["calibration"]["on"] == "validation" and record["arch_kwargs"] == {"gated": True}
    assert result.history[0]["val"]["val"]["iou"] is not None


def test_distillation_from_a_teacher_on_named_domains(tmp_path):
    labelled_set(tmp_path / "data")
    folder = str(tmp_path / "data")
    domains = [{"name": "fire", "folder": folder, "include": ["fire_*"], "split": "train", "share": 0.75},
               {"name": "synth", "kind": "synthetic", "share": 0.25}]
    base = dict(arch="fireseg-lite", input_size=(64, 64), crop=64, batch=4, epochs=1, samples_per_epoch=8,
                calibrate=False, domains=domains)
    train(TrainConfig(**base), tmp_path / "teacher")
    teacher = str(tmp_path / "teacher" / "model.pt")
    with pytest.raises(Exception, match="names no domain"):
        TrainConfig(**base, teacher=teacher, distill_domains=["nowhere"])
    train(TrainConfig(**base, teacher=teacher, init=teacher, distill_domains=["fire", "synth"]), tmp_path / "student")
    data = json.loads((tmp_path / "student" / "train.json").read_text())["data"]
    assert data["teacher"]["domains"] == ["fire", "synth"] and data["init"]["checkpoint"] == teacher
    assert any(f.get("via") == "init" for f in data["files"])  # what the starting weights saw is listed too
