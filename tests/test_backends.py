"""Backends and engine lifecycle: variant builds through the artifact cache (keys, manifests, calibration),
ONNX Runtime provider selection and fallback, the torch backend's CUDA errors, the tensorrt plugin's availability."""

from __future__ import annotations

import json
import logging
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO
from firespotter.models import build as build_mod
from firespotter.models.build import build_artifact, record_accuracy
from firespotter.models.calibration import load_calibration
from firespotter.models.variants import BuildOutput, VariantError, VariantSpec, get_variant, register_variant, variants
from firespotter.runtime.artifacts import ArtifactCache, ArtifactError
from firespotter.runtime.assemble import bind_segmenter
from firespotter.runtime.config import ModelSettings
from firespotter.runtime.errors import ConfigError, PluginError
from firespotter.runtime.formats import OnnxArtifact
from firespotter.runtime.plugins import get_registry, hookimpl, new_registry
from firespotter.runtime.specs import ModelSpec
from firespotter.runtime.types import InputSpec, PrecisionLabel

sys.path.insert(0, str(REPO / "bench"))
from cnn_standin import build as build_standin  # noqa: E402


class StandIn:
    """A small real ONNX model (64x64) in the Model protocol's shape."""

    def __init__(self, path, model_id="standin"):
        self.path, self.model_id = path, model_id
        self.input_spec = InputSpec(size=(64, 64))

    def formats(self):
        return ("onnx",)

    def artifact(self, fmt):
        return OnnxArtifact(self.path, (64, 64))


@pytest.fixture
def standin(tmp_path):
    return StandIn(build_standin(tmp_path / "m.onnx", size=64))


@pytest.fixture
def cache(tmp_path):
    lines = []
    c = ArtifactCache(tmp_path / "cache", progress=lines.append)
    c.lines = lines
    return c


def calib_dir(path, n=3, seed=0, size=(48, 40)):
    """Real-looking frames on disk (the calibration loader reads files; content is deterministic)."""
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.zeros((*size, 3), np.uint8)
        img[:, :, 0] = (np.arange(size[1]) * (3 + i + seed)) % 256
        cv2.imwrite(str(path / f"f{i:03d}.png"), img)
    return path


def test_cache_key_changes_with_every_component(tmp_path, standin, cache, monkeypatch):
    kw = dict(device="cpu", cache=cache)
    first = build_artifact(standin, "onnxruntime", "fp32", **kw)
    assert not first.hit and first.onnx.is_file()
    again = build_artifact(standin, "onnxruntime", "fp32", **kw)
    assert again.hit and again.artifact.dir == first.artifact.dir and not again.artifact.built
    other_model = StandIn(build_standin(tmp_path / "m2.onnx", size=64, seed=1))
    variations = {
        "model": lambda: build_artifact(other_model, "onnxruntime", "fp32", **kw),
        "backend": lambda: build_artifact(standin, "other-backend", "fp32", **kw),
        "precision": lambda: build_artifact(standin, "onnxruntime", "fp16", **kw),
        "device": lambda: build_artifact(standin, "onnxruntime", "fp32", device="cuda:0", cache=cache),
        "calibration": lambda: build_artifact(standin, "onnxruntime", "fp32", calib=calib_dir(tmp_path / "c1"), **kw),
        "calibration set": lambda: build_artifact(standin, "onnxruntime", "fp32",
                                                  calib=calib_dir(tmp_path / "c2", seed=5), **kw),
        "build options": lambda: build_artifact(standin, "onnxruntime", "fp32", options={"method": "x"}, **kw),
    }
    dirs = {first.artifact.dir}
    for what, make in variations.items():
        built = make()
        assert not built.hit, f"a change of {what} must miss the cache"
        dirs.add(built.artifact.dir)
    # A library upgrade (e.g. a new onnxruntime) is a different artifact too.
    real = build_mod.library_versions
    monkeypatch.setattr(build_mod, "library_versions", lambda names: tuple(
        (n, "99.0" if n == "onnxruntime" else v) for n, v in real(names)))
    upgraded = build_artifact(standin, "onnxruntime", "fp32", **kw)
    assert not upgraded.hit
    dirs.add(upgraded.artifact.dir)
    assert len(dirs) == len(variations) + 2


def test_manifest_labels_roles_calibration_and_accuracy(tmp_path, standin, cache):
    built = build_artifact(standin, "onnxruntime", "fp16", cache=cache, calib=calib_dir(tmp_path / "c", n=5),
                           calib_frames=3)
    m = json.loads((built.artifact.dir / "manifest.json").read_text())
    assert m["labels"] == {"precision_exec": "fp16", "weight_bits": 16, "simulated": False}
    assert m["roles"] == {"onnx": "model.onnx"} and "model.onnx" in m["files"]
    assert m["key"]["precision"] == "fp16" and m["key"]["calibration_sha256"] == m["calibration"]["sha256"]
    assert m["calibration"]["frames"] == 3 and "resized to the model input 64x64" in m["calibration"]["description"]
    assert any("building" in line for line in cache.lines) and any(line.startswith("built ") for line in cache.lines)
    record_accuracy(built, {"iou_vs_fp32": 0.99, "data": "dev"})
    again = build_artifact(standin, "onnxruntime", "fp16", cache=cache, calib=calib_dir(tmp_path / "c", n=5),
                           calib_frames=3)
    assert again.hit and again.manifest["accuracy"]["data"] == "dev"  # the manifest is not a hashed file


