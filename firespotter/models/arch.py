"""The project's fire segmentation networks (PyTorch), each with a frame-level fire head on its encoder.

Two architectures, batch norm after every convolution (test-time adaptation and QAT need norm layers):

- `fireseg-unet`: the FLAME baseline's shape (Shamsoshoara et al. 2021): encoder 16-32-64-128-256 with two
  3x3 conv + BN + ReLU per level and 2x2 max pooling, decoder with 2x2 transposed convolutions, 512x512 input.
  Kept for parity with the published U-Net; far too slow for a drone's CPU.
- `fireseg-lite`: the real-time default. MobileNet-style encoder (3x3 stride-2 stem and one dense 3x3
  stride-2 convolution to 32 channels, then depthwise 3x3 + pointwise 1x1 blocks with residuals where shapes
  match; widths 32/64/128/256 at strides 4-32), a decoder that reduces channels with a 1x1 conv and upsamples
  by bilinear resize (ONNX Runtime never quantizes ConvTranspose), one depthwise-separable block per level
  down to stride 4, a 1x1 logit at stride 4, bilinear x4 to the input. Nothing but the stem runs at stride 2:
  the first layout's depthwise blocks and last decoder block there took ~70% of its time (docs/models.md).

Every network maps N×3×H×W normalised RGB to `(mask_logits N×1×H×W, fire_logit N×1)`. `encode(x)` returns
`(fire_logit, skips)` and `decode(skips)` the mask logits, so a caller can skip the decoder on frames the
head calls fire-free (the `gate` option). H and W must be multiples of `stride` (32 for lite, 16 for unet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from firespotter.runtime.errors import FirespotterError

# Normalisation every shipped network expects: RGB scaled to [0, 1], then (x - MEAN) / STD (ImageNet's).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class ArchitectureError(FirespotterError):
    """An architecture name that does not exist, or a checkpoint that does not fit its architecture."""


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DSBlock(nn.Module):
    """Depthwise 3x3 (+BN+ReLU), pointwise 1x1 (+BN), residual when the shapes match, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.dw = conv_bn_relu(cin, cin, 3, stride, groups=cin)
        self.pw = conv_bn_relu(cin, cout, 1, relu=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        if self.residual:
            y = y + x
        return F.relu(y)


class FrameHead(nn.Module):
    """Frame-level fire logit from the deepest features: 1x1 conv, global average + max pooling, linear."""

    def __init__(self, cin: int, hidden: int = 64):
        super().__init__()
        self.reduce = conv_bn_relu(cin, hidden, 1)
        self.fc = nn.Linear(2 * hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.reduce(x)
        pooled = torch.cat([y.mean(dim=(2, 3)), y.amax(dim=(2, 3))], dim=1)
        return self.fc(pooled)


class FireSegNet(nn.Module):
    """Common interface: forward -> (mask_logits, fire_logit); encode -> (fire_logit, skips); decode(skips)."""

    stride = 32

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, skips: list[torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fire_logit, skips = self.encode(x)
        return self.decode(skips), fire_logit


class FireSegLite(FireSegNet):
    """Encoder skips at strides 2-32; the decoder fuses them down to `logit_stride`, then a bilinear resize.

    `early="dense"` replaces the depthwise blocks at stride 2 with one dense 3x3 stride-2 convolution into
    stage 1, and `logit_stride=4` stops the decoder at stride 4: both move work out of the 256x256 maps, where
    ONNX Runtime's CPU INT8 kernels (depthwise, K=27 stem, Resize) are no faster than float
    (docs/quantization.md).
    """

    stride = 32

    def __init__(self, widths=(16, 32, 64, 128, 256), blocks=(2, 2, 2, 3, 3), decoder=(128, 64, 32, 24),
                 early: str = "dense", logit_stride: int = 4, gated: bool = False, context: bool = False):
        super().__init__()
        # gated: the mask logits are lowered by -log(frame probability), so a pixel is fire only when the frame
        # head, which sees the whole frame, also says fire. A sunset or a lit window looks like flame up close;
        # the scene around it says otherwise. Done in decode (the head reads the deepest skip, which the decoder
        # receives) so the split encoder/decoder graphs compute exactly what the full graph does.
        self.gated = bool(gated)
        # context: the whole frame's mean features added back to every stride-32 position (image pooling, as in
        # PSPNet/DeepLab): an orange chair and a flame look alike locally; the room or the smoke around does not.
        self.context = conv_bn_relu(widths[-1], widths[-1], 1) if context else None
        if early not in ("ds", "dense") or logit_stride not in (2, 4):
            raise ArchitectureError(f"fireseg-lite: early must be ds|dense and logit_stride 2|4, "
                                    f"got {early!r}, {logit_stride}")
        self.logit_stride = logit_stride
        self.stem = conv_bn_relu(3, widths[0], 3, 2)
        stages = []
        cin = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layers: list[nn.Module] = []
            if early == "dense" and i == 0:
                stages.append(nn.Identity())  # the stem's map is stage 0's skip
                continue
            for j in range(n):
                if early == "dense" and i == 1 and j == 0:
                    layers.append(conv_bn_relu(cin, w, 3, 2))
                else:
                    layers.append(DSBlock(cin, w, stride=2 if (j == 0 and i > 0) else 1))
                cin = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        # Decoder, deepest first: reduce the deeper map (1x1 at low resolution), resize, concat the skip, DS block.
        self.reduce = nn.ModuleList()
        self.fuse = nn.ModuleList()
        deep = widths[-1]
        n_fuse = 4 if logit_stride == 2 else 3
        for skip, out in list(zip(reversed(widths[:-1]), decoder))[:n_fuse]:
            self.reduce.append(conv_bn_relu(deep, out, 1))
            self.fuse.append(DSBlock(out + skip, out))
            deep = out
        self.logit = nn.Conv2d(deep, 1, 1)
        self.head = FrameHead(widths[-1])

    def encode(self, x):
        y = self.stem(x)
        skips = []
        for stage in self.stages:
            y = stage(y)
            skips.append(y)
        if self.context is not None:
            y = y + self.context(y.mean(dim=(2, 3), keepdim=True))
            skips[-1] = y
        # Only the maps the decoder reads: an unused stride-2 skip would become a dangling decoder input.
        return self.head(y), skips[-(len(self.fuse) + 1):]

    def decode(self, skips):
        y = skips[-1]
        for reduce, fuse, skip in zip(self.reduce, self.fuse, reversed(skips[:-1])):
            y = reduce(y)
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = fuse(torch.cat([y, skip], dim=1))
        y = self.logit(y)  # at logit_stride
        if self.gated:
            y = y - F.softplus(-self.head(skips[-1])).view(-1, 1, 1, 1)  # + log sigmoid(frame logit)
        return F.interpolate(y, scale_factor=float(self.logit_stride), mode="bilinear", align_corners=False)


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(cin, cout), conv_bn_relu(cout, cout))


class FireSegUNet(FireSegNet):
    stride = 16

    def __init__(self, widths=(16, 32, 64, 128, 256)):
        super().__init__()
        self.down = nn.ModuleList()
        cin = 3
        for w in widths:
            self.down.append(double_conv(cin, w))
            cin = w
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(cin, w, 2, 2))
            self.fuse.append(double_conv(2 * w, w))
            cin = w
        self.logit = nn.Conv2d(cin, 1, 1)
        self.head = FrameHead(widths[-1])

    def encode(self, x):
        skips = []
        y = x
        for i, block in enumerate(self.down):
            if i:
                y = F.max_pool2d(y, 2)
            y = block(y)
            skips.append(y)
        return self.head(y), skips

    def decode(self, skips):
        y = skips[-1]
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips[:-1])):
            y = fuse(torch.cat([up(y), skip], dim=1))
        return self.logit(y)


