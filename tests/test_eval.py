"""`firespotter eval`: metrics checked against hand-computed values, dataset layouts and bad input."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from conftest import run_cli
from firespotter.models.datasets import DatasetError, find_pairs
from firespotter.models.metrics import Counts, scores, summarize


def b(rows):
    return np.array(rows, bool)


def test_counts_and_scores_by_hand():
    pred = b([[1, 1, 0], [0, 0, 0]])
    truth = b([[1, 0, 0], [1, 0, 0]])
    c = Counts.of(pred, truth)
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 1, 1, 3)
    s = scores(c)
    assert s["iou"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(2 / 4)
    assert s["precision"] == pytest.approx(1 / 2) and s["recall"] == pytest.approx(1 / 2)
    assert s["pixel_accuracy"] == pytest.approx(4 / 6)
    assert s["miou"] == pytest.approx((1 / 3 + 3 / 5) / 2)  # background IoU = tn / (tn + fp + fn)
    assert s["mpa"] == pytest.approx((1 / 2 + 3 / 4) / 2)  # background accuracy = tn / (tn + fp)


def test_empty_masks_and_set_level_sums():
    fire = Counts.of(b([[1, 1], [0, 0]]), b([[1, 1], [1, 0]]))  # tp 2, fn 1, tn 1
    clean_ok = Counts.of(b([[0, 0], [0, 0]]), b([[0, 0], [0, 0]]))  # nothing anywhere
    false_fire = Counts.of(b([[1, 0], [0, 0]]), b([[0, 0], [0, 0]]))  # fp 1 on a fire-free image
    s = summarize([("a", fire), ("b", clean_ok), ("c", false_fire)])
    # Set level: sums of counts (tp 2, fp 1, fn 1), not a mean of per-image IoUs.
    assert s["iou"] == pytest.approx(2 / 4) and s["f1"] == pytest.approx(4 / 6)
    assert s["counts"] == {"tp": 2, "fp": 1, "fn": 1, "tn": 8}
    # Per-image mean: a (2/3) and c (0); b has no IoU (0/0) and is left out.
    assert s["mean_image_iou"] == pytest.approx((2 / 3 + 0) / 2)
    assert s["n_empty_truth"] == 2 and s["n_empty_truth_with_false_fire"] == 1
    only_clean = scores(clean_ok)
    assert only_clean["iou"] is None and only_clean["precision"] is None and only_clean["pixel_accuracy"] == 1.0


def make_set(root, names, size=(32, 32), mask_size=None, fire=True):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, name in enumerate(names):
        img = np.full((*size, 3), (40, 90, 40), np.uint8)
        mask = np.zeros(mask_size or size, np.uint8)
        if fire and i % 2 == 0:
            img[4:12, 4:12] = (255, 150, 30)  # flame-coloured: the colour rule finds it
            mh, mw = mask.shape
            mask[4 * mh // size[0] : 12 * mh // size[0], 4 * mw // size[1] : 12 * mw // size[1]] = 255
        cv2.imwrite(str(root / "images" / f"{name}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"{name}.png"), mask)


def test_eval_cli_writes_json_csv_and_groups(tmp_path):
    make_set(tmp_path / "d", ["alpha_1", "alpha_2", "beta_1", "beta_2"])
    r = run_cli("eval", str(tmp_path / "d"), "--model", "colorrule", "--json", str(tmp_path / "e.json"),
                "--csv", str(tmp_path / "e.csv"))
    assert r.returncode == 0, r.stderr
    e = json.loads((tmp_path / "e.json").read_text())
    for key in ("iou", "f1", "precision", "recall", "miou", "mpa", "n_images", "groups"):
        assert key in e
    assert e["n_images"] == 4 and set(e["groups"]) == {"alpha", "beta"}
    assert e["iou"] == pytest.approx(1.0) and e["precision_exec"] == "fp32"
    rows = list(csv.DictReader(open(tmp_path / "e.csv")))
    assert [r["name"] for r in rows] == ["alpha_1", "alpha_2", "beta_1", "beta_2"]
    assert "ALL" in r.stdout and "alpha" in r.stdout


def test_masks_of_another_size_are_resized_and_reported(tmp_path):
    make_set(tmp_path / "d", ["x_1", "x_2"], size=(32, 32), mask_size=(64, 64))
    r = run_cli("eval", str(tmp_path / "d"), "--model", "colorrule", "--json", str(tmp_path / "e.json"))
    assert r.returncode == 0, r.stderr
    assert "resized 2 masks" in r.stdout
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["resized_masks"] == 2 and e["iou"] == pytest.approx(1.0)


def test_missing_and_extra_stems_are_named(tmp_path):
    make_set(tmp_path / "d", ["a_1", "a_2", "a_3"])
    (tmp_path / "d" / "masks" / "a_2.png").unlink()
    cv2.imwrite(str(tmp_path / "d" / "masks" / "zz_9.png"), np.zeros((4, 4), np.uint8))
    r = run_cli("eval", str(tmp_path / "d"), "--model", "colorrule")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "a_2" in r.stderr and "zz_9" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unreadable_image_is_skipped_and_counted(tmp_path):
    make_set(tmp_path / "d", ["a_1", "a_2", "a_3"])
    (tmp_path / "d" / "images" / "a_2.png").write_bytes(b"not a png")
    r = run_cli("eval", str(tmp_path / "d"), "--model", "colorrule", "--json", str(tmp_path / "e.json"))
    assert r.returncode == 0, r.stderr
    assert "skipped 1 unreadable: a_2.png" in r.stdout
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["n_images"] == 2 and e["skipped"] == 1


def test_flame_layout_and_negatives(tmp_path):
    root = tmp_path / "FLAME"
    (root / "Segmentation/Data/Images").mkdir(parents=True)
    (root / "Segmentation/Data/Masks").mkdir(parents=True)
    for i in range(3):
        img = np.full((16, 16, 3), 60, np.uint8)
        cv2.imwrite(str(root / f"Segmentation/Data/Images/image_{i}.jpg"), img)
        cv2.imwrite(str(root / f"Segmentation/Data/Masks/image_{i}.png"), np.zeros((16, 16), np.uint8))
    pairs, layout = find_pairs(root)
    assert layout == "flame" and [p.mask.name for p in pairs] == ["image_0.png", "image_1.png", "image_2.png"]
    pairs, layout = find_pairs(root / "Segmentation/Data/Images", negatives=True)
    assert layout == "negatives" and all(p.mask is None for p in pairs)
    with pytest.raises(DatasetError, match="not a dataset"):
        find_pairs(tmp_path)


def test_eval_on_real_dev_set(real_dev, tmp_path):
    r = run_cli("eval", str(real_dev), "--model", "colorrule", "--json", str(tmp_path / "e.json"))
    assert r.returncode == 0, r.stderr
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["n_images"] == 36 and set(e["groups"]) == {"flame1"}
    assert 0 < e["iou"] < 1 and e["precision"] > 0.5
    neg = run_cli("eval", str(real_dev / "classification" / "no_flame_smoke"), "--negatives", "--json",
                  str(tmp_path / "n.json"))
    assert neg.returncode == 0, neg.stderr
    n = json.loads((tmp_path / "n.json").read_text())
    assert n["n_images"] == 6 and n["n_empty_truth"] == 6 and n["false_positive_rate"] is not None


def test_include_selects_a_split(tmp_path):
    make_set(tmp_path / "d", ["f_t0001", "f_t0002", "f_t0101", "f_t0102"])
    r = run_cli("eval", str(tmp_path / "d"), "--model", "colorrule", "--include", "f_t01*", "--json",
                str(tmp_path / "e.json"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "e.json").read_text())["n_images"] == 2
    r = run_cli("eval", str(tmp_path / "d"), "--model", "colorrule", "--include", "zzz*")
    assert r.returncode == 2 and "matches --include" in r.stderr
