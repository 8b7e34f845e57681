"""`firespotter eval --suite`: every kind of set on small data, box scoring by hand, and bad suites (exit 2)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import run_cli
from firespotter.models.boxes import HIT_FRACTION, Box, BoxScore, check_boxes, read_boxes
from firespotter.models.datasets import DatasetError

FLAME = (255, 150, 30)  # the colour rule finds it


def write_pairs(root, n=3, size=(48, 64), fire=True, mask_size=None):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = np.full((*size, 3), (40, 90, 40), np.uint8)
        mask = np.zeros(mask_size or size, np.uint8)
        if fire:
            img[8:20, 8:24] = FLAME
            mask[8:20, 8:24] = 255
        cv2.imwrite(str(root / "images" / f"f_{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"f_{i:03d}.png"), mask)


def write_video(path, frames=6, size=(64, 48)):
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    for _ in range(frames):
        img = np.full((h, w, 3), (40, 90, 40), np.uint8)
        img[10:30, 10:30] = FLAME
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()


def opencv_boxes(path, frames, box="10 10 20 20", size=(64, 48)):
    entries = "".join(f"<_><frameNumber>{i}</frameNumber><annotations><_>{box}</_></annotations></_>"
                      for i in range(frames))
    path.write_text(f"<?xml version=\"1.0\"?><opencv_storage><frameWidth>{size[0]}</frameWidth>"
                    f"<frameHeight>{size[1]}</frameHeight><frames>{entries}</frames></opencv_storage>")


def test_box_scoring_by_hand():
    pred = np.zeros((20, 20), bool)
    pred[0:2, 0:5] = True  # 10 px in box A (100 px): 10 % -> hit
    pred[15:20, 15:20] = True  # 25 px outside every box
    score = BoxScore()
    score.add(0, pred, [Box(0, 0, 10, 10), Box(10, 0, 10, 10)])  # box B: nothing predicted -> missed
    score.add(1, np.zeros((20, 20), bool), [])  # a frame without boxes and without fire
    r = score.report()
    assert r["boxes"] == 2 and r["boxes_hit"] == 1 and r["box_hit_rate"] == 0.5
    assert r["inside_rate"] == pytest.approx(10 / 35)
    assert r["frames"] == 1 and r["frames_detected"] == 1 and r["frames_without_boxes"] == 1
    assert r["frames_without_boxes_with_fire"] == 0
    just_under = np.zeros((10, 10), bool)
    just_under.flat[: int(HIT_FRACTION * 100) - 1] = True  # 4 of 100 px: under 5 %
    s2 = BoxScore()
    s2.add(0, just_under, [Box(0, 0, 10, 10)])
    assert s2.report()["boxes_hit"] == 0


def test_read_opencv_and_voc_boxes(tmp_path):
    opencv_boxes(tmp_path / "a.xml", 2, "1 2 3 4")
    boxes, size = read_boxes(tmp_path / "a.xml")
    assert boxes == {0: [Box(1, 2, 3, 4)], 1: [Box(1, 2, 3, 4)]} and size == (64, 48)
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "frame_000007.xml").write_text("<annotation><size><width>64</width><height>48</height></size><object>"
                                          "<bndbox><xmin>5</xmin><ymin>6</ymin><xmax>15</xmax><ymax>26</ymax>"
                                          "</bndbox></object></annotation>")
    boxes, size = read_boxes(voc)
    assert boxes == {7: [Box(5, 6, 10, 20)]} and size == (64, 48)
    with pytest.raises(DatasetError, match="outside the 64x48 frame"):
        check_boxes({3: [Box(60, 0, 10, 10)]}, 64, 48, tmp_path / "a.xml")


def small_suite(tmp_path):
    write_pairs(tmp_path / "fire", n=3)
    write_pairs(tmp_path / "neg", n=2, fire=False)
    (tmp_path / "cls" / "fire").mkdir(parents=True)
    (tmp_path / "cls" / "no_fire").mkdir()
    img = np.full((48, 64, 3), (40, 90, 40), np.uint8)
    cv2.imwrite(str(tmp_path / "cls" / "no_fire" / "a.png"), img)
    img[8:40, 8:56] = FLAME
    cv2.imwrite(str(tmp_path / "cls" / "fire" / "b.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    write_video(tmp_path / "v.avi")
    opencv_boxes(tmp_path / "v.xml", 6)
    suite = tmp_path / "suite.toml"
    suite.write_text(f"""
