"""One adaptation step per adapted frame on a PyTorch fire network, with resets and a collapse guard.

Methods (docs/adaptation.md):
- `bnstats`: no gradient; the BN statistics follow the stream by EMA from the source values.
- `tent`: the same statistics, plus one SGD step per adapted frame minimising the mean entropy of the
  reliable pixels (entropy below 0.4 ln 2), on the BN affine parameters outside the frozen layers.
- `ostta`: tent restricted to the pixels whose confidence in the frozen model's class did not fall under
  the adapted model (open-set selection), class-balanced and normalised over the kept pixels.

Safety for a one-frame stream: adapt every N-th frame; a hard reset to the source norm state every K
updates (RDumb) and whenever the adapted fire fraction drifts outside [lo, hi] times the frozen model's
(collapse guard, on an EMA over updates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from firespotter.runtime.config import parse_flag
from firespotter.runtime.errors import FirespotterError

from .norm import EMAStats, NormSnapshot, default_frozen, trainable_affine
from .objective import RELIABLE_ENTROPY, balanced_entropy, binary_entropy, entropy_from_logits, ostta_selection

METHODS = ("bnstats", "tent", "ostta")
# Options of the serving side (plugins/adapters/serving.py), not of the method itself.
SERVING_OPTIONS = frozenset({"checkpoint", "push_interval_s", "sync"})
SHIFT_THRESHOLD = 2.48  # bench/tta.py --calibrate on fireseg-lite-18dd140d: 1.2 x 2.068 (512 px, 48 frames), training frames only
FIRE_FLOOR = 1e-3  # fire fractions below 0.1% of the frame count as "no fire" in the guard's ratio


class AdaptError(FirespotterError):
    """A bad [adapt] option, or a model the adapter cannot adapt."""


@dataclass
class TTAConfig:
    method: str = "bnstats"
    alpha: float = 0.05  # EMA weight of a frame's BN statistics
    lr: float = 0.01  # SGD on the BN affine; the loss is normalised over the kept pixels, so this moves it
    momentum: float = 0.9
    every: int = 1  # adapt on every N-th frame
    reset_every: int = 1000  # hard reset after this many updates (0 = never)
    max_entropy: float = RELIABLE_ENTROPY
    guard: bool = True
    guard_low: float = 0.2
    guard_high: float = 5.0
    guard_smoothing: float = 0.8  # EMA factor of the fire fractions the guard compares
    guard_warmup: int = 3  # updates after a reset before the guard may fire
    scale: float = 1.0  # resolution factor of the gradient step's forward passes (0.5 = a quarter of the cost)
    layers: str = ""  # BN layers whose statistics follow the stream: "" = all, else comma-separated prefixes
    # Shift detector (norm.EMAStats): adapt only while the first BN layers' statistics are this far from the
    # source's (smoothed); 0 = always adapt. Calibrated for fireseg-lite on unshifted training frames
    # (`bench/tta.py --calibrate`); another model needs its own value.
    threshold: float = SHIFT_THRESHOLD
    blend_max: float = 1.0  # the most the served statistics move from the source's towards the stream's EMA
    detect_smoothing: float = 0.1  # EMA weight of a frame's distance in the detector

    @classmethod
    def from_options(cls, method: str, options: dict | None, where: str = "[adapt] options") -> "TTAConfig":
        if method not in METHODS:
            raise AdaptError(f"unknown adaptation method {method!r}", f"use one of {', '.join(METHODS)}")
        known = {f.name for f in fields(cls)} - {"method"}
        options = dict(options or {})
        unknown = sorted(set(options) - known - SERVING_OPTIONS)
        if unknown:
            raise AdaptError(f"{where}: unknown option(s) {', '.join(unknown)} for adapter {method!r}",
                             f"known: {', '.join(sorted(known | SERVING_OPTIONS))}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in options:
                default = getattr(cls, f.name)
                try:
                    values[f.name] = _coerce(options[f.name], type(default))
                except (TypeError, ValueError):
                    raise AdaptError(f"{where}.{f.name} must be a {type(default).__name__}, "
                                     f"not {options[f.name]!r}") from None
        cfg = cls(method=method, **values)
        cfg.check(where)
        return cfg

    def check(self, where: str) -> None:
        bad = []
        if not 0.0 <= self.alpha <= 1.0:
            bad.append(f"alpha must be in [0, 1], got {self.alpha}")
        if self.lr < 0 or not math.isfinite(self.lr):
            bad.append(f"lr must be a finite number >= 0, got {self.lr}")
        if self.every < 1:
            bad.append(f"every must be at least 1, got {self.every}")
        if self.reset_every < 0:
            bad.append(f"reset_every must be >= 0 (0 = never), got {self.reset_every}")
        if not 0 < self.guard_low < 1 < self.guard_high:
            bad.append(f"guard_low must be in (0, 1) and guard_high above 1, got {self.guard_low}, {self.guard_high}")
        if self.threshold < 0 or not math.isfinite(self.threshold):
            bad.append(f"threshold must be a finite number >= 0 (0 = always adapt), got {self.threshold}")
        if not 0.0 <= self.blend_max <= 1.0:
            bad.append(f"blend_max must be in [0, 1], got {self.blend_max}")
        if not 0.0 < self.detect_smoothing <= 1.0:
            bad.append(f"detect_smoothing must be in (0, 1], got {self.detect_smoothing}")
        if not 0.0 < self.scale <= 1.0:
            bad.append(f"scale must be in (0, 1], got {self.scale}")
        if bad:
            raise AdaptError(f"{where}: " + "; ".join(bad))


def _coerce(value: Any, kind: type) -> Any:
    if kind is bool:
        return parse_flag(value) if isinstance(value, str) else bool(value)
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return kind(value)


def to_input(batch: np.ndarray, size, mean, std, device) -> torch.Tensor:
    """N×H×W×3 uint8 RGB -> the normalised N×3×H×W tensor the backends feed (resized to `size`)."""
    import cv2

    if size is not None and batch.shape[1:3] != tuple(size):
        batch = np.stack([cv2.resize(im, (size[1], size[0]), interpolation=cv2.INTER_AREA) for im in batch])
    x = batch.transpose(0, 3, 1, 2).astype(np.float32)
    x -= np.asarray(mean, np.float32).reshape(1, 3, 1, 1) * 255.0
    x /= np.asarray(std, np.float32).reshape(1, 3, 1, 1) * 255.0
    return torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last)


class TTAEngine:
    """Adapts `module` (an eval-mode FireSegNet) in place. `stats_in_forward`: the module's own serving
    forward already blends the statistics (the torch backend); otherwise `observe` does it (a shadow)."""

    def __init__(self, module: torch.nn.Module, cfg: TTAConfig, *, stats_in_forward: bool):
        self.module = module.eval()
        self.cfg = cfg
        self.stats_in_forward = stats_in_forward
        self.stride = int(getattr(module, "stride", 32))
        self.source = NormSnapshot(module)
        layers = tuple(p.strip() for p in cfg.layers.split(",") if p.strip()) or None
        self.stats = EMAStats(module, cfg.alpha, layers, threshold=cfg.threshold, blend_max=cfg.blend_max,
                              detect_smoothing=cfg.detect_smoothing, every=cfg.every)
        self.params = trainable_affine(module, default_frozen(module)) if cfg.method != "bnstats" else []
        self.param_names = {n for n, _ in self.params}
        self.opt = (torch.optim.SGD([p for _, p in self.params], lr=cfg.lr, momentum=cfg.momentum)
                    if self.params else None)
        self.frames = self.updates = self.resets = 0
        self.reset_reasons = {"periodic": 0, "drift": 0, "shift_gone": 0}
        self._was_active = False
        self.since_reset = 0
        self.first_drift_frame: int | None = None
        self._ema_a = self._ema_o = None
        self._sums = {"selected": 0.0, "entropy": 0.0, "fire_adapted": 0.0, "fire_frozen": 0.0}
        self.max_moved = 0.0
        self.last: dict[str, Any] = {}

    # --- the step --------------------------------------------------------------------------------------

    def adapts_next(self) -> bool:
        """Whether the next frame gets a gradient step (callers skip building its input otherwise): every
        N-th frame, and only while the statistics adapt to a detected shift (always without a detector)."""
        return self.opt is not None and self.frames % self.cfg.every == 0 and self.stats.active

    def skip(self) -> None:
        """A frame without a gradient step whose statistics the serving forward already blended."""
        self.frames += 1
        self._shift_check()

    def _shift_check(self) -> None:
        # The gradient methods learn a shift's gamma/beta; when the detector says it went, start from the source.
        active = self.stats.active
        if self._was_active and not active and self.opt is not None and self.since_reset:
            self.reset("shift_gone")
        self._was_active = active

    def needs_input(self) -> bool:
        """Whether `observe` will use the next frame (a shadow skips preparing frames it would not look at)."""
        return self.adapts_next() or (not self.stats_in_forward and self.stats.measures_next())

    def observe(self, x: torch.Tensor | None) -> dict[str, Any] | None:
        """x: the normalised input batch the served model just saw (None when `needs_input()` said no).
        Returns the update's record, or None on frames that only blended statistics."""
        if x is None:
            self.frames += 1
            self.stats.skip_frame()
            self._shift_check()
            return None
        adapting = self.adapts_next()
        self.frames += 1
        if not self.stats_in_forward and (not adapting or self.cfg.scale != 1.0):
            if self.stats.measures_next():
                with torch.no_grad(), self.stats.measuring_only():
                    self.module(x)  # a shadow's statistics follow the frames it sees, at the served resolution
            else:
                self.stats.skip_frame()
            adapting = adapting and self.stats.active
        self._shift_check()
        if not adapting:
            return None
        return self._step(self._scaled(x), blend=not self.stats_in_forward and self.cfg.scale == 1.0)

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.scale == 1.0:
            return x
        h, w = (max(self.stride, int(round(d * self.cfg.scale / self.stride)) * self.stride) for d in x.shape[-2:])
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).contiguous(
            memory_format=torch.channels_last)

    def _step(self, x: torch.Tensor, blend: bool) -> dict[str, Any]:
        cfg = self.cfg
        # The frozen model first: it swaps the source gamma/beta in and out, which must not happen while the
        # adapted forward's graph holds them.
        with torch.no_grad(), self.source.source_affine(self.module):
            if blend:
                logits_o, _ = self.module(x)
            else:
                with self.stats.paused():
                    logits_o, _ = self.module(x)
        with self.stats.paused():
            logits_a, _ = self.module(x)
        logits_a = logits_a.float()
        p_o = torch.sigmoid(logits_o.float())
        p_a = torch.sigmoid(logits_a.detach())
        ent = entropy_from_logits(logits_a)
        if cfg.method == "ostta":
            keep, fire = ostta_selection(p_a, p_o, cfg.max_entropy)
            loss = balanced_entropy(ent, keep, fire)
        else:
            keep = binary_entropy(p_a) < cfg.max_entropy
            loss = ent[keep].mean() if bool(keep.any()) else ent.sum() * 0.0
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.updates += 1
        self.since_reset += 1
        record = {
            "frame": self.frames, "update": self.updates,
            "selected": float(keep.float().mean()), "entropy": float(ent.detach().mean()),
            "loss": float(loss.detach()), "fire_adapted": float((p_a >= 0.5).float().mean()),
            "fire_frozen": float((p_o >= 0.5).float().mean()),
            "moved": self.source.affine_distance(self.module, self.param_names),
        }
        for k in self._sums:
            self._sums[k] += record[k]
        self.max_moved = max(self.max_moved, record["moved"])
        record["reset"] = self._guard(record)
        record["resets"] = self.resets
        self.last = record
        return record

    def _guard(self, rec: dict) -> str | None:
        cfg = self.cfg
        s = cfg.guard_smoothing
        self._ema_a = rec["fire_adapted"] if self._ema_a is None else s * self._ema_a + (1 - s) * rec["fire_adapted"]
        self._ema_o = rec["fire_frozen"] if self._ema_o is None else s * self._ema_o + (1 - s) * rec["fire_frozen"]
        ratio = (self._ema_a + FIRE_FLOOR) / (self._ema_o + FIRE_FLOOR)
        rec["fire_ratio"] = ratio
        if cfg.guard and self.since_reset >= cfg.guard_warmup and not cfg.guard_low <= ratio <= cfg.guard_high:
            if self.first_drift_frame is None:
                self.first_drift_frame = self.frames
            self.reset("drift")
            return "drift"
        if cfg.reset_every and self.since_reset >= cfg.reset_every:
            self.reset("periodic")
            return "periodic"
        return None

    # --- state -----------------------------------------------------------------------------------------

    def reset(self, reason: str = "manual") -> None:
        """Back to the source norm state exactly (affine and statistics); the optimiser forgets its momentum."""
        self.source.restore(self.module)
        self.stats.reset()
        if self.opt is not None:
            self.opt.state.clear()
        self.resets += 1
        self.reset_reasons[reason] = self.reset_reasons.get(reason, 0) + 1
        self.since_reset = 0
        self._ema_a = self._ema_o = None

    def summary(self) -> dict[str, Any]:
        n = max(self.updates, 1)
        out: dict[str, Any] = {"method": self.cfg.method, "frames": self.frames, "updates": self.updates,
                               "resets": self.resets, "reset_reasons": dict(self.reset_reasons),
                               "alpha": self.cfg.alpha, "every": self.cfg.every, "shift": self.stats.summary()}
        if self.opt is not None:
            out.update({f"mean_{k}": round(v / n, 6) for k, v in self._sums.items()})
            out.update(lr=self.cfg.lr, max_moved=round(self.max_moved, 6),
                       moved=round(self.source.affine_distance(self.module, self.param_names), 6),
                       trainable_params=sum(p.numel() for _, p in self.params),
                       first_drift_frame=self.first_drift_frame)
        return out

    def close(self) -> None:
        self.stats.remove()
