"""The quantized precision variants' builders (BuildRequest -> BuildOutput, firespotter.models.variant_types)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from firespotter.models.variant_types import BuildOutput

from .calibration import QuantError, check_frames, to_inputs

EQUIVALENCE_TOLERANCE = 1e-5  # max |split - original| in FP32: the split is exact up to rounding


def _torch_model(req):
    from firespotter.models.checkpoint import load_checkpoint, model_from_checkpoint

    if req.source_torch is None:
        raise QuantError(f"this precision rewrites the network in PyTorch and {req.source_onnx.name} has no "
                         "checkpoint (.pt) beside it", "export the model with its checkpoint (firespotter export)")
    return model_from_checkpoint(load_checkpoint(Path(req.source_torch))).float().eval()


def export_fp32(model, path: Path, size: tuple[int, int], source_onnx: Path | None = None) -> Path:
    """The network as an FP32 ONNX graph with the zoo's names (image -> mask_logits, fire_logit)."""
    import torch

    from firespotter.models.export import _export, _wrappers

    full, _, _ = _wrappers(model)
    _export(full.eval(), (torch.zeros(1, 3, *size),), path, ["image"], ["mask_logits", "fire_logit"])
    if source_onnx is not None:
        from .ptq import copy_metadata

        copy_metadata(source_onnx, path)
    return path


def check_frames_for(req) -> list[np.ndarray]:
    """Frames to verify a rewrite on: the calibration frames, else frames from the project's scene generator."""
    if req.calibration:
        return check_frames(req.calibration)[:4]
    from firespotter.models.synthetic import SyntheticScene

    scene = SyntheticScene(256, 256, frames=4, seed=4242)
    return [scene.render(i)[0] for i in range(2)]


def split_checked(model, req, progress=None):
    """SplitQuant rewrite of `model`, refused unless it reproduces the original within the tolerance."""
    import torch

    from .splitquant import fold_batchnorm, max_abs_difference, split_model

    folded = fold_batchnorm(model)
    split = split_model(folded, fold=False)
    x = torch.from_numpy(to_inputs(check_frames_for(req), req.input_size, req.mean, req.std))
    diff = max(max_abs_difference(folded, split, x[i : i + 1], prob=True) for i in range(len(x)))
    logit = max(max_abs_difference(folded, split, x[i : i + 1]) for i in range(len(x)))
    if diff > EQUIVALENCE_TOLERANCE:
        raise QuantError(f"the SplitQuant rewrite differs from the original by {diff:.2e} in probability (allowed "
                         f"{EQUIVALENCE_TOLERANCE:g}); refusing to quantize it")
    if progress:
        progress(f"SplitQuant: split model equals the original within {diff:.1e} in probability "
                 f"({logit:.1e} in logits) on {len(x)} frames")
    return folded, split, {"prob": diff, "logit": logit}


def _layer_weights(model) -> dict[str, int]:
    from .splitquant import quantizable_layers

    return {name: int(m.weight.numel()) for name, m in quantizable_layers(model)}


def build_lowbit(req, bits: int, split: bool):
    """w8/w4/w2 (plain) and sq-w4/sq-w2: simulated FP32 graph + packed INT4 storage graph (bits <= 4)."""
    from .lowbit import check_bits, effective_bits, pack_int4_onnx, simulate_onnx
    from .splitquant import eligible, fold_batchnorm

    check_bits(bits)
    model = _torch_model(req)
    weights = _layer_weights(fold_batchnorm(model))
    if split:
        folded, net, diff = split_checked(model, req, req.progress)
        split_names = {n for n, m in folded.named_modules() if eligible(m)}
    else:
        net, diff, split_names = fold_batchnorm(model), None, set()
    name = f"{'sq-' if split else ''}w{bits}"
    req.progress(f"{name}: per-output-channel asymmetric min/max weights at {bits} bits"
                 + (" on the three SplitQuant copies" if split else ""))
    fp32 = export_fp32(net, req.out_dir / "fp32.onnx", req.input_size, req.source_onnx)
    out = req.out_dir / "model.onnx"
    info = {"method": f"{'SplitQuant + ' if split else ''}weight-only per-channel asymmetric min/max, {bits} bits",
            "bits": bits, "split": split, **simulate_onnx(fp32, out, bits),
            **effective_bits(weights, bits, split_names)}
    files = {"onnx": out}
    if split:
        info["split_max_abs_diff"] = diff
    if bits <= 4:
        packed = req.out_dir / "model.int4.onnx"
        info["packed"] = {**pack_int4_onnx(fp32, packed, bits), "file": packed.name, "bytes": packed.stat().st_size}
        files["packed"] = packed
    fp32.unlink()
    info["bytes"] = out.stat().st_size
    return _output(files, info)


def build_int8(req, source: Path | None = None, extra_info: dict | None = None):
    from .ptq import quantize_int8

    opts = req.options or {}
    out = req.out_dir / "model.onnx"
    info = quantize_int8(source or req.source_onnx, out, req.calibration, input_size=req.input_size, mean=req.mean,
                         std=req.std, profile=opts.get("profile", "cpu"), method=opts.get("method", "minmax"),
                         progress=req.progress)
    info["bytes"] = out.stat().st_size
    return _output({"onnx": out}, {**info, **(extra_info or {})})


def build_sq_w8(req):
    """SplitQuant + real INT8 Q/DQ (weights per channel and activations, calibrated on real frames)."""
    from .splitquant import eligible

    model = _torch_model(req)
    folded, split, diff = split_checked(model, req, req.progress)
    weights = _layer_weights(folded)
    split_names = {n for n, m in folded.named_modules() if eligible(m)}
    fp32 = export_fp32(split, req.out_dir / "split_fp32.onnx", req.input_size, req.source_onnx)
    from .lowbit import effective_bits

    out = build_int8(req, fp32, {"split": True, "split_max_abs_diff": diff, **effective_bits(weights, 8, split_names)})
    fp32.unlink()
    return out


def build_qat(req):
    from .qat import qat_finetune

    model = _torch_model(req)
    tuned, record = qat_finetune(model, req)
    fp32 = export_fp32(tuned, req.out_dir / "qat_fp32.onnx", req.input_size, req.source_onnx)
    out = build_int8(req, fp32, {"qat": record})
    fp32.unlink()
    return out


def _output(files: dict, info: dict):
    return BuildOutput(files, info)
