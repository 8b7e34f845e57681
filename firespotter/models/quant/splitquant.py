"""SplitQuant (Song & Lin 2025): split each layer into lower / middle / upper copies so low-bit ranges shrink.

For every Conv2d, ConvTranspose2d and Linear with at least 3 outputs (batch norm folded in first, because
folding afterwards would change the weights the clusters were computed on), the weights are partitioned by a
deterministic 1-D k-means (k = 3; per output channel for convolutions, per tensor for Linear) with boundaries
at the midpoints between the sorted centres: lower = W·[W <= b1], middle = W·[b1 < W < b2], upper = W·[W >= b2].
The bias is partitioned the same way with its own per-tensor k-means. The three copies run on the same input
and their outputs are summed, which is exact because the layers are linear in (W, b). Fixes relative to the
public SplitQuant code: the conv path works, an all-zero bias does not skip the layer, and the k-means is
deterministic (quantile initialisation, Lloyd iterations, no random state).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .calibration import QuantError

SPLITTABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
K = 3


def kmeans3_rows(values: np.ndarray, iters: int = 100) -> np.ndarray:
    """Deterministic 1-D k-means (k=3) on each row of `values` (R×N) -> sorted centres R×3.

    Initialised at the 1/6, 1/2 and 5/6 quantiles; Lloyd iterations until no boundary moves. An empty cluster
    keeps its previous centre, so rows with fewer than 3 distinct values still get 3 (possibly equal) centres."""
    v = np.sort(np.asarray(values, np.float64), axis=1)
    centres = np.quantile(v, [1 / 6, 1 / 2, 5 / 6], axis=1).T.copy()  # R×3
    for _ in range(iters):
        b1 = (centres[:, 0:1] + centres[:, 1:2]) / 2
        b2 = (centres[:, 1:2] + centres[:, 2:3]) / 2
        masks = (v <= b1, (v > b1) & (v < b2), v >= b2)
        new = centres.copy()
        for j, m in enumerate(masks):
            n = m.sum(axis=1)
            s = np.where(m, v, 0.0).sum(axis=1)
            new[:, j] = np.where(n > 0, s / np.maximum(n, 1), centres[:, j])
        new.sort(axis=1)
        if np.array_equal(new, centres):
            break
        centres = new
    return centres


def boundaries(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (centres[:, 0] + centres[:, 1]) / 2, (centres[:, 1] + centres[:, 2]) / 2


def out_axis(layer: nn.Module) -> int:
    """The output-channel axis of a layer's weight (ConvTranspose2d stores in×out×kh×kw)."""
    return 1 if isinstance(layer, nn.ConvTranspose2d) else 0


def n_outputs(layer: nn.Module) -> int:
    return int(layer.weight.shape[out_axis(layer)])


def partition(weight: torch.Tensor, axis: int | None) -> list[torch.Tensor]:
    """[lower, middle, upper] masks of `weight`: per slice along `axis`, or per tensor when axis is None."""
    w = weight.detach().double().cpu()
    if axis is None:
        rows = w.reshape(1, -1)
    else:
        rows = w.movedim(axis, 0).reshape(w.shape[axis], -1)
    b1, b2 = boundaries(kmeans3_rows(rows.numpy()))
    b1 = torch.from_numpy(b1).reshape(-1, 1)
    b2 = torch.from_numpy(b2).reshape(-1, 1)
    masks = [rows <= b1, (rows > b1) & (rows < b2), rows >= b2]
    if axis is None:
        return [m.reshape(w.shape) for m in masks]
    shape = list(w.movedim(axis, 0).shape)
    return [m.reshape(shape).movedim(0, axis) for m in masks]


class SplitLayer(nn.Module):
    """lower(x) + middle(x) + upper(x): three copies of one layer whose weights (and biases) partition it."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        axis = None if isinstance(layer, nn.Linear) else out_axis(layer)
        wmasks = partition(layer.weight, axis)
        bmasks = partition(layer.bias, None) if layer.bias is not None else [None] * K
        copies = []
        for wm, bm in zip(wmasks, bmasks):
            c = copy.deepcopy(layer)
            with torch.no_grad():
                c.weight.copy_(layer.weight * wm.to(layer.weight.dtype))
                if c.bias is not None:
                    c.bias.copy_(layer.bias * bm.to(layer.bias.dtype))
            copies.append(c)
        self.lower, self.middle, self.upper = copies

    def parts(self) -> list[nn.Module]:
        return [self.lower, self.middle, self.upper]

    def forward(self, x):
        return self.lower(x) + self.middle(x) + self.upper(x)


# --------------------------------------------------------------------------------------------- BN folding


def _fold(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    axis = out_axis(conv)
    shape = [1] * conv.weight.dim()
    shape[axis] = -1
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        conv.weight.mul_(scale.reshape(shape))
        new_bias = (bias - bn.running_mean) * scale + bn.bias.detach()
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        with torch.no_grad():
            conv.bias.copy_(new_bias)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode) with every conv→BatchNorm2d pair in a Sequential folded into the conv."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = module._modules[a], module._modules[b]
            foldable = isinstance(conv, nn.Conv2d) or (isinstance(conv, nn.ConvTranspose2d) and conv.groups == 1)
            if foldable and isinstance(bn, nn.BatchNorm2d):
                _fold(conv, bn)
                module._modules[b] = nn.Identity()
    return model


# --------------------------------------------------------------------------------------------- the rewrite


def eligible(layer: nn.Module) -> bool:
    return isinstance(layer, SPLITTABLE) and n_outputs(layer) >= K


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SPLITTABLE)]


def split_model(model: nn.Module, fold: bool = True) -> nn.Module:
    """A copy of `model` with BN folded and every eligible layer replaced by a SplitLayer."""
    out = fold_batchnorm(model) if fold else copy.deepcopy(model).eval()
    if not quantizable_layers(out):
        raise QuantError(f"{type(model).__name__} has no quantizable layer (no Conv2d, ConvTranspose2d or Linear)",
                         "SplitQuant and weight quantization need a network with convolution or linear layers")
    targets = [(n, m) for n, m in out.named_modules() if eligible(m)]
    if not targets:
        raise QuantError(f"{type(model).__name__} has no layer SplitQuant can split (every Conv/Linear has fewer "
                         f"than {K} outputs)")
    for name, layer in targets:
        parent = out.get_submodule(name.rsplit(".", 1)[0]) if "." in name else out
        setattr(parent, name.rsplit(".", 1)[-1], SplitLayer(layer))
    return out


def max_abs_difference(a: nn.Module, b: nn.Module, x: torch.Tensor, prob: bool = False) -> float:
    """Largest |a(x) - b(x)| over every output tensor (FP32); of sigmoid(outputs) when `prob` (the fire nets
    output logits, whose large magnitudes make float32 summation order alone differ by more than 1e-5)."""
    with torch.no_grad():
        ya, yb = a(x), b(x)
    ya = ya if isinstance(ya, (tuple, list)) else (ya,)
    yb = yb if isinstance(yb, (tuple, list)) else (yb,)
    f = torch.sigmoid if prob else (lambda t: t)
    return max(float((f(p) - f(q)).abs().max()) for p, q in zip(ya, yb))
