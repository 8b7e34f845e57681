"""The onnxruntime backend runs a real ONNX graph in a real session, with resizing and normalisation."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import REPO
from firespotter.runtime.assemble import bind_segmenter
from firespotter.runtime.config import ModelSettings
from firespotter.runtime.errors import PluginError
from firespotter.runtime.formats import OnnxArtifact
from firespotter.runtime.plugins import hookimpl, new_registry
from firespotter.runtime.specs import ModelSpec
from firespotter.runtime.types import InputSpec

sys.path.insert(0, str(REPO / "bench"))
from cnn_standin import build  # noqa: E402


class OnnxModelPlugin:
    def __init__(self, path):
        self.path = path

    @hookimpl
    def register_models(self):
        path = self.path

        class M:
            model_id = "standin"
            input_spec = InputSpec(size=(64, 64))

            def formats(self):
                return ("onnx",)

            def artifact(self, fmt):
                return OnnxArtifact(path, (64, 64))

        return [ModelSpec("standin", lambda options: M())]


def test_onnx_model_runs_on_onnxruntime(tmp_path):
    path = build(tmp_path / "m.onnx", size=64)
    registry = new_registry(plugins=[("onnxmodel", OnnxModelPlugin(path))])
    seg, backend = bind_segmenter(registry, ModelSettings(name="standin"))
    assert backend == "onnxruntime"
    batch = np.zeros((1, 128, 96, 3), np.uint8)  # another size: the backend resizes to 64x64
    batch[0, :64, :, 0] = 255  # top half red: the stand-in's colour term says fire there
    prob = seg.predict(batch)
    assert prob.shape == (1, 64, 64) and prob.dtype == np.float32
    assert prob[0, :28].mean() > 0.9 and prob[0, 36:].mean() < 0.1
    assert seg.info()["providers"] == ["CPUExecutionProvider"]


def test_numpy_backend_cannot_run_onnx(tmp_path):
    registry = new_registry(plugins=[("onnxmodel", OnnxModelPlugin(build(tmp_path / "m.onnx", size=64)))])
    with pytest.raises(PluginError, match="backend 'numpy' cannot run model 'standin'"):
        bind_segmenter(registry, ModelSettings(name="standin", backend="numpy"))


def test_missing_or_corrupt_onnx_file(tmp_path):
    registry = new_registry(plugins=[("onnxmodel", OnnxModelPlugin(tmp_path / "absent.onnx"))])
    with pytest.raises(PluginError, match="does not exist"):
        bind_segmenter(registry, ModelSettings(name="standin"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    registry = new_registry(plugins=[("onnxmodel", OnnxModelPlugin(bad))])
    with pytest.raises(PluginError, match="cannot load"):
        bind_segmenter(registry, ModelSettings(name="standin"))
