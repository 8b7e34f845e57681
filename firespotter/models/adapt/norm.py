"""Batch-norm state: the layers adapted, a copy of their source parameters, statistics blended by EMA.

At batch size 1 a frame's own statistics turn BN into instance norm and erase global cues (notes §5,
failure mode 2). Instead every BN layer keeps normalising with its running statistics, which are nudged
towards each frame's statistics by an EMA from the source values (RoTTA's robust BN, alpha about 0.05).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

STATE = ("weight", "bias", "running_mean", "running_var")


def batch_norms(module: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def default_frozen(module: nn.Module) -> tuple[str, ...]:
    """Prefixes of the layers left frozen (SAR's rule): the last encoder stage, the frame head and the
    segmentation head (the last decoder block before the 1x1 logit)."""
    out = ["head", "logit"]
    for enc in ("stages", "down"):
        seq = getattr(module, enc, None)
        if seq is not None and len(seq):
            out.append(f"{enc}.{len(seq) - 1}")
    fuse = getattr(module, "fuse", None)
    if fuse is not None and len(fuse):
        out.append(f"fuse.{len(fuse) - 1}")
    return tuple(out)


def _frozen(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def trainable_affine(module: nn.Module, frozen: tuple[str, ...]) -> list[tuple[str, nn.Parameter]]:
    """The BN weights and biases entropy steps may change; every other parameter stops taking gradients."""
    keep = []
    for p in module.parameters():
        p.requires_grad_(False)
    for name, bn in batch_norms(module):
        if _frozen(name, frozen) or not bn.affine:
            continue
        for kind in ("weight", "bias"):
            p = getattr(bn, kind)
            p.requires_grad_(True)
            keep.append((f"{name}.{kind}", p))
    return keep


class NormSnapshot:
    """A copy of every BN layer's affine parameters and running statistics: the frozen source model.

    Only the norm state is copied (a few thousand numbers), never a second network."""

    def __init__(self, module: nn.Module):
        self.tensors = {name: {k: getattr(bn, k).detach().clone() for k in STATE} for name, bn in batch_norms(module)}

    @torch.no_grad()
    def restore(self, module: nn.Module, keys: tuple[str, ...] = STATE) -> None:
        for name, bn in batch_norms(module):
            for k in keys:
                getattr(bn, k).copy_(self.tensors[name][k])

    @torch.no_grad()
    def affine_distance(self, module: nn.Module, names: set[str] | None = None) -> float:
        """||theta - theta_0|| / ||theta_0|| over the BN affine parameters (those in `names`, if given)."""
        num = den = 0.0
        for name, bn in batch_norms(module):
            for k in ("weight", "bias"):
                if names is not None and f"{name}.{k}" not in names:
                    continue
                src = self.tensors[name][k]
                num += float((getattr(bn, k) - src).pow(2).sum())
                den += float(src.pow(2).sum())
        return (num / den) ** 0.5 if den else 0.0

    @contextlib.contextmanager
    def source_affine(self, module: nn.Module) -> Iterator[None]:
        """Run with the source gamma/beta (the frozen model), keeping the current statistics, then put the
        adapted values back. The statistics stay shared: the frozen reference is the bnstats model, so the
        selection and the collapse guard compare what the entropy steps changed, not what re-normalising did."""
        saved = {name: (bn.weight.detach().clone(), bn.bias.detach().clone())
                 for name, bn in batch_norms(module) if bn.affine}
        self.restore(module, ("weight", "bias"))
        try:
            yield
        finally:
            with torch.no_grad():
                for name, bn in batch_norms(module):
                    if name in saved:
                        bn.weight.copy_(saved[name][0])
                        bn.bias.copy_(saved[name][1])


class EMAStats:
    """Forward pre-hooks that blend each frame's per-channel mean/variance into the running statistics
    (running <- (1 - alpha) running + alpha frame) before the layer normalises with them."""

    def __init__(self, module: nn.Module, alpha: float, layers: tuple[str, ...] | None = None):
        self.alpha = float(alpha)
        self.enabled = True
        self._handles = [bn.register_forward_pre_hook(self._hook) for name, bn in batch_norms(module)
                         if layers is None or _frozen(name, layers)]

    def _hook(self, bn: nn.Module, args) -> None:
        if not self.enabled or self.alpha <= 0:
            return
        x = args[0]
        with torch.no_grad():
            x = x.detach().float()
            # Raw moments: torch's mean/var over (N, H, W) of a channels-last tensor is ~10x slower than sums.
            n = x.numel() / x.shape[1]
            mean = x.sum(dim=(0, 2, 3)).double() / n
            var = ((x * x).sum(dim=(0, 2, 3)).double() / n - mean * mean).clamp_(min=0.0)
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), self.alpha)
            bn.running_var.lerp_(var.to(bn.running_var.dtype), self.alpha)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        was, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = was

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
