"""The shipped fireseg-lite weights: manifest, sizes, hashes, what they were trained on, and their accuracy on the
project's own validation data (skipped, with the reason, where ../shared is absent)."""

from __future__ import annotations

import csv
import fnmatch
import json
from pathlib import Path

import numpy as np
import pytest

from firespotter.models.zoo import ZOO_DIR, load_manifest, sha256_file, verified_files
from firespotter.runtime.assemble import bind_segmenter
from firespotter.runtime.config import ModelSettings
from firespotter.runtime.plugins import new_registry

from conftest import REPO, SHARED, run_cli

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
    assert training["command"].startswith("firespotter train --recipe firespotter/models/recipes/fireseg-lite.toml")
    assert training["epochs"] >= 1 and isinstance(training["seed"], int)
    assert manifest["export"]["parity"]["max_abs_diff_prob"] < 1e-4
    assert manifest["metrics"], "the manifest records metrics on named evaluation sets"
    for entry in manifest["metrics"].values():
        assert entry["command"].startswith("firespotter eval")


def test_never_trained_on_the_validation_data():
    files = load_manifest(MANIFEST)["training"]["data"]["files"]
    names = [f["image"] for f in files]
    assert names, "the manifest lists every file trained on"
    for pattern in ("*flame1_t01[0-4]*", "*no_flame_smoke*", "*hpwren*", "*aerial_thermal_proxy*", "*flame3_*",
                    "*classification*", "*furg*"):
        assert not fnmatch.filter(names, pattern), f"trained on held-out files matching {pattern}"
    labels = SHARED / "data" / "fire-real" / "train-extra" / "labels.csv"
    if labels.is_file():  # never a frame of a validation scene
        val = {row["image"] for row in csv.DictReader(labels.open()) if row["split"] == "val"}
        assert not val & {Path(n).name for n in names}


def test_default_fireseg_lite_runs_on_onnxruntime_with_a_frame_score():
    seg, backend = bind_segmenter(new_registry(), ModelSettings(name="fireseg-lite", backend_options={"threads": 2}))
    assert backend == "onnxruntime"
    frame = np.zeros((1, 240, 320, 3), np.uint8)
    frame[..., 1] = 90
    prob, score = seg.predict_scored(frame)
    assert prob.shape == (1, 512, 512) and prob.dtype == np.float32 and score.shape == (1,)
    assert prob.max() < 0.5 and score[0] < 0.5  # a plain green field is no fire


# Floors and ceilings a little inside what the shipped weights measured (docs/models.md, 2026-12-05). Where the
# issue's target is met the bound is the target; where it is missed, the bound guards the measured figure:
# FLAME split 0.672 (target 0.72), synthetic 0.849 (0.85), house-fire boxes hit 26.5 % (80 %).
FLOORS = {"flame-split.iou": 0.66, "large-flames-val.iou": 0.65, "synthetic-val.iou": 0.83,
          "furg_house6.inside_rate": 0.90, "furg_house6.box_hit_rate": 0.20}
CEILINGS = {"hard-negatives-val.fire_px_rate": 0.0005, "smoke-negatives.fire_px_rate": 0.001,
            "hard-negatives-val.frames_with_fire_px": 2, "hard-negatives-val.head_false_alarms": 1}


def test_every_set_of_the_suite(real_dev, tmp_path):
    """The project's suite (eval/suite.toml) against floors just under what the shipped weights measured
    (docs/models.md has the table and the issue's targets, met and missed)."""
    suite = tmp_path / "suite.toml"
    suite.write_text((REPO / "eval" / "suite.toml").read_text().replace('"../shared/', f'"{SHARED}/'))
    out = tmp_path / "suite.json"
    r = run_cli("eval", "--suite", str(suite), "--json", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    sets = json.loads(out.read_text())["sets"]
    model = {name: s["results"]["fireseg-lite"] for name, s in sets.items()}
    colour = {name: s["results"]["colorrule"] for name, s in sets.items()}
    for name, floor in FLOORS.items():
        set_name, key = name.split(".")
        assert model[set_name][key] >= floor, (name, model[set_name][key])
    for name, ceiling in CEILINGS.items():
        set_name, key = name.split(".")
        assert model[set_name][key] <= ceiling, (name, model[set_name][key])
    assert model["large-flames-val"]["iou"] >= colour["large-flames-val"]["iou"] + 0.08
    assert model["flame-split"]["iou"] >= colour["flame-split"]["iou"] + 0.30
