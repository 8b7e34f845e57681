"""onnxruntime: runs ONNX models with ONNX Runtime on the CPU execution provider (FP32).

Options (`[model] options`): `threads` (intra-op threads, default: all cores), `spin` (let idle threads
spin, default false), `gate` (skip the decoder on frames the frame head calls fire-free) and
`gate_threshold` (fire score below which a frame counts as fire-free, default 0.05).

Models with a frame-level head (a second output, see `FireOnnxArtifact`) get `predict_scored`, which the
pipeline prefers: it puts the score into every Result. The graph is checked when it loads: one N×3×H×W
input and a one-channel map as first output, or a clear error that it is not a fire model.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from firespotter.runtime.errors import PluginError
from firespotter.runtime.formats import OnnxArtifact
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import BackendSpec, module_available
from firespotter.runtime.types import PrecisionLabel

DEFAULT_GATE_THRESHOLD = 0.05


def _session(path, threads: int, spin: bool):
    import onnxruntime as ort

    if not path.is_file():
        raise PluginError(f"model file {path} does not exist")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    # Idle intra-op threads spin by default, burning the cores the pipeline's other stages need.
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise PluginError(f"ONNX Runtime cannot load {path}: {exc}") from None


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.negative(x, dtype=np.float32)
    np.exp(out, out=out)
    out += 1.0
    np.reciprocal(out, out=out)
    return out


class OrtSegmenter:
    def __init__(self, model, artifact: OnnxArtifact, threads: int, spin: bool = False, gate: bool = False,
                 gate_threshold: float = DEFAULT_GATE_THRESHOLD):
        from firespotter.models.export import check_fire_graph

        self.session = _session(artifact.path, threads, spin)
        check_fire_graph(self.session.get_inputs(), self.session.get_outputs(), str(artifact.path))
        self.input_name = self.session.get_inputs()[0].name
        self.artifact = artifact
        self.model_id = model.model_id
        self.input_spec = model.input_spec
        self.precision = PrecisionLabel("fp32", 32, False)
        self.threads = threads
        self._mean = np.asarray(artifact.mean, np.float32).reshape(1, 3, 1, 1) * 255.0
        self._scale = 1.0 / (np.asarray(artifact.std, np.float32).reshape(1, 3, 1, 1) * 255.0)
        outputs = [o.name for o in self.session.get_outputs()]
        fire_output = getattr(artifact, "fire_output", None)
        self._score_index = outputs.index(fire_output) if fire_output in outputs else None
        self.gate = bool(gate)
        self.gate_threshold = float(gate_threshold)
        self.frames = self.gated = 0
        self._encoder = self._decoder = None
        if self.gate:
            enc, dec = getattr(artifact, "encoder", None), getattr(artifact, "decoder", None)
            if self._score_index is None or enc is None or dec is None:
                raise PluginError(f"gate = true needs a model with a frame head and its split encoder/decoder graphs; "
                                  f"{model.model_id} has none",
                                  "use a fireseg model exported by `firespotter export`, or set gate = false")
            self._encoder = _session(enc, threads, spin)
            self._decoder = _session(dec, threads, spin)
            self._decoder_inputs = [i.name for i in self._decoder.get_inputs()]
            self._enc_input = self._encoder.get_inputs()[0].name
        if self._score_index is not None:
            self.predict_scored = self._predict_scored  # only models with a head offer a frame score

    def _prepare(self, batch: np.ndarray) -> np.ndarray:
        size = self.artifact.input_size
        if size is not None and batch.shape[1:3] != size:
            batch = np.stack([cv2.resize(im, (size[1], size[0]), interpolation=cv2.INTER_AREA) for im in batch])
        x = batch.transpose(0, 3, 1, 2).astype(np.float32)
        x -= self._mean
        x *= self._scale
        return x

    def _to_prob(self, out: np.ndarray) -> np.ndarray:
        out = out.reshape(out.shape[0], *out.shape[-2:]).astype(np.float32, copy=False)
        return _sigmoid(out) if self.artifact.output == "logits" else out

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        x = self._prepare(batch)
        self.frames += len(x)
        if not self.gate:
            outs = self.session.run(None, {self.input_name: x})
            score = None if self._score_index is None else _sigmoid(outs[self._score_index].reshape(len(x)))
            return self._to_prob(outs[0]), score
        enc = self._encoder.run(None, {self._enc_input: x})
        score = _sigmoid(enc[0].reshape(len(x)))
        keep = np.flatnonzero(score >= self.gate_threshold)
        h, w = x.shape[-2:]
        prob = np.zeros((len(x), h, w), np.float32)
        self.gated += len(x) - len(keep)
        if len(keep):
            feeds = {name: t[keep] if len(keep) < len(x) else t for name, t in zip(self._decoder_inputs, enc[1:])}
            mask = self._to_prob(self._decoder.run(None, feeds)[0])
            if mask.shape[-2:] != (h, w):
                prob = np.zeros((len(x), *mask.shape[-2:]), np.float32)
            prob[keep] = mask
        return prob, score

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch)[0]

    def _predict_scored(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._run(batch)

    def info(self) -> dict:
        out = {"backend": "onnxruntime", "providers": self.session.get_providers(), "model_id": self.model_id,
               "path": str(self.artifact.path), "threads": self.threads, "frame_head": self._score_index is not None,
               **self.precision.as_dict()}
        if self.gate:
            out.update(gate=True, gate_threshold=self.gate_threshold, frames=self.frames, decoder_skipped=self.gated)
        return out


def _bool(options: dict, key: str) -> bool:
    v = options.get(key, False)
    if isinstance(v, str):
        if v.lower() in ("1", "true", "yes", "on"):
            return True
        if v.lower() in ("0", "false", "no", "off", ""):
            return False
        raise PluginError(f"[model] options.{key} must be true or false, not {v!r}")
    return bool(v)


def load(model, precision: str = "fp32", device: str = "cpu", options: dict | None = None):
    if precision != "fp32":
        raise PluginError(f"backend 'onnxruntime' runs fp32 here, not {precision!r}",
                          "quantized artifacts come with the quantization plugins; for fp16/bf16 use backend torch")
    if device != "cpu":
        raise PluginError(f"backend 'onnxruntime' (CPU build) cannot use device {device!r}",
                          "install firespotter[gpu] for CUDA")
    options = options or {}
    try:
        threads = int(options.get("threads", os.cpu_count() or 1))
        gate_threshold = float(options.get("gate_threshold", DEFAULT_GATE_THRESHOLD))
    except (TypeError, ValueError):
        raise PluginError("[model] options: threads must be an integer and gate_threshold a number, got "
                          f"threads={options.get('threads')!r}, gate_threshold={options.get('gate_threshold')!r}") from None
    if threads < 1:
        raise PluginError(f"[model] options.threads must be at least 1, got {threads}")
    return OrtSegmenter(model, model.artifact("onnx"), threads, spin=_bool(options, "spin"),
                        gate=_bool(options, "gate"), gate_threshold=gate_threshold)


@hookimpl
def register_backends():
    return [BackendSpec("onnxruntime", load, formats=("onnx",), description="ONNX Runtime, CPU execution provider",
                        priority=10, available=module_available("onnxruntime"))]
