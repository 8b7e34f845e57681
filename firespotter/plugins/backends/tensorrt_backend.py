"""tensorrt: the project's PyTorch fire networks compiled ahead of time by Torch-TensorRT (dynamo IR), on CUDA.

Optional: needs an NVIDIA GPU, TensorRT and torch-tensorrt. On a Jetson, TensorRT comes with JetPack and
torch-tensorrt from NVIDIA's wheels for that JetPack (or the NGC l4t-pytorch containers); on an x86 machine with
CUDA, `pip install 'firespotter[tensorrt]'`. Where any of that is missing, `available()` says which.

Precision: `fp32`, `fp16` (explicit typing with autocast to float16 where the installed torch-tensorrt has it,
`enabled_precisions={torch.float16}` on older ones), `int8` (the network is quantized with Q/DQ nodes by
NVIDIA ModelOpt, calibrated on real frames from `calib`, then compiled; needs `nvidia-modelopt`).
Shapes are static: `batch` (default 1) × 3 × the model's input size; a smaller batch is padded, a larger one
is run in chunks. The compiled program is saved (`torch_tensorrt.save`, ExportedProgram) into the artifact
cache, keyed by checkpoint sha256, precision, GPU name and compute capability, library versions and the
calibration set; later starts load it (`torch.export.load`) without building. Options (`[model]
backend_options`, checked by `TensorRTOptions`): `batch`, `calib`, `calib_frames`, `rebuild`, `workspace_mb`.

Capabilities: `frame_head` (predict_scored gives the frame score). A compiled engine cannot be adapted at test
time: `adaptable()` is None, and an adapter says so.
"""

from __future__ import annotations

import inspect
import json

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from firespotter.runtime.errors import PluginError
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.protocols import SegmenterBase
from firespotter.runtime.specs import Availability, BackendSpec
from firespotter.runtime.types import PrecisionLabel

PRECISIONS = {"fp32": PrecisionLabel("fp32", 32, False), "fp16": PrecisionLabel("fp16", 16, False),
              "int8": PrecisionLabel("int8", 8, False)}
HOW_TO_GET = ("on a Jetson: install JetPack (it ships TensorRT) and NVIDIA's torch-tensorrt wheel for that JetPack "
              "(or use the l4t-pytorch container); on x86 with CUDA: pip install 'firespotter[tensorrt]'")


class TensorRTOptions(BaseModel):
    """`[model] backend_options` of the tensorrt backend."""

    model_config = ConfigDict(extra="forbid")
    batch: int = Field(1, ge=1, description="the engine's static batch size")
    calib: str | None = Field(None, description="real calibration frames (folder or video); int8 needs them")
    calib_frames: int | None = Field(None, ge=1, description="how many; default: the calibration default")
    rebuild: bool = Field(False, description="build even when the artifact cache has the engine")
    workspace_mb: float | None = Field(None, gt=0, description="TensorRT builder workspace")


def available() -> Availability:
    """One line: what is missing (TensorRT, torch-tensorrt, a CUDA device) and how to get it."""
    missing = []
    for module, what in (("tensorrt", "TensorRT"), ("torch_tensorrt", "torch-tensorrt")):
        try:
            __import__(module)
        except Exception:  # ImportError, or a broken install raising anything
            missing.append((module, what))
    if missing:
        return Availability(False, f"{' and '.join(w for _, w in missing)} not installed (cannot import "
                                   f"{', '.join(m for m, _ in missing)}); {HOW_TO_GET}")
    import torch

    if not torch.cuda.is_available():
        return Availability(False, "TensorRT is installed but no CUDA device is visible (torch.cuda.is_available() "
                                   "is False); TensorRT runs on NVIDIA GPUs only")
    return Availability(True)


def _precision_kwargs(compile_fn, precision: str) -> dict:
    """FP16 the way the installed torch-tensorrt wants it: explicit typing + autocast, else enabled_precisions."""
    import torch

    params = inspect.signature(compile_fn).parameters
    if precision == "fp16":
        if "enable_autocast" in params:
            return {"use_explicit_typing": True, "enable_autocast": True, "low_precision_type": torch.float16}
        return {"enabled_precisions": {torch.float16}}
    if precision == "int8":  # Q/DQ nodes carry the int8 types; older versions also need the flag
        return {} if "enable_autocast" in params else {"enabled_precisions": {torch.float16, torch.int8}}
    return {}


def _quantize_int8(module, frames: list[np.ndarray], prepare):
    """Insert Q/DQ (INT8 weights per channel, activations per tensor) with ModelOpt and calibrate on real frames."""
    try:
        import modelopt.torch.quantization as mtq
    except ImportError:
        raise PluginError("precision int8 on backend tensorrt needs NVIDIA ModelOpt to insert Q/DQ nodes",
                          "pip install nvidia-modelopt") from None

    def forward_loop(m):
        for i in range(0, len(frames), 4):
            m(prepare(np.stack(frames[i:i + 4])))

    return mtq.quantize(module, mtq.INT8_DEFAULT_CFG, forward_loop)


def _compile(module, example, precision: str, workspace_mb: float | None):
    import torch
    import torch_tensorrt

    kwargs = _precision_kwargs(torch_tensorrt.dynamo.compile, precision)
    if workspace_mb:
        kwargs["workspace_size"] = int(workspace_mb * (1 << 20))
    with torch.no_grad():
        if precision == "int8":
            from modelopt.torch.quantization.utils import export_torch_mode

            with export_torch_mode():
                program = torch.export.export(module, (example,), strict=False)
            return torch_tensorrt.dynamo.compile(program, arg_inputs=[example], min_block_size=1, **kwargs)
        program = torch.export.export(module, (example,))
        return torch_tensorrt.dynamo.compile(program, arg_inputs=[example], **kwargs)