def test_fp16_variant_keeps_float32_io_and_tracks_fp32(standin, cache):
    import onnx

    built = build_artifact(standin, "onnxruntime", "fp16", cache=cache)
    g = onnx.load(str(built.onnx)).graph
    assert {i.type.tensor_type.elem_type for i in list(g.input) + list(g.output)} == {onnx.TensorProto.FLOAT}
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in g.initializer)
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    s32 = ort.InferenceSession(str(standin.path), providers=["CPUExecutionProvider"])
    s16 = ort.InferenceSession(str(built.onnx), providers=["CPUExecutionProvider"])
    name = s32.get_inputs()[0].name
    a, b = s32.run(None, {name: x})[0], s16.run(None, {name: x})[0]
    assert a.shape == b.shape and b.dtype == np.float32
    assert np.abs(a - b).max() < 0.05 * (np.abs(a).max() + 1e-6)


def test_variant_registry_contract():
    assert {"fp32", "fp16"} <= set(variants())
    assert get_variant("fp16").labels == PrecisionLabel("fp16", 16, False)
    with pytest.raises(VariantError, match=r"unknown precision 'int3'; known: .*fp32.*fp16"):
        get_variant("int3")
    with pytest.raises(VariantError):
        register_variant(VariantSpec("Bad Name", lambda req: None, PrecisionLabel()))


def test_calibrated_variant_needs_frames_then_finds_the_latest_build(tmp_path, standin, cache):
    seen = {}

    def build(req):
        seen["frames"] = req.calibration
        out = req.out_dir / "model.onnx"
        out.write_bytes(req.source_onnx.read_bytes())
        return BuildOutput({"onnx": out}, {"method": "copy", "n": len(req.calibration)})

    register_variant(VariantSpec("test-calibrated", build, PrecisionLabel("int8", 8, True), needs_calibration=True))
    with pytest.raises(ConfigError, match="needs calibration frames.*firespotter build"):
        build_artifact(standin, "onnxruntime", "test-calibrated", cache=cache)
    built = build_artifact(standin, "onnxruntime", "test-calibrated", cache=cache, calib=calib_dir(tmp_path / "c"))
    assert [f.shape for f in seen["frames"]] == [(64, 64, 3)] * 3 and all(f.dtype == np.uint8 for f in seen["frames"])
    later = build_artifact(standin, "onnxruntime", "test-calibrated", cache=cache)  # no --calib: the latest build
    assert later.hit and later.artifact.dir == built.artifact.dir and later.labels.simulated


def test_calibration_sources_and_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images in this folder"):
        load_calibration(tmp_path / "empty", 4, (32, 32))
    with pytest.raises(ConfigError, match="does not exist"):
        load_calibration(tmp_path / "nope", 4, (32, 32))
    video = tmp_path / "v.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (80, 48))
    for i in range(12):
        w.write(np.full((48, 80, 3), i * 20, np.uint8))
    w.release()
    cal = load_calibration(video, 4, (32, 32))
    assert len(cal.frames) == 4 and cal.frames[0].shape == (32, 32, 3)
    assert "4 of 12 frames" in cal.description and "80x48 resized to the model input 32x32" in cal.description
    assert load_calibration(video, 4, (32, 32)).sha256 == cal.sha256 != load_calibration(video, 3, (32, 32)).sha256


