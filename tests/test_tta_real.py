"""bench/tta_real.py's core on a tiny synthetic stand-in (no shared data): the JSON it builds, and 'none' is the
plain model's IoU computed directly."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import REPO

SIZE = 64


@pytest.fixture
def bench():
    sys.path.insert(0, str(REPO / "bench"))
    import torch
    import tta
    import tta_real

    saved = tta.WEIGHTS, tta.THRESHOLD, torch.get_num_threads()
    tta.WEIGHTS = tta.THRESHOLD = None  # the zoo's fireseg-lite, the adapters' own threshold
    torch.set_num_threads(1)  # as the bench runs; faster than two threads on a busy 2-core box
    yield tta, tta_real
    tta.WEIGHTS, tta.THRESHOLD = saved[:2]
    torch.set_num_threads(saved[2])


def stand_in():
    from firespotter.models.boxes import Box
    from firespotter.models.synthetic import SyntheticScene

    fire = []
    for scene, seed in (("a", 3), ("b", 5)):
        sc = SyntheticScene(SIZE, SIZE, frames=3, seed=seed, n_fires=3)
        for i in range(3):
            rgb, mask = sc.render(i)
            fire.append((rgb, mask > 0, scene))
    rng = np.random.default_rng(0)
    negatives = [(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8), np.zeros((SIZE, SIZE), bool))
                 for _ in range(2)]
    vid = SyntheticScene(48, 32, frames=3, seed=7, n_fires=2)  # another size than SIZE, as the video is
    video = ([(n, vid.render(n)[0]) for n in range(3)], {0: [Box(2, 2, 10, 10)], 1: [], 2: [Box(20, 10, 8, 8)]})
    return fire, negatives, video


def test_measure_json_structure_and_none_is_the_plain_model(bench):
    tta, tta_real = bench
    fire, negatives, video = stand_in()
    result = tta_real.measure(fire, negatives, video, SIZE, methods=("none", "bnstats", "ostta"), passes=2,
                              log=lambda s: None)
    json.dumps(result)  # serialisable as written
    keys = ["none", "bnstats", "ostta", "bnstats/forced", "ostta/forced"]
    for stream in ("fire", "negatives", "video"):
        assert list(result[stream]) == keys
    for k in keys:
        f, n, v = result["fire"][k], result["negatives"][k], result["video"][k]
        assert len(f["iou_per_pass"]) == 2 and list(f["scenes_last_pass"]) == ["a", "b"] == list(f["scenes_all"])
        assert 0 <= f["iou_last_pass"] <= 100 and 0 <= f["iou_all"] <= 100
        assert n["frames"] == 2 and 0 <= n["frames_with_fire_last_pass"] <= 2
        assert v["frames"] == 2 and v["frames_without_boxes"] == 1 and v["boxes"] == 2
        for s in (f, n, v):
            if k == "none":
                assert s["adapter"] is None
            else:
                a = s["adapter"]
                assert {"active_share", "active_at_end", "shift_onsets", "threshold", "updates", "resets"} <= set(a)
                if k.endswith("/forced"):  # threshold 0: the detector is off and adaptation always on
                    assert a["threshold"] == 0.0 and a["active_share"] == 1.0
    assert result["fire"]["ostta/forced"]["adapter"]["updates"] == len(fire) * 2

    # 'none' = the plain model, scored directly
    seg = tta.segmenter(SIZE)
    inter = union = 0
    for _ in range(2):
        for rgb, mask, _ in fire:
            pred = seg.predict(rgb[None])[0] >= 0.5
            inter += int((pred & mask).sum())
            union += int((pred | mask).sum())
    assert (result["fire"]["none"]["inter"], result["fire"]["none"]["union"]) == (inter, union)
    assert result["fire"]["none"]["iou_all"] == round(100 * inter / union, 2)
    # as shipped, an adapter whose detector never switched on is the plain model exactly
    for k in ("bnstats", "ostta"):
        if result["fire"][k]["adapter"]["active_share"] == 0:
            assert result["fire"][k]["inter"] == inter and result["fire"][k]["union"] == union


def test_table_lists_every_variant(bench):
    _, tta_real = bench
    fire, negatives, video = stand_in()
    result = tta_real.measure(fire[:3], negatives[:1], None, SIZE, methods=("none", "bnstats"), passes=1,
                              log=lambda s: None)
    assert result["video"] == {}
    lines = tta_real.table(result)
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["none", "bnstats", "bnstats/forced"]
    assert len(tta_real.scene_table(result)) == 2 + 3
