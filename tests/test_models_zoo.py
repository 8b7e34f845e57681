"""The shipped fireseg-lite weights: manifest, sizes, hashes, what they were trained on, and their accuracy on the
project's own validation data (skipped, with the reason, where ../shared is absent)."""

from __future__ import annotations

import fnmatch

import numpy as np
import pytest

from firespotter.models.datasets import find_pairs
from firespotter.models.evaluate import evaluate
from firespotter.models.zoo import ZOO_DIR, load_manifest, sha256_file, verified_files
from firespotter.runtime.assemble import bind_segmenter
from firespotter.runtime.config import ModelSettings
from firespotter.runtime.plugins import new_registry
from firespotter.runtime.post import PostParams

MANIFEST = ZOO_DIR / "fireseg-lite.json"
pytestmark = pytest.mark.skipif(not MANIFEST.is_file(), reason=f"no shipped weights at {MANIFEST}")


def test_manifest_files_hashes_and_sizes():
    manifest = load_manifest(MANIFEST)
    files = verified_files(manifest)  # every sha256 checked
    assert set(files) == {"onnx", "encoder", "decoder", "torch"}
    for role, path in files.items():
        assert path.stat().st_size < 5_000_000, f"{path.name} is over 5 MB"
        assert sha256_file(path) == manifest["files"][role]["sha256"]
    assert manifest["arch"] == "fireseg-lite" and manifest["input_size"] == [512, 512]
    training = manifest["training"]
    assert training["command"].startswith("firespotter train --arch fireseg-lite")
    assert training["epochs"] >= 1 and isinstance(training["seed"], int)
    assert manifest["export"]["parity"]["max_abs_diff_prob"] < 1e-4
    assert manifest["metrics"], "the manifest records metrics on named evaluation sets"
    for entry in manifest["metrics"].values():
        assert entry["command"].startswith("firespotter eval")


def test_never_trained_on_the_validation_data():
    files = load_manifest(MANIFEST)["training"]["data"]["files"]
    names = [f["image"] for f in files]
    assert names, "the manifest lists every file trained on"
    for pattern in ("*flame1_t01[0-4]*", "*no_flame_smoke*", "*hpwren*", "*aerial_thermal_proxy*", "*flame3_*"):
        assert not fnmatch.filter(names, pattern), f"trained on held-out files matching {pattern}"


def test_default_fireseg_lite_runs_on_onnxruntime_with_a_frame_score():
    seg, backend = bind_segmenter(new_registry(), ModelSettings(name="fireseg-lite", options={"threads": 2}))
    assert backend == "onnxruntime"
    frame = np.zeros((1, 240, 320, 3), np.uint8)
    frame[..., 1] = 90
    prob, score = seg.predict_scored(frame)
    assert prob.shape == (1, 512, 512) and prob.dtype == np.float32 and score.shape == (1,)
    assert prob.max() < 0.5 and score[0] < 0.5  # a plain green field is no fire


def _score(real_dev, include=None, negatives=False, root=None):
    seg, _ = bind_segmenter(new_registry(), ModelSettings(name="fireseg-lite", options={"threads": 2}))
    pairs, _ = find_pairs(root or real_dev, negatives=negatives)
    if include:
        pairs = [p for p in pairs if fnmatch.fnmatch(p.name, include)]
    return evaluate(pairs, seg.predict, PostParams()).report()


def test_validation_split_iou(real_dev):
    report = _score(real_dev, include="flame1_t01*")
    assert report["n_images"] == 11
    # Issue 5's target is 0.70; the shipped weights reach 0.710 (docs/models.md).
    assert report["iou"] >= 0.70, report["iou"]
    assert report["iou"] >= 0.178 + 0.30  # the colour rule's IoU on the same split, + 0.30


def test_smoke_negatives_false_positive_rate(real_dev):
    report = _score(real_dev, negatives=True, root=real_dev / "classification" / "no_flame_smoke")
    assert report["n_images"] == 6
    assert report["false_positive_rate"] <= 0.001, report["false_positive_rate"]