def test_tampered_variant_is_refused(standin, cache):
    built = build_artifact(standin, "onnxruntime", "fp16", cache=cache)
    data = bytearray(built.onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    built.onnx.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its manifest.*refusing to load it"):
        build_artifact(standin, "onnxruntime", "fp16", cache=cache)
    assert build_artifact(standin, "onnxruntime", "fp16", cache=cache, rebuild=True).artifact.built


# --- onnxruntime providers ---------------------------------------------------------------------------


class OnnxModelPlugin:
    def __init__(self, model):
        self.model = model

    @hookimpl
    def register_models(self):
        return [ModelSpec("standin", lambda options: self.model)]


def test_onnxruntime_cuda_request_warns_it_runs_on_cpu(standin, caplog):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: nothing falls back here")
    registry = new_registry(plugins=[("m", OnnxModelPlugin(standin))])
    with caplog.at_level(logging.WARNING, logger="firespotter.onnxruntime"):
        seg, _ = bind_segmenter(registry, ModelSettings(name="standin", backend="onnxruntime", device="cuda"))
    warnings = [r.getMessage() for r in caplog.records if r.name == "firespotter.onnxruntime"]
    assert len(warnings) == 1 and "CUDAExecutionProvider" in warnings[0]
    assert "running on CPUExecutionProvider instead" in warnings[0] and "onnxruntime-gpu" in warnings[0]
    info = seg.info()
    assert info["providers"] == ["CPUExecutionProvider"] and info["provider_fallback"] == warnings[0]
    assert info["requested_providers"] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert seg.predict(np.zeros((1, 64, 64, 3), np.uint8)).shape == (1, 64, 64)  # and it does run


def test_onnxruntime_provider_plan_and_options(tmp_path):
    from firespotter.plugins.backends.onnxruntime_backend import OrtOptions, provider_plan

    plan = provider_plan("cuda:1", OrtOptions(trt_engine_cache=str(tmp_path / "e"), trt_workspace_mb=256),
                         PrecisionLabel("fp16", 16, False), ep_context=tmp_path / "ctx.onnx")
    assert [n for n, _ in plan] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt = plan[0][1]
    assert trt["device_id"] == "1" and trt["trt_fp16_enable"] == "True" and trt["trt_int8_enable"] == "False"
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_engine_cache_path"] == str(tmp_path / "e")
    assert trt["trt_dump_ep_context_model"] == "True" and trt["trt_max_workspace_size"] == str(256 << 20)
    assert trt["trt_ep_context_file_path"] == str(tmp_path / "ctx.onnx")  # not there yet: the first start dumps it
    assert plan[1][1]["device_id"] == "1"
    assert [n for n, _ in provider_plan("cuda", OrtOptions(providers="cuda,cpu"), PrecisionLabel())] == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert [n for n, _ in provider_plan("cpu", OrtOptions(), PrecisionLabel())] == ["CPUExecutionProvider"]
    with pytest.raises(PluginError, match="unknown provider 'gpu'"):
        provider_plan("cpu", OrtOptions(providers=["gpu"]), PrecisionLabel())
    # Flags arrive as strings from --option and the environment: the options model reads them as booleans.
    assert OrtOptions.model_validate({"trt_timing_cache": "off", "trt_ep_context": "yes", "spin": "true"}).model_dump(
        include={"trt_timing_cache", "trt_ep_context", "spin"}) == {"trt_timing_cache": False, "trt_ep_context": True,
                                                                    "spin": True}


def test_onnxruntime_runs_a_built_precision_with_its_labels(standin, tmp_path, monkeypatch):
    monkeypatch.setenv("FIRESPOTTER_CACHE_DIR", str(tmp_path / "cache"))
    registry = new_registry(plugins=[("m", OnnxModelPlugin(standin))])
    seg, _ = bind_segmenter(registry, ModelSettings(name="standin", backend="onnxruntime", precision="fp16"))
    info = seg.info()
    assert seg.precision == PrecisionLabel("fp16", 16, False) and info["precision_exec"] == "fp16"
    assert info["artifact"]["hit"] is False and str(tmp_path / "cache") in info["path"]
    assert seg.predict(np.zeros((2, 64, 64, 3), np.uint8)).shape == (2, 64, 64)
    with pytest.raises(PluginError, match="no precision 'int3'.*also builds: .*fp16"):
        bind_segmenter(registry, ModelSettings(name="standin", backend="onnxruntime", precision="int3"))


# --- torch and tensorrt ------------------------------------------------------------------------------


def test_torch_backend_says_cuda_is_missing():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(PluginError, match="CUDA is not available here"):
        bind_segmenter(get_registry(), ModelSettings(name="fireseg-lite", backend="torch", device="cuda"))
    with pytest.raises(PluginError, match="compile = true .* gate = true"):
        bind_segmenter(get_registry(), ModelSettings(name="fireseg-lite", backend="torch",
                                                     backend_options={"compile": True, "gate": True}))


def test_tensorrt_availability_explains_how_to_get_it():
    from firespotter.plugins.backends import tensorrt_backend

    avail = tensorrt_backend.available()
    if avail:
        pytest.skip("TensorRT and a CUDA device are available here")
    assert "\n" not in avail.reason
    if "not installed" in avail.reason:
        assert "Jetson" in avail.reason and "JetPack" in avail.reason and "torch-tensorrt" in avail.reason
    spec = get_registry().specs("backends")["tensorrt"]
    assert not spec.available() and spec.formats == ("torch",)
    with pytest.raises(PluginError, match="not available here"):
        bind_segmenter(get_registry(), ModelSettings(name="fireseg-lite", backend="tensorrt"))


def test_tensorrt_fp16_compile_and_reload(tmp_path, monkeypatch):
    from firespotter.plugins.backends import tensorrt_backend

    avail = tensorrt_backend.available()
    if not avail:
        pytest.skip(f"tensorrt backend not available: {avail.reason}")
    monkeypatch.setenv("FIRESPOTTER_CACHE_DIR", str(tmp_path / "cache"))
    settings = ModelSettings(name="fireseg-lite", backend="tensorrt", precision="fp16", device="cuda:0")
    seg, _ = bind_segmenter(get_registry(), settings)
    prob = seg.predict(np.zeros((1, 96, 96, 3), np.uint8))
    assert prob.shape[0] == 1 and seg.info()["artifact"]["hit"] is False
    again, _ = bind_segmenter(get_registry(), settings)
    assert again.info()["artifact"]["hit"] is True
