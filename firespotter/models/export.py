"""Checkpoint -> ONNX (weights inside the file), checked against PyTorch on real frames.

Three graphs per model, all with a dynamic batch axis and the spatial size fixed to the model's input size:
- `NAME.onnx`: image -> (mask_logits N×1×H×W, fire_logit N×1), what a backend runs by default;
- `NAME.encoder.onnx`: image -> (fire_logit, skip0..skipK), and `NAME.decoder.onnx`: skips -> mask_logits,
  so a backend can skip the decoder on frames the frame head calls fire-free (`gate = true`).
Metadata in each graph (`firespotter.*` keys) names the architecture, input size and normalisation, so an ONNX
file can be used on its own.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import cv2
import numpy as np

from firespotter.runtime.errors import FirespotterError

log = logging.getLogger("firespotter.export")

OPSET = 17
PARITY_TOLERANCE = 1e-4  # max |p_onnx - p_torch| over every pixel of every checked frame


class ExportError(FirespotterError):
    """An export that failed or whose ONNX graph does not reproduce PyTorch."""


class ModelFormatError(FirespotterError):
    """An ONNX file that is not a fire segmentation model (wrong input or output shape)."""


def _wrappers(model):
    import torch
    from torch import nn

    class Full(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)

    class Encoder(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            fire, skips = self.m.encode(x)
            return (fire, *skips)

    class Decoder(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *skips):
            return self.m.decode(list(skips))

    del torch
    return Full(model), Encoder(model), Decoder(model)


def _export(module, args, path: Path, input_names, output_names) -> None:
    import torch

    dynamic = {n: {0: "n"} for n in (*input_names, *output_names)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True, dynamo=False)


def _set_metadata(path: Path, meta: dict) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"firespotter.{k}", v if isinstance(v, str) else json.dumps(v)
    onnx.save(proto, str(path))


def export_onnx(ckpt: dict, out_dir: Path, name: str) -> dict[str, Path]:
    """Write NAME.onnx, NAME.encoder.onnx, NAME.decoder.onnx into out_dir. -> {role: path}."""
    import torch

    from .checkpoint import model_from_checkpoint

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model_from_checkpoint(ckpt).float().eval()
    h, w = ckpt["input_size"]
    x = torch.zeros(1, 3, h, w)
    with torch.no_grad():
        _, skips = model.encode(x)
    n_skips = len(skips)
    skip_names = [f"skip{i}" for i in range(n_skips)]
    full, enc, dec = _wrappers(model)
    paths = {"onnx": out_dir / f"{name}.onnx", "encoder": out_dir / f"{name}.encoder.onnx",
             "decoder": out_dir / f"{name}.decoder.onnx"}
    try:
        _export(full, (x,), paths["onnx"], ["image"], ["mask_logits", "fire_logit"])
        _export(enc, (x,), paths["encoder"], ["image"], ["fire_logit", *skip_names])
        _export(dec, tuple(s.contiguous() for s in skips), paths["decoder"], skip_names, ["mask_logits"])
    except Exception as exc:
        raise ExportError(f"ONNX export of {ckpt.get('arch')} failed: {exc.__class__.__name__}: {exc}") from None
    meta = {"arch": ckpt["arch"], "input_size": list(ckpt["input_size"]), "mean": list(ckpt["mean"]),
            "std": list(ckpt["std"]), "output": "logits", "fire_output": "fire_logit", "opset": OPSET}
    for role, p in paths.items():
        _set_metadata(p, {**meta, "part": role})
    return paths


def read_metadata(path: Path) -> dict:
    """The firespotter.* metadata of an ONNX file (empty when it has none), without loading the weights twice."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    raw = sess.get_modelmeta().custom_metadata_map
    out = {}
    for k, v in raw.items():
        if k.startswith("firespotter."):
            try:
                out[k[len("firespotter."):]] = json.loads(v)
            except ValueError:
                out[k[len("firespotter."):]] = v
    return out


# --------------------------------------------------------------------------------------------- parity


