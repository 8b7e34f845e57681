"""onnxruntime: runs ONNX models with ONNX Runtime: TensorRT > CUDA > CPU execution providers, any precision.

Options (`[model] backend_options`, checked by `OrtOptions`): `threads` (intra-op threads, default: all cores),
`spin` (let idle threads spin, default false), `gate` (skip the decoder on frames the frame head calls
fire-free) and `gate_threshold` (fire score below which a frame counts as fire-free, default 0.05).

Providers: `device = "cuda[:N]"` asks for TensorRT, then CUDA, then the CPU; `providers` (a list or a comma
string of `tensorrt`, `cuda`, `cpu` or full EP names) overrides the order. TensorRT EP options: `trt_fp16`,
`trt_int8` (default: from the precision), `trt_engine_cache` (folder; default: the artifact cache's
`ort-trt/`), `trt_timing_cache` (true or a folder), `trt_ep_context` (true, or the path of an EP-context model:
the first start dumps the built engine into it, later starts load it and skip the TensorRT builder; with `true`
the file sits in the engine cache, named after the graph's sha256, so a changed model never loads a stale
engine), `trt_workspace_mb`. After the session is created the providers it really
got are checked: a requested provider that fell back (e.g. CUDA on a CPU-only onnxruntime) is logged once as a
warning and reported by `info()["provider_fallback"]`.

Precision: `fp32` runs the model file; any other registered precision (`firespotter.models.variants`: fp16,
int8, ...) is built once through the artifact cache and loaded from it, verified. Build options: `calib`
(folder or video of real frames), `calib_frames`, `build` (a table passed to the variant builder), `rebuild`.

Capabilities: `frame_head` is true for models with a frame-level head (a second output, see
`FireOnnxArtifact`): `predict_scored` then gives one fire score per frame, which the pipeline puts into every
Result. `adaptable()` is an AdaptableGraph: adapters update a PyTorch shadow and hand the updated graph back
(`build_session`, `replace_session`). The graph is checked when it loads: one N×3×H×W input and a one-channel
map as first output, or a clear error that it is not a fire model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import Field, field_validator

from firespotter.runtime.config import parse_flag
from firespotter.runtime.errors import PluginError
from firespotter.runtime.formats import FireOnnxArtifact, OnnxArtifact
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.protocols import AdaptableGraph, Preprocess, SegmenterBase
from firespotter.runtime.specs import BackendSpec, module_available
from firespotter.runtime.types import PrecisionLabel

from .options import DEFAULT_GATE_THRESHOLD, FrameHeadOptions

log = logging.getLogger("firespotter.onnxruntime")

PROVIDER_NAMES = {"tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
                  "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
GPU_HINT = ("install onnxruntime-gpu (pip install 'firespotter[gpu]') built for this machine's CUDA/cuDNN "
            "(and TensorRT for the TensorRT provider); on a Jetson use the onnxruntime-gpu wheel for its JetPack")


def _flag_or_path(value: Any) -> Any:
    """true/false (also as the usual words: CLI and environment values are strings) or a path."""
    if isinstance(value, str):
        try:
            return parse_flag(value)
        except ValueError:
            return value
    return value


class OrtOptions(FrameHeadOptions):
    """`[model] backend_options` of the onnxruntime backend (threads: default all cores)."""

    spin: bool = Field(False, description="let idle intra-op threads spin")
    providers: str | list[str] | None = Field(None, description="tensorrt, cuda, cpu or EP names, in order")
    trt_fp16: bool | None = Field(None, description="TensorRT EP fp16; default: from the precision")
    trt_int8: bool | None = Field(None, description="TensorRT EP int8; default: from the precision")
    trt_engine_cache: str | None = Field(None, description="folder; default: the artifact cache's ort-trt/")
    trt_timing_cache: bool | str = Field(True, description="true, false or a folder")
    trt_ep_context: bool | str = Field(False, description="true, or the path of an EP-context model")
    trt_workspace_mb: float | None = Field(None, gt=0, description="TensorRT EP builder workspace")
    calib: str | None = Field(None, description="real calibration frames (folder or video) for built precisions")
    calib_frames: int | None = Field(None, ge=1, description="how many; default: the calibration default")
    build: dict[str, Any] = Field(default_factory=dict, description="options of the precision variant's builder")
    rebuild: bool = Field(False, description="build even when the artifact cache has it")

    _flags = field_validator("trt_timing_cache", "trt_ep_context", mode="before")(_flag_or_path)


def provider_names(requested) -> list[str]:
    """`providers` option -> ORT provider names, in order, CPU last (ORT's own fallback)."""
    items = [p.strip() for p in requested.split(",")] if isinstance(requested, str) else list(requested)
    out = []
    for item in items:
        name = PROVIDER_NAMES.get(str(item).lower(), str(item))
        if not name.endswith("ExecutionProvider"):
            raise PluginError(f"[model] backend_options.providers: unknown provider {item!r}",
                              "use tensorrt, cuda, cpu or a full ONNX Runtime provider name")
        if name not in out:
            out.append(name)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def provider_plan(device: str, options: OrtOptions, labels: PrecisionLabel,
                  ep_context: Path | None = None) -> list[tuple[str, dict]]:
    """(provider, provider options) in priority order: TensorRT > CUDA > CPU unless `providers` says otherwise.
    ep_context: the TensorRT EP-context model's path (built and dumped at the first start when missing)."""
    device_id = str(device).split(":", 1)[1] if ":" in str(device) else "0"
    if options.providers is not None:
        names = provider_names(options.providers)
    elif str(device).startswith("cuda"):
        names = provider_names(["tensorrt", "cuda", "cpu"])
    else:
        names = ["CPUExecutionProvider"]
    plan = []
    for name in names:
        if name == "TensorrtExecutionProvider":
            plan.append((name, trt_provider_options(device_id, options, labels, ep_context)))
        elif name == "CUDAExecutionProvider":
            plan.append((name, {"device_id": device_id, "cudnn_conv_algo_search": "HEURISTIC"}))
        else:
            plan.append((name, {}))
    return plan


def _engine_cache(options: OrtOptions) -> Path:
    from firespotter.runtime.artifacts import default_cache_dir

    return Path(str(options.trt_engine_cache or default_cache_dir() / "ort-trt")).expanduser()


def trt_provider_options(device_id: str, options: OrtOptions, labels: PrecisionLabel,
                         ep_context: Path | None = None) -> dict:
    engine_cache = _engine_cache(options)
    po = {
        "device_id": device_id,
        "trt_fp16_enable": labels.precision_exec == "fp16" if options.trt_fp16 is None else options.trt_fp16,
        "trt_int8_enable": labels.precision_exec == "int8" if options.trt_int8 is None else options.trt_int8,
        # The EP's own engine cache: without it every start rebuilds the engine (minutes on a Jetson).
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(engine_cache),
    }
    timing = options.trt_timing_cache
    if timing is not False:
        po["trt_timing_cache_enable"] = True
        po["trt_timing_cache_path"] = str(engine_cache if timing is True else timing)
    if ep_context is not None and not Path(ep_context).is_file():
        po["trt_dump_ep_context_model"] = True  # first start: build, then dump the engine for the next ones
        po["trt_ep_context_file_path"] = str(ep_context)
    if options.trt_workspace_mb is not None:
        po["trt_max_workspace_size"] = int(options.trt_workspace_mb * (1 << 20))
    return {k: (str(v) if not isinstance(v, bool) else ("True" if v else "False")) for k, v in po.items()}


def _session(path, threads: int, spin: bool, plan: list[tuple[str, dict]] | None = None):
    import onnxruntime as ort

    if not path.is_file():
        raise PluginError(f"model file {path} does not exist")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    # Idle intra-op threads spin by default, burning the cores the pipeline's other stages need.
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    # Pass only providers this build has: ORT would otherwise print its own multi-line warnings; the
    # fallback is reported once by the caller, after comparing with what the session really got.
    available = set(ort.get_available_providers())
    plan = [(n, o) for n, o in (plan or [("CPUExecutionProvider", {})]) if n in available] or [("CPUExecutionProvider", {})]
    try:
        return ort.InferenceSession(str(path), so, providers=[n for n, _ in plan],
                                    provider_options=[o for _, o in plan])
    except Exception as exc:
        raise PluginError(f"ONNX Runtime cannot load {path}: {exc}") from None


def fallback_message(requested: list[str], got: list[str]) -> str | None:
    """One line when a requested accelerator is not in the session's providers, else None."""
    missing = [p for p in requested if p not in got and p != "CPUExecutionProvider"]
    if not missing:
        return None
    return (f"onnxruntime: asked for {', '.join(missing)} but it is not available here; running on "
            f"{', '.join(got)} instead ({GPU_HINT})")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.negative(x, dtype=np.float32)
    np.exp(out, out=out)
    out += 1.0
    np.reciprocal(out, out=out)
    return out


class OrtSegmenter(SegmenterBase):
    def __init__(self, model, artifact: OnnxArtifact, threads: int, spin: bool = False, gate: bool = False,
                 gate_threshold: float = DEFAULT_GATE_THRESHOLD, *, graph: Path | None = None,
                 labels: PrecisionLabel | None = None, plan: list[tuple[str, dict]] | None = None,
                 built: dict | None = None):
        from firespotter.models.export import check_fire_graph

        self.graph = Path(graph or artifact.path)  # the file the session runs: the model's, or a built variant
        self.plan = plan or [("CPUExecutionProvider", {})]
        self.session = _session(self.graph, threads, spin, self.plan)
        check_fire_graph(self.session.get_inputs(), self.session.get_outputs(), str(self.graph))
        self.requested_providers = [n for n, _ in self.plan]
        self.provider_fallback = fallback_message(self.requested_providers, self.session.get_providers())
        if self.provider_fallback:
            log.warning("%s", self.provider_fallback)
        self.built = built
        self.input_name = self.session.get_inputs()[0].name
        self.artifact = artifact
        self.model_id = model.model_id
        self.input_spec = model.input_spec
        self.precision = labels or PrecisionLabel("fp32", 32, False)
        self.threads = threads
        self._mean = np.asarray(artifact.mean, np.float32).reshape(1, 3, 1, 1) * 255.0
        self._scale = 1.0 / (np.asarray(artifact.std, np.float32).reshape(1, 3, 1, 1) * 255.0)
        outputs = [o.name for o in self.session.get_outputs()]
        head = artifact if isinstance(artifact, FireOnnxArtifact) else None  # a fire model's frame head and split
        self._score_index = outputs.index(head.fire_output) if head and head.fire_output in outputs else None
        self.frame_head = self._score_index is not None  # capability: predict_scored gives a score per frame
        self.gate = bool(gate)
        self.gate_threshold = float(gate_threshold)
        self.frames = self.gated = 0
        self._encoder = self._decoder = None
        if self.gate:
            enc, dec = (head.encoder, head.decoder) if head else (None, None)
            if self._score_index is None or enc is None or dec is None:
                raise PluginError(f"gate = true needs a model with a frame head and its split encoder/decoder graphs; "
                                  f"{model.model_id} has none",
                                  "use a fireseg model exported by `firespotter export`, or set gate = false")
            self._encoder = _session(enc, threads, spin, self.plan)
            self._decoder = _session(dec, threads, spin, self.plan)
            self._decoder_inputs = [i.name for i in self._decoder.get_inputs()]
            self._enc_input = self._encoder.get_inputs()[0].name

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

    def replace_session(self, session) -> None:
        """Serve `session` (the same graph with updated initializers, e.g. test-time adapted norm weights) from
        the next frame on. Call it between frames, on the inference thread; it must keep the inputs/outputs."""
        from firespotter.models.export import check_fire_graph

        check_fire_graph(session.get_inputs(), session.get_outputs(), "replacement session")
        self.session = session

    def build_session(self, graph: bytes):
        """A session for an updated copy of the served graph, with this segmenter's threads and providers (idle
        threads never spin: it is built off the hot path, while inference runs)."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(graph, so, providers=self.session.get_providers())

    def adaptable(self) -> AdaptableGraph:
        if self.gate:
            raise PluginError("adapting an onnxruntime model with gate = true is not supported (the split "
                              "encoder/decoder graphs would keep the source weights)",
                              "set [model] backend_options.gate = false")
        art = self.artifact
        return AdaptableGraph(graph=self.graph, checkpoint=Path(art.path).with_suffix(".pt"),
                              preprocess=Preprocess(art.input_size, art.mean, art.std),
                              build_session=self.build_session, replace_session=self.replace_session)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch)[0]

    def predict_scored(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self._run(batch)

    def info(self) -> dict:
        out = {"backend": "onnxruntime", "providers": self.session.get_providers(), "model_id": self.model_id,
               "path": str(self.graph), "threads": self.threads, "frame_head": self.frame_head,
               **self.precision.as_dict()}
        if self.requested_providers != ["CPUExecutionProvider"]:
            out["requested_providers"] = self.requested_providers
        if self.provider_fallback:
            out["provider_fallback"] = self.provider_fallback
        if self.built is not None:
            out["artifact"] = self.built
        if self.gate:
            out.update(gate=True, gate_threshold=self.gate_threshold, frames=self.frames, decoder_skipped=self.gated)
        return out


def _check_device(device: str) -> None:
    d = str(device)
    if d == "cpu" or d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit()):
        return
    raise PluginError(f"backend 'onnxruntime' runs on cpu or cuda[:N], not device {device!r}",
                      "use device = \"cpu\" or \"cuda:0\"")


def _built_variant(model, precision: str, device: str, options: OrtOptions):
    """Build (or find in the cache) the model's graph at `precision`. -> BuiltModel."""
    from firespotter.models.build import build_artifact
    from firespotter.models.calibration import DEFAULT_FRAMES

    uses_trt = any(n == "TensorrtExecutionProvider" for n, _ in provider_plan(device, options, PrecisionLabel()))
    build_options = {"profile": "tensorrt" if uses_trt else "cpu", **options.build}
    return build_artifact(model, "onnxruntime", precision, device=device, calib=options.calib,
                          calib_frames=options.calib_frames or DEFAULT_FRAMES, options=build_options,
                          rebuild=options.rebuild)


def load(model, precision: str = "fp32", device: str = "cpu", options: OrtOptions | None = None):
    _check_device(device)
    options = options or OrtOptions()
    threads = options.threads or os.cpu_count() or 1
    artifact = model.artifact("onnx")
    graph, labels, built = None, PrecisionLabel("fp32", 32, False), None
    if precision != "fp32":
        if options.gate:
            raise PluginError(f"gate = true runs the split fp32 encoder/decoder graphs, not {precision}",
                              "set gate = false, or use --precision fp32")
        result = _built_variant(model, precision, device, options)
        graph, labels, built = result.onnx, result.labels, result.describe()
        from firespotter.models.quant.gate import check_at_load

        shown = check_at_load(result.manifest, precision)  # a failed accuracy gate refuses the artifact here
        if shown:
            log.info(shown)
            built["accuracy"] = result.manifest["accuracy"]
    ctx = _ep_context_path(graph or artifact.path, options)
    plan = provider_plan(device, options, labels, ctx)
    if ctx is not None and ctx.is_file() and plan[0][0] == "TensorrtExecutionProvider":
        graph = ctx  # the EP-context model embeds the engine: no TensorRT builder at start-up
    return OrtSegmenter(model, artifact, threads, spin=options.spin, gate=options.gate,
                        gate_threshold=options.gate_threshold, graph=graph, labels=labels, plan=plan, built=built)


def _ep_context_path(graph, options: OrtOptions) -> Path | None:
    """Where the TensorRT EP-context model lives (None: not asked for, or no TensorRT provider in this build)."""
    import onnxruntime as ort

    value = options.trt_ep_context
    if value is False or "TensorrtExecutionProvider" not in ort.get_available_providers():
        return None
    if value is True:
        from firespotter.runtime.artifacts import sha256_file

        return _engine_cache(options) / f"{sha256_file(Path(graph))[:16]}_ctx.onnx"
    return Path(str(value)).expanduser()


def built_precisions() -> tuple[str, ...]:
    """Every registered precision variant: the backend builds any of them from a model's fp32 graph."""
    from firespotter.models.variants import variants

    return tuple(variants())


@hookimpl
def register_backends():
    return [BackendSpec("onnxruntime", load, formats=("onnx",), description="ONNX Runtime: TensorRT > CUDA > CPU providers, "
                        "any registered precision (built once, cached)", priority=10,
                        available=module_available("onnxruntime"), built_precisions=built_precisions,
                        options_model=OrtOptions)]
