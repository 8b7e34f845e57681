"""The content-addressed artifact cache: keys, hits without building, manifests, tamper detection."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from firespotter.runtime.artifacts import ArtifactCache, ArtifactError, ArtifactKey, library_versions, sha256_tree
from firespotter.runtime.types import PrecisionLabel

KEY = ArtifactKey(model_sha256="a" * 64, backend="onnxruntime", precision="int8", device="cpu",
                  compute_capability=None, versions=(("onnxruntime", "1.32.0"),), calibration_sha256="c" * 64,
                  options=(("opset", "17"),))
INT8 = PrecisionLabel("int8", 8, False)


def builder(calls):
    def build(folder):
        calls.append(folder)
        (folder / "model.onnx").write_bytes(b"\x08\x07" * 500)
        (folder / "notes.txt").write_text("calibrated on 8 frames")
        return {"accuracy": {"eval_set": "dev", "iou_fp32": 0.71, "iou": 0.70}}
    return build


@pytest.fixture
def cache(tmp_path):
    lines = []
    c = ArtifactCache(tmp_path / "cache", progress=lines.append)
    c.lines = lines
    return c


def test_miss_builds_with_progress_then_hit_loads_without_building(cache):
    calls = []
    first = cache.get_or_build(KEY, builder(calls), INT8, describe="fireseg-lite int8")
    assert first.built and len(calls) == 1
    assert cache.lines[0].startswith("building fireseg-lite int8 ->") and cache.lines[1].startswith("built ")
    t0 = time.perf_counter()
    second = cache.get_or_build(KEY, builder(calls), INT8, describe="fireseg-lite int8")
    assert not second.built and len(calls) == 1 and time.perf_counter() - t0 < 1.0
    assert second.path("model.onnx").read_bytes() == b"\x08\x07" * 500
    assert second.labels == INT8


def test_manifest_has_labels_files_key_and_accuracy(cache):
    art = cache.build(KEY, builder([]), INT8, describe="x")
    m = json.loads((art.dir / "manifest.json").read_text())
    assert m["labels"] == {"precision_exec": "int8", "weight_bits": 8, "simulated": False}
    assert set(m["files"]) == {"model.onnx", "notes.txt"} and len(m["files"]["model.onnx"]) == 64
    assert m["key"]["backend"] == "onnxruntime" and m["key"]["versions"] == {"onnxruntime": "1.32.0"}
    assert m["accuracy"]["iou"] == 0.70 and m["build_s"] >= 0


@pytest.mark.parametrize("change", [
    {"model_sha256": "b" * 64}, {"backend": "tensorrt"}, {"precision": "fp16"}, {"device": "cuda:0"},
    {"compute_capability": "8.7"}, {"versions": (("onnxruntime", "1.33.0"),)}, {"calibration_sha256": "d" * 64},
    {"options": (("opset", "21"),)},
])
def test_any_key_component_change_misses(cache, change):
    cache.build(KEY, builder([]), INT8, describe="x")
    other = dataclasses.replace(KEY, **change)
    assert other.digest() != KEY.digest()
    assert cache.get(other) is None


def test_a_flipped_byte_is_refused_with_the_file_named(cache):
    art = cache.build(KEY, builder([]), INT8, describe="x")
    path = art.path("model.onnx")
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as exc:
        cache.get(KEY)
    assert "model.onnx" in str(exc.value) and "does not match its manifest" in str(exc.value)
    assert "rebuild" in str(exc.value)
    rebuilt = cache.get_or_build(KEY, builder([]), INT8, describe="x", rebuild=True)
    assert rebuilt.built and cache.get(KEY) is not None


def test_missing_file_and_broken_manifest(cache):
    art = cache.build(KEY, builder([]), INT8, describe="x")
    art.path("notes.txt").unlink()
    with pytest.raises(ArtifactError, match="notes.txt is missing"):
        cache.get(KEY)
    (art.dir / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable"):
        cache.get(KEY)


def test_failed_build_leaves_nothing_behind(cache):
    def broken(folder):
        (folder / "half.onnx").write_bytes(b"x")
        raise RuntimeError("calibration crashed")

    with pytest.raises(RuntimeError):
        cache.build(KEY, broken, INT8, describe="x")
    assert cache.get(KEY) is None
    assert not any(p.name.startswith(".building-") for p in cache.dir_for(KEY).parent.iterdir())


def test_helpers(tmp_path):
    (tmp_path / "a.png").write_bytes(b"1")
    (tmp_path / "b.png").write_bytes(b"2")
    h1 = sha256_tree(tmp_path.glob("*.png"))
    (tmp_path / "b.png").write_bytes(b"3")
    assert sha256_tree(tmp_path.glob("*.png")) != h1
    versions = dict(library_versions(["numpy", "surely-not-installed-xyz"]))
    assert versions["surely-not-installed-xyz"] == "absent" and versions["numpy"][0].isdigit()
