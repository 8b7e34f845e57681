"""onnxruntime: runs ONNX models with ONNX Runtime on the CPU execution provider (FP32)."""

from __future__ import annotations

import os

import cv2
import numpy as np

from firespotter.runtime.errors import PluginError
from firespotter.runtime.formats import OnnxArtifact
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import BackendSpec, module_available
from firespotter.runtime.types import PrecisionLabel


class OrtSegmenter:
    def __init__(self, model, artifact: OnnxArtifact, threads: int, spin: bool = False):
        import onnxruntime as ort

        if not artifact.path.is_file():
            raise PluginError(f"model file {artifact.path} does not exist")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        # Idle intra-op threads spin by default, burning the cores the pipeline's other stages need.
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            self.session = ort.InferenceSession(str(artifact.path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise PluginError(f"ONNX Runtime cannot load {artifact.path}: {exc}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.artifact = artifact
        self.model_id = model.model_id
        self.input_spec = model.input_spec
        self.precision = PrecisionLabel("fp32", 32, False)
        self._mean = np.asarray(artifact.mean, np.float32).reshape(1, 3, 1, 1) * 255.0
        self._scale = 1.0 / (np.asarray(artifact.std, np.float32).reshape(1, 3, 1, 1) * 255.0)

    def _prepare(self, batch: np.ndarray) -> np.ndarray:
        size = self.artifact.input_size
        if size is not None and batch.shape[1:3] != size:
            batch = np.stack([cv2.resize(im, (size[1], size[0]), interpolation=cv2.INTER_AREA) for im in batch])
        x = batch.transpose(0, 3, 1, 2).astype(np.float32)
        x -= self._mean
        x *= self._scale
        return x

    def predict(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: self._prepare(batch)})[0]
        out = out.reshape(out.shape[0], *out.shape[-2:]).astype(np.float32, copy=False)
        if self.artifact.output == "logits":
            out = 1.0 / (1.0 + np.exp(-out))
        return out

    def info(self) -> dict:
        return {"backend": "onnxruntime", "providers": self.session.get_providers(), "model_id": self.model_id,
                "path": str(self.artifact.path), **self.precision.as_dict()}


def load(model, precision: str = "fp32", device: str = "cpu", options: dict | None = None):
    if precision != "fp32":
        raise PluginError(f"backend 'onnxruntime' runs fp32 here, not {precision!r}",
                          "quantized artifacts come with the quantization plugins")
    if device != "cpu":
        raise PluginError(f"backend 'onnxruntime' (CPU build) cannot use device {device!r}",
                          "install firespotter[gpu] for CUDA")
    threads = int((options or {}).get("threads", os.cpu_count() or 1))
    return OrtSegmenter(model, model.artifact("onnx"), threads)


@hookimpl
def register_backends():
    return [BackendSpec("onnxruntime", load, formats=("onnx",), description="ONNX Runtime, CPU execution provider",
                        priority=10, available=module_available("onnxruntime"))]
