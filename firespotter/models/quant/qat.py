"""INT8 quantization-aware training with PyTorch's fake-quantize ops (nvidia-modelopt is not used: see
docs/quantization.md).

Batch norm is folded first, then every Conv2d/ConvTranspose2d/Linear gets fake quantization on its weight
(per output channel, symmetric int8, scale = max|w| / 127 recomputed every step) and on its input (per tensor,
symmetric int8, scale from the max observed on the calibration frames, then frozen). The fake-quantize ops pass
gradients straight through inside the clipping range (STE). The network is fine-tuned for a few short epochs at
a small learning rate on training frames (options `qat_data` + `qat_include`, e.g. flame1_t00*, and
`qat_synthetic` synthetic frames; the calibration frames when none are given). Targets are the FP32 model's own
probabilities (distillation; `qat_targets = "labels"` uses the masks instead): a first run on the masks lost
the threshold calibration the shipped model carries (dev IoU 0.691 -> 0.620).
The export is then the same scheme in Q/DQ form (symmetric int8, `ptq.quantize_int8(profile="tensorrt")`).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .calibration import QuantError, check_frames, to_inputs
from .splitquant import SPLITTABLE, fold_batchnorm, out_axis

DEFAULTS = {"qat_epochs": 2, "qat_lr": 5e-5, "qat_batch": 4, "qat_crop": 256, "qat_synthetic": 16, "qat_steps": 0,
            "qat_seed": 0, "qat_targets": "teacher"}


class FakeQuant(nn.Module):
    """A layer computing with int8-fake-quantized weights and inputs (straight-through gradients)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        self.axis = out_axis(layer)
        self.register_buffer("act_amax", torch.zeros(()))
        self.observing = False

    def forward(self, x):
        if self.observing:
            self.act_amax = torch.maximum(self.act_amax, x.detach().abs().max())
        elif float(self.act_amax) > 0:
            x = torch.fake_quantize_per_tensor_affine(x, float(self.act_amax) / 127.0, 0, -128, 127)
        w = self.layer.weight
        dims = [d for d in range(w.dim()) if d != self.axis]
        scale = (w.detach().abs().amax(dim=dims) / 127.0).clamp_min(1e-12)
        wq = torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32),
                                                    self.axis, -128, 127)
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, wq, self.layer.bias)
        if isinstance(self.layer, nn.ConvTranspose2d):
            l = self.layer
            return F.conv_transpose2d(x, wq, l.bias, l.stride, l.padding, l.output_padding, l.groups, l.dilation)
        l = self.layer
        return F.conv2d(x, wq, l.bias, l.stride, l.padding, l.dilation, l.groups)


def insert_fake_quant(model: nn.Module) -> nn.Module:
    """A BN-folded copy with every Conv/ConvTranspose/Linear wrapped in FakeQuant."""
    model = fold_batchnorm(model)
    targets = [n for n, m in model.named_modules() if isinstance(m, SPLITTABLE)]
    if not targets:
        raise QuantError(f"{type(model).__name__} has no quantizable layer (no Conv2d, ConvTranspose2d or Linear)")
    for name in targets:
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        leaf = name.rsplit(".", 1)[-1]
        setattr(parent, leaf, FakeQuant(getattr(parent, leaf)))
    return model


def strip_fake_quant(model: nn.Module) -> nn.Module:
    """The fine-tuned float network (FakeQuant wrappers removed) for export."""
    model = copy.deepcopy(model)
    for name, m in list(model.named_modules()):
        if isinstance(m, FakeQuant):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], m.layer)
    return model.eval()


def observe(model: nn.Module, x: torch.Tensor) -> None:
    """Activation ranges from the calibration inputs (real frames), then frozen."""
    fqs = [m for m in model.modules() if isinstance(m, FakeQuant)]
    for m in fqs:
        m.observing = True
    model.eval()
    with torch.no_grad():
        for i in range(len(x)):
            model(x[i : i + 1])
    for m in fqs:
        m.observing = False