class TensorRTSegmenter(SegmenterBase):
    frame_head = True

    def __init__(self, model, artifact, device: str, precision: str, options: TensorRTOptions):
        import torch

        from firespotter.models.build import LIBRARIES, device_identity
        from firespotter.models.calibration import DEFAULT_FRAMES, load_calibration
        from firespotter.models.checkpoint import load_checkpoint, model_from_checkpoint
        from firespotter.runtime.artifacts import ArtifactCache, ArtifactKey, library_versions, sha256_file

        self.torch = torch
        self.device = torch.device(device)
        self.artifact = artifact
        self.model_id = model.model_id
        self.input_spec = model.input_spec
        self.precision = PRECISIONS[precision]
        self.batch = options.batch
        self._mean = np.asarray(artifact.mean, np.float32).reshape(1, 3, 1, 1) * 255.0
        self._scale = 1.0 / (np.asarray(artifact.std, np.float32).reshape(1, 3, 1, 1) * 255.0)
        h, w = artifact.input_size
        calib = None
        if options.calib:
            calib = load_calibration(options.calib, options.calib_frames or DEFAULT_FRAMES, (h, w))
        if precision == "int8" and calib is None:
            raise PluginError("precision int8 on backend tensorrt needs real calibration frames",
                              "pass --calib DIR (or [model] backend_options.calib)")
        name, capability = device_identity(device)
        key = ArtifactKey(model_sha256=sha256_file(artifact.checkpoint), backend="tensorrt", precision=precision,
                          device=name, compute_capability=capability, versions=library_versions(LIBRARIES),
                          calibration_sha256=calib.sha256 if calib else None,
                          options=(("batch", str(self.batch)), ("input_size", json.dumps([h, w]))))

        def build(tmp):
            ckpt = load_checkpoint(artifact.checkpoint)
            module = model_from_checkpoint(ckpt).to(self.device).eval()
            example = torch.zeros((self.batch, 3, h, w), device=self.device)
            if precision == "int8":
                module = _quantize_int8(module, calib.frames, self._prepare)
            import torch_tensorrt

            compiled = _compile(module, example, precision, options.workspace_mb)
            torch_tensorrt.save(compiled, str(tmp / "model.ep"), arg_inputs=[example])
            return {"roles": {"program": "model.ep"}, "static_shape": [self.batch, 3, h, w]}

        cache = ArtifactCache()
        hit = None if options.rebuild else cache.get(key)
        self.built = hit or cache.build(key, build, self.precision,
                                        describe=f"{model.model_id} {precision} TensorRT engine on {name}")
        self.module = torch.export.load(str(self.built.path("model.ep"))).module()

    def _prepare(self, batch: np.ndarray):
        h, w = self.artifact.input_size
        if batch.shape[1:3] != (h, w):
            batch = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in batch])
        x = batch.transpose(0, 3, 1, 2).astype(np.float32)
        x -= self._mean
        x *= self._scale
        return self.torch.from_numpy(x).to(self.device)

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        probs, scores = [], []
        for i in range(0, len(batch), self.batch):  # static shapes: fixed-size chunks, the last one padded
            part = batch[i:i + self.batch]
            n = len(part)
            if n < self.batch:
                part = np.concatenate([part, np.repeat(part[-1:], self.batch - n, axis=0)])
            with torch.inference_mode():
                logits, fire = self.module(self._prepare(part))
            probs.append(torch.sigmoid(logits.float())[:n, 0].cpu().numpy())
            scores.append(torch.sigmoid(fire.float()).reshape(-1)[:n].cpu().numpy())
        return np.concatenate(probs), np.concatenate(scores)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch)[0]

    def predict_scored(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._run(batch)

    def info(self) -> dict:
        return {"backend": "tensorrt", "device": str(self.device), "model_id": self.model_id, "batch": self.batch,
                "artifact": {"dir": str(self.built.dir), "hit": not self.built.built, "build_s": self.built.build_s},
                "frame_head": True, **self.precision.as_dict()}


def load(model, precision: str = "fp32", device: str = "cuda", options: TensorRTOptions | None = None):
    avail = available()
    if not avail:
        raise PluginError(f"backend 'tensorrt' is not available here: {avail.reason}")
    if precision not in PRECISIONS:
        raise PluginError(f"backend 'tensorrt' runs {', '.join(PRECISIONS)}, not {precision!r}")
    device = "cuda:0" if device in ("cpu", "cuda") else device  # TensorRT runs on the GPU whatever the default says
    if not str(device).startswith("cuda:"):
        raise PluginError(f"backend 'tensorrt' runs on cuda[:N], not {device!r}")
    return TensorRTSegmenter(model, model.artifact("torch"), device, precision, options or TensorRTOptions())


@hookimpl
def register_backends():
    return [BackendSpec("tensorrt", load, formats=("torch",), priority=3, available=available,
                        description="Torch-TensorRT AOT engines (fp32/fp16/int8 Q/DQ), static shapes, cached",
                        built_precisions=lambda: tuple(PRECISIONS), options_model=TensorRTOptions)]
