"""torch: runs the project's PyTorch fire networks eagerly, on the CPU or a CUDA device.

Precision: `fp32`, or autocast (AMP) in `bf16` / `fp16` (ask with `--precision`, or `[model] backend_options.amp
= true` for the device's natural choice: bf16 on the CPU, fp16 on CUDA). Options (`[model] backend_options`,
checked by `TorchOptions`): `threads` (torch intra-op threads on the CPU), `gate` and `gate_threshold` (skip the decoder on frames the frame head calls fire-free),
`amp`, `compile` (`true`, or a `torch.compile` mode such as `"max-autotune"`: the forward pass is compiled
on first use, which takes a while; on the CPU it needs a C compiler), `input_size` (an int or [height, width],
multiples of the network's stride: run the fully convolutional network at another size than the model's own). On CUDA the input and weights are
channels-last and cuDNN autotuning is on (the input size is fixed). Lower priority than onnxruntime: `backend = "auto"` picks ONNX Runtime where both can run a model.

Capabilities: `frame_head` (predict_scored gives the frame score) and `adaptable()`, an AdaptableModule: the
nn.Module it serves (batch norm intact, channels-last), which test-time adaptation updates in place.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np
from pydantic import Field, field_validator

from firespotter.runtime.config import parse_flag
from firespotter.runtime.errors import PluginError
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.protocols import AdaptableModule, Preprocess, SegmenterBase
from firespotter.runtime.specs import BackendSpec, module_available
from firespotter.runtime.types import PrecisionLabel

from .options import FrameHeadOptions

PRECISIONS = ("fp32", "fp16", "bf16")
STRIDE = 32  # the networks' output stride: input sizes are multiples of it


class TorchOptions(FrameHeadOptions):
    """`[model] backend_options` of the torch backend (threads: torch's intra-op threads on the CPU)."""

    amp: bool = Field(False, description="autocast in the device's natural 16-bit type (bf16 CPU, fp16 CUDA)")
    compile: str | None = Field(None, description="true (torch.compile's default mode) or a mode, e.g. max-autotune")
    input_size: tuple[int, int] | None = Field(None, description="run at this size: an int or [height, width], "
                                               f"multiples of {STRIDE}")

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_mode(cls, value: Any) -> str | None:
        if value is None or isinstance(value, bool):
            return "default" if value else None
        try:
            return "default" if parse_flag(str(value)) else None
        except ValueError:
            return str(value) or None

    @field_validator("input_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return [value, value] if isinstance(value, (int, str)) else value

    @field_validator("input_size")
    @classmethod
    def _stride(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and any(v < STRIDE or v % STRIDE for v in value):
            raise ValueError(f"must be multiples of {STRIDE} (the network's stride), got {value[0]}x{value[1]}")
        return value


class TorchSegmenter(SegmenterBase):
    frame_head = True  # the project's fire networks all have a frame-level head
    def __init__(self, model, artifact, device: str, amp: str | None, gate: bool, gate_threshold: float,
                 compile_mode: str | None = None):
        import torch

        from firespotter.models.checkpoint import load_checkpoint, model_from_checkpoint

        self.torch = torch
        self.device = torch.device(device)
        ckpt = load_checkpoint(artifact.checkpoint)
        if ckpt["arch"] != artifact.arch:
            raise PluginError(f"checkpoint {artifact.checkpoint} holds a {ckpt['arch']}, not a {artifact.arch}")
        self.module = model_from_checkpoint(ckpt).to(self.device).to(memory_format=torch.channels_last).eval()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one fixed input size: pick the fastest conv algorithm once
        # The compiled callable shares the module's parameters, so adapters updating `module` still apply.
        self.compile_mode = compile_mode
        self._forward = self.module
        if compile_mode:
            self._forward = torch.compile(self.module, mode=None if compile_mode == "default" else compile_mode)
        self.artifact = artifact
        self.model_id = model.model_id
        # The size it runs at (options.input_size may differ from the model's): its output's size
        self.input_spec = (dataclasses.replace(model.input_spec, size=tuple(artifact.input_size))
                           if artifact.input_size is not None else model.input_spec)
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
                logits, fire = self._forward(x)
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

    def adaptable(self) -> AdaptableModule:
        art = self.artifact
        return AdaptableModule(self.module, Preprocess(art.input_size, art.mean, art.std), str(self.device))

    def info(self) -> dict:
        out = {"backend": "torch", "device": str(self.device), "model_id": self.model_id, "amp": self.amp,
               "checkpoint": str(self.artifact.checkpoint), "threads": self.torch.get_num_threads(),
               "frame_head": True, "compile": self.compile_mode, "channels_last": True, **self.precision.as_dict()}
        if self.gate:
            out.update(gate=True, gate_threshold=self.gate_threshold, frames=self.frames, decoder_skipped=self.gated)
        return out


def load(model, precision: str = "fp32", device: str = "cpu", options: TorchOptions | None = None):
    import torch

    options = options or TorchOptions()
    if precision not in PRECISIONS:
        raise PluginError(f"backend 'torch' runs {', '.join(PRECISIONS)}, not {precision!r}")
    if device != "cpu" and not str(device).startswith("cuda"):
        raise PluginError(f"backend 'torch' runs on cpu or cuda[:N], not {device!r}")
    if str(device).startswith("cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise PluginError(f"backend 'torch': device {device!r} asked for but CUDA is not available here "
                              f"(torch {torch.__version__} is {build}, or no NVIDIA driver/GPU is visible)",
                              "use device = \"cpu\", or install a CUDA build of torch (on a Jetson: NVIDIA's "
                              "torch wheel for its JetPack)")
        index = str(device).split(":", 1)[1] if ":" in str(device) else "0"
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise PluginError(f"backend 'torch': no CUDA device {device!r}; this machine has "
                              f"{torch.cuda.device_count()} (cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    amp = None if precision == "fp32" else precision
    if options.amp and amp is None:
        amp = "fp16" if str(device).startswith("cuda") else "bf16"
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    if options.compile and options.gate:
        raise PluginError("compile = true compiles the whole forward pass; gate = true runs the encoder and "
                          "decoder separately", "use one of them")
    artifact = model.artifact("torch")
    if options.input_size is not None:
        artifact = dataclasses.replace(artifact, input_size=tuple(options.input_size))
    return TorchSegmenter(model, artifact, device, amp, options.gate, options.gate_threshold, options.compile)


@hookimpl
def register_backends():
    return [BackendSpec("torch", load, formats=("torch",), description="PyTorch eager or torch.compile, CPU or CUDA (AMP optional, channels-last)",
                        priority=5, available=module_available("torch", extra="torch"), options_model=TorchOptions)]