def _labelled(opts: dict, size) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(frames, masks) at the model's input size: real labelled training frames + synthetic frames."""
    from firespotter.models.augment import resize_to
    from firespotter.models.training import SyntheticEpoch, collect, load_item

    frames, masks = [], []
    if opts.get("qat_data"):
        items = [it for it in collect([Path(opts["qat_data"])], include=opts.get("qat_include") or ()) if it.has_mask]
        for it in items:
            rgb, m = load_item(it, size)
            frames.append(rgb)
            masks.append(m)
    n_syn = int(opts.get("qat_synthetic", 0))
    if n_syn:
        syn = SyntheticEpoch(n_syn, int(opts.get("qat_seed", 0)) + 31337, 0, size)
        for j in range(n_syn):
            rgb, m = syn.frame(j)
            rgb, m = resize_to(rgb, m, size)
            frames.append(rgb)
            masks.append(m)
    return frames, masks


def qat_finetune(model: nn.Module, req) -> tuple[nn.Module, dict]:
    """Fake-quantize, calibrate activation ranges on req.calibration, fine-tune; -> (float model, record)."""
    opts = {**DEFAULTS, **(req.options or {})}
    calib = to_inputs(check_frames(req.calibration), req.input_size, req.mean, req.std, req.progress)
    teacher = fold_batchnorm(model)
    student = insert_fake_quant(model)
    observe(student, torch.from_numpy(calib))
    frames, masks = _labelled(opts, req.input_size)
    source = "training frames" if opts.get("qat_data") else "synthetic frames"
    if not frames:  # no labels: the calibration frames, with the FP32 model's probabilities as targets
        frames, masks, source = list(req.calibration), [None] * len(req.calibration), "calibration frames (teacher)"
    x_all = torch.from_numpy(to_inputs(frames, req.input_size, req.mean, req.std))
    crop = min(int(opts["qat_crop"]), *req.input_size)
    rng = np.random.default_rng(int(opts["qat_seed"]))
    torch.manual_seed(int(opts["qat_seed"]))
    batch = max(1, int(opts["qat_batch"]))
    steps_per_epoch = max(1, len(frames) // batch)
    total = int(opts["qat_steps"]) or steps_per_epoch * int(opts["qat_epochs"])
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=float(opts["qat_lr"]))
    req.progress(f"QAT: {total} steps of {batch} crops {crop}px at lr {opts['qat_lr']:g} on {len(frames)} {source}")
    t0, losses = time.perf_counter(), []
    student.train()
    for step in range(total):
        idx = rng.integers(0, len(frames), batch)
        H, W = req.input_size
        ys, xs = rng.integers(0, H - crop + 1, batch), rng.integers(0, W - crop + 1, batch)
        x = torch.stack([x_all[i, :, y : y + crop, z : z + crop] for i, y, z in zip(idx, ys, xs)])
        with torch.no_grad():
            t_mask, t_fire = teacher(x)
        target = torch.sigmoid(t_mask)
        if opts.get("qat_targets") == "labels":  # default: the FP32 teacher, which keeps its calibrated threshold
            for k, (i, y, z) in enumerate(zip(idx, ys, xs)):
                if masks[i] is not None:
                    target[k, 0] = torch.from_numpy(masks[i][y : y + crop, z : z + crop] > 0).float()
        mask, fire = student(x)
        loss = F.binary_cross_entropy_with_logits(mask, target) + 0.3 * F.binary_cross_entropy_with_logits(
            fire, torch.sigmoid(t_fire))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    record = {"route": "pytorch fake-quantize ops (per-channel symmetric int8 weights, per-tensor symmetric int8 "
                       "inputs, STE)", "steps": total, "lr": float(opts["qat_lr"]), "batch": batch, "crop": crop,
              "frames": len(frames), "data": source, "loss_first": losses[0] if losses else None,
              "loss_last": float(np.mean(losses[-5:])) if losses else None,
              "seconds": round(time.perf_counter() - t0, 1)}
    return strip_fake_quant(student), record