@dataclass(frozen=True)
class ArchInfo:
    name: str
    build: Callable[..., FireSegNet]
    input_size: tuple[int, int]  # (height, width) the shipped model runs at
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)


ARCHS: dict[str, ArchInfo] = {
    "fireseg-lite": ArchInfo("fireseg-lite", FireSegLite, (512, 512),
                             "real-time default: depthwise-separable encoder, resize+1x1 decoder to stride 4, "
                             "0.78 GFLOP at 512x512"),
    "fireseg-unet": ArchInfo("fireseg-unet", FireSegUNet, (512, 512),
                             "FLAME baseline U-Net shape (16-32-64-128-256, two 3x3 convs per level), parity reference"),
}


def arch_info(name: str) -> ArchInfo:
    if name not in ARCHS:
        import difflib

        close = difflib.get_close_matches(name, list(ARCHS), n=1)
        raise ArchitectureError(f"unknown architecture {name!r}; known: {', '.join(ARCHS)}",
                                f"did you mean {close[0]!r}?" if close else None)
    return ARCHS[name]


def build(name: str, **kwargs) -> FireSegNet:
    info = arch_info(name)
    return info.build(**{**info.kwargs, **kwargs})


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, size: tuple[int, int] = (512, 512)) -> float:
    """Forward FLOPs (2 x multiply-accumulates, convolutions and linear layers) for one 3×H×W frame."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *size))
    model.train(was_training)
    return float(counter.get_total_flops())


def load_state(model: nn.Module, state: dict, where: str) -> None:
    """load_state_dict with an ArchitectureError (not a RuntimeError wall of text) when it does not fit."""
    missing, unexpected = [], []
    try:
        result = model.load_state_dict(state, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    except RuntimeError as exc:  # size mismatch
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first if "size mismatch" in line), first[-1] if first else "")
        raise ArchitectureError(f"{where}: the weights do not fit this architecture: {detail}") from None
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        raise ArchitectureError(f"{where}: the weights do not fit this architecture: {'; '.join(parts)}")


# Modules a layout may add on top of an older checkpoint's weights (fine-tuning into a grown network).
GROWABLE = ("context.",)


def grow_state(model: nn.Module, state: dict) -> tuple[dict, list[str]]:
    """An older checkpoint's weights for a network that adds GROWABLE modules: (full state, the added keys).

    The context module (1x1 conv -> BN -> ReLU on the frame's mean features, added to every stride-32 position)
    starts with its BN scale at 0 and shift at 1e-3: it adds a near-zero constant, so the grown network computes
    what the checkpoint did, and gradients still reach the module (a ReLU at exactly 0 would pass none)."""
    own = model.state_dict()
    added = [k for k in own if k not in state and k.startswith(GROWABLE)]
    if not added:
        return state, []
    full = dict(state)
    for k in added:
        full[k] = own[k].clone()
    if "context.1.weight" in added and "context.1.bias" in added:
        full["context.1.weight"] = torch.zeros_like(own["context.1.weight"])
        full["context.1.bias"] = torch.full_like(own["context.1.bias"], 1e-3)
    return full, added
