"""Per-pixel objectives for binary fire segmentation: entropy, reliability filter, open-set selection.

Every pixel is a sample. With two classes (fire, background) the class probabilities are p and 1 - p.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RELIABLE_ENTROPY = 0.4 * math.log(2.0)  # EATA/SAR's E0 = 0.4 ln C, C = 2: ~0.277 nats


def binary_entropy(p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    p = p.clamp(eps, 1.0 - eps)
    return -(p * p.log() + (1.0 - p) * (1.0 - p).log())


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Binary entropy computed stably from logits (no log of a saturated sigmoid)."""
    p = torch.sigmoid(logits)
    return F.softplus(logits) - p * logits


def ostta_selection(p_adapted: torch.Tensor, p_original: torch.Tensor,
                    max_entropy: float = RELIABLE_ENTROPY) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, fire_o): the pixels an entropy step may learn from, and the original model's class per pixel.

    A pixel is kept when the adapted model's probability of the class the *original* model predicts is at
    least the original's (its confidence did not fall: the crowd agrees) and the adapted
    prediction is reliable (entropy below `max_entropy`)."""
    fire_o = p_original >= 0.5
    conf_o = torch.where(fire_o, p_original, 1.0 - p_original)
    conf_a = torch.where(fire_o, p_adapted, 1.0 - p_adapted)
    keep = (conf_a >= conf_o) & (binary_entropy(p_adapted) < max_entropy)
    return keep, fire_o


def balanced_entropy(entropy: torch.Tensor, keep: torch.Tensor, fire: torch.Tensor) -> torch.Tensor:
    """Mean entropy over the kept fire pixels and over the kept background pixels, averaged: a frame that is
    99.5% background still gives fire pixels half the say, and normalising over the kept pixels (not the
    whole frame) keeps the gradient from vanishing when few pixels are kept."""
    terms = [entropy[m].mean() for m in (keep & fire, keep & ~fire) if bool(m.any())]
    if not terms:
        return entropy.sum() * 0.0
    return torch.stack(terms).mean()
