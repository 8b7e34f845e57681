"""torch: runs the project's PyTorch fire networks eagerly, on the CPU or a CUDA device.

Precision: `fp32`, or autocast (AMP) in `bf16` / `fp16` (ask with `--precision`, or `[model] options.amp =
true` for the device's natural choice: bf16 on the CPU, fp16 on CUDA). Options: `threads` (torch intra-op
threads on the CPU), `gate` and `gate_threshold` (skip the decoder on frames the frame head calls fire-free),
`amp`. Lower priority than onnxruntime: `backend = "auto"` picks ONNX Runtime where both can run a model.

The segmenter keeps the nn.Module (`segmenter.module`, batch norm intact, channels-last) so test-time adaptation
can update it in place.
"""

from __future__ import annotations

import cv2
import numpy as np

from firespotter.runtime.errors import PluginError
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import BackendSpec, module_available
from firespotter.runtime.types import PrecisionLabel

DEFAULT_GATE_THRESHOLD = 0.05
PRECISIONS = ("fp32", "fp16", "bf16")


class TorchSegmenter:
    def __init__(self, model, artifact, device: str, amp: str | None, gate: bool, gate_threshold: float):
        import torch

        from firespotter.models.training import load_checkpoint, model_from_checkpoint

        self.torch = torch
        self.device = torch.device(device)
        ckpt = load_checkpoint(artifact.checkpoint)
        if ckpt["arch"] != artifact.arch:
            raise PluginError(f"checkpoint {artifact.checkpoint} holds a {ckpt['arch']}, not a {artifact.arch}")
        self.module = model_from_checkpoint(ckpt).to(self.device).to(memory_format=torch.channels_last).eval()
        self.artifact = artifact
        self.model_id = model.model_id
        self.input_spec = model.input_spec
        self.amp = amp
        self._amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
        self.precision = PrecisionLabel(amp or "fp32", 16 if amp else 32, False)
        self.gate = gate
        self.gate_threshold = gate_threshold
        self.frames = self.gated = 0
        self._mean = np.asarray(artifact.mean, np.float32).reshape(1, 3, 1, 1) * 255.0
        self._scale = 1.0 / (np.asarray(artifact.std, np.float32).reshape(1, 3, 1, 1) * 255.0)

    def _prepare(self, batch: np.ndarray):
        size = self.artifact.input_size
        if size is not None and batch.shape[1:3] != tuple(size):
            batch = np.stack([cv2.resize(im, (size[1], size[0]), interpolation=cv2.INTER_AREA) for im in batch])
        x = batch.transpose(0, 3, 1, 2).astype(np.float32)
        x -= self._mean
        x *= self._scale
        return self.torch.from_numpy(x).to(self.device).contiguous(memory_format=self.torch.channels_last)

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        x = self._prepare(batch)
        self.frames += len(x)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self._amp_dtype,
                                                    enabled=self._amp_dtype is not None):
            if not self.gate:
                logits, fire = self.module(x)
                score = torch.sigmoid(fire.float()).reshape(-1)
            else:
                fire, skips = self.module.encode(x)
                score = torch.sigmoid(fire.float()).reshape(-1)
                keep = torch.nonzero(score >= self.gate_threshold).reshape(-1)
                logits = torch.full((len(x), 1, *x.shape[-2:]), -torch.inf, device=x.device)
                self.gated += len(x) - len(keep)
                if len(keep):
                    part = self.module.decode([s[keep] for s in skips]).float()
                    if part.shape[-2:] != logits.shape[-2:]:
                        logits = torch.full((len(x), 1, *part.shape[-2:]), -torch.inf, device=x.device)
                    logits[keep] = part
            prob = torch.sigmoid(logits.float())[:, 0]
        return prob.cpu().numpy(), score.cpu().numpy()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch)[0]

    def predict_scored(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._run(batch)

    def info(self) -> dict:
        out = {"backend": "torch", "device": str(self.device), "model_id": self.model_id, "amp": self.amp,
               "checkpoint": str(self.artifact.checkpoint), "threads": self.torch.get_num_threads(),
               "frame_head": True, **self.precision.as_dict()}
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
    import torch

    options = options or {}
    if precision not in PRECISIONS:
        raise PluginError(f"backend 'torch' runs {', '.join(PRECISIONS)}, not {precision!r}")
    if device != "cpu" and not str(device).startswith("cuda"):
        raise PluginError(f"backend 'torch' runs on cpu or cuda[:N], not {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise PluginError(f"backend 'torch': device {device!r} asked for but CUDA is not available here",
                          "use device = \"cpu\"")
    amp = None if precision == "fp32" else precision
    if _bool(options, "amp") and amp is None:
        amp = "fp16" if str(device).startswith("cuda") else "bf16"
    try:
        gate_threshold = float(options.get("gate_threshold", DEFAULT_GATE_THRESHOLD))
        threads = options.get("threads")
        threads = None if threads is None else int(threads)
    except (TypeError, ValueError):
        raise PluginError("[model] options: threads must be an integer and gate_threshold a number") from None
    if threads is not None:
        if threads < 1:
            raise PluginError(f"[model] options.threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    return TorchSegmenter(model, model.artifact("torch"), device, amp, _bool(options, "gate"), gate_threshold)


@hookimpl
def register_backends():
    return [BackendSpec("torch", load, formats=("torch",), description="PyTorch eager, CPU or CUDA (AMP optional)",
                        priority=5, available=module_available("torch", extra="torch"))]