[[sets]]
name = "fire"
kind = "masks"
folder = "{tmp_path / 'fire'}"
include = ["f_00[01]"]
[[sets]]
name = "neg"
kind = "negatives"
folder = "{tmp_path / 'neg'}"
[[sets]]
name = "video"
kind = "boxes-video"
video = "{tmp_path / 'v.avi'}"
boxes = "{tmp_path / 'v.xml'}"
every = 2
[[sets]]
name = "cls"
kind = "classification"
folder = "{tmp_path / 'cls'}"
[[sets]]
name = "synthetic"
kind = "synthetic"
flights = 1
frames = 2
size = "64x64"
""")
    return suite


def test_suite_scores_every_kind_with_the_colour_rule_beside(tmp_path):
    suite = small_suite(tmp_path)
    out = tmp_path / "suite.json"
    r = run_cli("eval", "--suite", str(suite), "--model", "colorrule", "--json", str(out))
    assert r.returncode == 0, r.stderr
    for name in ("fire", "neg", "video", "cls", "synthetic"):
        assert f"== {name} (" in r.stdout
    report = json.loads(out.read_text())
    sets = report["sets"]
    fire = sets["fire"]["results"]["colorrule"]
    assert fire["images"] == 2 and fire["iou"] == pytest.approx(1.0)  # include picked 2 of 3; flame found exactly
    neg = sets["neg"]["results"]["colorrule"]
    assert neg["iou"] is None and neg["fire_px_rate"] == 0.0 and neg["frames_with_fire_px"] == 0
    video = sets["video"]["results"]["colorrule"]
    assert video["boxes"] == 3 and video["every"] == 2  # frames 0, 2, 4
    assert video["box_hit_rate"] == 1.0
    assert sets["cls"]["results"]["colorrule"]["frames"] == 2
    assert sets["synthetic"]["results"]["colorrule"]["images"] == 2


def test_suite_with_the_default_model_has_a_reference_row(tmp_path):
    write_pairs(tmp_path / "fire", n=1)
    suite = tmp_path / "s.toml"
    suite.write_text(f'[[sets]]\nname = "fire"\nkind = "masks"\nfolder = "{tmp_path / "fire"}"\n')
    out = tmp_path / "s.json"
    r = run_cli("eval", "--suite", str(suite), "--json", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["sets"]["fire"]["results"]
    assert set(rows) == {"fireseg-lite", "colorrule"}
    assert "head_accuracy" in rows["fireseg-lite"]  # the frame head is scored on masks sets too


@pytest.mark.parametrize("case, expected", [
    ("missing-folder", "does not exist"),
    ("unknown-kind", "unknown kind 'boxes'"),
    ("box-outside", "lies outside the 64x48 frame"),
    ("mask-size", "is 32x24 but its image is 64x48"),
])
def test_bad_suites_fail_with_one_clear_line(tmp_path, case, expected):
    if case == "missing-folder":
        body = f'[[sets]]\nname = "a"\nkind = "masks"\nfolder = "{tmp_path / "nowhere"}"\n'
    elif case == "unknown-kind":
        body = f'[[sets]]\nname = "a"\nkind = "boxes"\nfolder = "{tmp_path}"\n'
    elif case == "box-outside":
        write_video(tmp_path / "v.avi")
        opencv_boxes(tmp_path / "v.xml", 2, "50 40 20 20")
        body = (f'[[sets]]\nname = "v"\nkind = "boxes-video"\nvideo = "{tmp_path / "v.avi"}"\n'
                f'boxes = "{tmp_path / "v.xml"}"\n')
    else:
        write_pairs(tmp_path / "fire", n=1, mask_size=(24, 32))
        body = f'[[sets]]\nname = "a"\nkind = "masks"\nfolder = "{tmp_path / "fire"}"\n'
    suite = tmp_path / "s.toml"
    suite.write_text(body)
    r = run_cli("eval", "--suite", str(suite), "--model", "colorrule")
    assert r.returncode == 2, r.stdout + r.stderr
    assert expected in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