def _session(path: Path, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _normalise(frames: list[np.ndarray], size, mean, std) -> np.ndarray:
    from .augment import resize_to

    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1) * 255.0
    s = 1.0 / (np.asarray(std, np.float32).reshape(1, 3, 1, 1) * 255.0)
    x = np.stack([resize_to(f, None, tuple(size))[0] for f in frames]).transpose(0, 3, 1, 2).astype(np.float32)
    return (x - m) * s


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def check_parity(ckpt: dict, paths: dict[str, Path], frames: list[np.ndarray],
                 tolerance: float = PARITY_TOLERANCE) -> dict:
    """Max |probability difference| between PyTorch (eval, FP32) and ONNX Runtime on the given frames, for the
    full graph and for encoder+decoder; ExportError when any exceeds `tolerance`."""
    import torch

    from .checkpoint import model_from_checkpoint

    if not frames:
        raise ExportError("no frames to check the export on")
    model = model_from_checkpoint(ckpt).float().eval()
    full = _session(paths["onnx"])
    enc = _session(paths["encoder"]) if "encoder" in paths else None
    dec = _session(paths["decoder"]) if "decoder" in paths else None
    worst = {"mask": 0.0, "score": 0.0, "split_mask": 0.0, "split_score": 0.0}
    for frame in frames:
        x = _normalise([frame], ckpt["input_size"], ckpt["mean"], ckpt["std"])
        with torch.no_grad():
            t_mask, t_fire = model(torch.from_numpy(x))
        p_ref, s_ref = _sigmoid(t_mask.numpy()), _sigmoid(t_fire.numpy())
        o_mask, o_fire = full.run(None, {"image": x})
        worst["mask"] = max(worst["mask"], float(np.abs(_sigmoid(o_mask) - p_ref).max()))
        worst["score"] = max(worst["score"], float(np.abs(_sigmoid(o_fire) - s_ref).max()))
        if enc is not None and dec is not None:
            e_out = enc.run(None, {"image": x})
            feeds = {i.name: v for i, v in zip(dec.get_inputs(), e_out[1:])}
            d_mask = dec.run(None, feeds)[0]
            worst["split_mask"] = max(worst["split_mask"], float(np.abs(_sigmoid(d_mask) - p_ref).max()))
            worst["split_score"] = max(worst["split_score"], float(np.abs(_sigmoid(e_out[0]) - s_ref).max()))
    result = {"frames": len(frames), "tolerance": tolerance,
              "max_abs_diff_prob": max(worst["mask"], worst["split_mask"]),
              "max_abs_diff_score": max(worst["score"], worst["split_score"]), "detail": worst}
    if result["max_abs_diff_prob"] >= tolerance or result["max_abs_diff_score"] >= tolerance:
        raise ExportError(f"the ONNX export differs from PyTorch by {result['max_abs_diff_prob']:.2e} in probability "
                          f"(score {result['max_abs_diff_score']:.2e}) on {len(frames)} frames; allowed < {tolerance:g}")
    return result


def frames_for_parity(ckpt: dict, check: list[Path] | None = None, limit: int = 6) -> tuple[list[np.ndarray], str]:
    """Real frames to check an export on: the given folders/images, else the checkpoint's own training images
    (where they still exist), else synthetic frames (said so in the returned description)."""
    from .datasets import list_images
    from .training import read_rgb

    paths: list[Path] = []
    if check:
        for c in check:
            c = Path(c)
            if c.is_file():
                paths.append(c)
            elif c.is_dir():
                folder = c / "images" if (c / "images").is_dir() else c
                paths.extend(list_images(folder))
            else:
                raise ExportError(f"--check {c}: no such file or folder")
        if not paths:
            raise ExportError(f"--check {' '.join(map(str, check))}: no images found")
        where = ", ".join(map(str, check))
    else:
        for f in (ckpt.get("data") or {}).get("files", []):
            p = Path(f["root"]) / f["image"]
            if p.is_file():
                paths.append(p)
        where = "training images"
    step = max(1, len(paths) // limit) if paths else 1
    frames = [read_rgb(p) for p in paths[::step][:limit]]
    if frames:
        return frames, f"{len(frames)} real frames ({where})"
    from .synthetic import SyntheticScene

    scene = SyntheticScene(256, 256, frames=limit, seed=4242)
    return [scene.render(i)[0] for i in range(limit)], f"{limit} synthetic frames (no real frames available)"


# --------------------------------------------------------------------------------------------- fire-model check


def describe_shape(shape) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"


def check_fire_graph(inputs, outputs, where: str) -> None:
    """Raise FirespotterError unless the graph looks like a fire segmenter: one N×3×H×W image input and a first
    output N×1×H×W (or N×H×W); an optional second output N×1 or N (the frame score)."""
    if len(inputs) != 1:
        raise ModelFormatError(f"{where} is not a fire segmentation model: it has {len(inputs)} inputs "
                               f"({', '.join(i.name for i in inputs)}); expected one N×3×H×W image")
    shape = list(inputs[0].shape)
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise ModelFormatError(f"{where} is not a fire segmentation model: its input {inputs[0].name!r} is "
                               f"{describe_shape(shape)}; expected N×3×H×W (RGB)")
    if not outputs:
        raise ModelFormatError(f"{where} has no outputs")
    out = list(outputs[0].shape)
    ok = (len(out) == 4 and (not isinstance(out[1], int) or out[1] == 1)) or len(out) == 3
    if ok:
        for a, b in zip(out[-2:], shape[-2:]):
            if isinstance(a, int) and isinstance(b, int) and a != b and not (a * 2 == b or a * 4 == b):
                ok = False
    if not ok:
        raise ModelFormatError(f"{where} is not a fire segmentation model: its output {outputs[0].name!r} is "
                               f"{describe_shape(out)} for an input of {describe_shape(shape)}; expected a one-channel "
                               "map N×1×H×W (fire logit or probability per pixel)")
