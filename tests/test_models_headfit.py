"""head_refit: the frame head's last layer refitted on whole frames; nothing else in the network moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from firespotter.models.arch import MEAN, STD, build
from firespotter.models.headfit import HeadRefitError, refit_frame_head


def frames(n=24, size=64, seed=0):
    """Whole frames: half with a bright orange blob (fire), half plain grey-green (none)."""
    rng = np.random.default_rng(seed)
    out, labels = [], []
    for i in range(n):
        rgb = rng.integers(60, 110, (size, size, 3)).astype(np.uint8)
        if i % 2:
            y, x = rng.integers(4, size - 20, 2)
            rgb[y:y + 16, x:x + 16] = (250, 150, 40)
        out.append(rgb)
        labels.append(i % 2)
    return out, labels


def with_measured_norms(model, x):
    """A fresh network whose batch norms hold these frames' statistics (not 0/1): features of a sensible size."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average
    model.train()
    batch = (torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2).float() / 255.0 - 0.45) / 0.225
    with torch.no_grad():
        model(batch)
    return model.eval()


def test_refit_learns_whole_frames_and_moves_only_the_head():
    torch.manual_seed(0)
    x, y = frames()
    model = with_measured_norms(build("fireseg-lite", gated=True), x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record = refit_frame_head(model, x, y, MEAN, STD)
    assert record["frames"] == 24 and record["with_fire"] == 12
    assert record["accuracy_after"] >= 0.9 > record["accuracy_before"]  # a random head knows nothing yet
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"head.fc.weight", "head.fc.bias"}


def test_refit_needs_both_kinds_of_frame():
    model = build("fireseg-lite").eval()
    x, _ = frames(4)
    with pytest.raises(HeadRefitError, match="with and without fire"):
        refit_frame_head(model, x, [1, 1, 1, 1], MEAN, STD)


def test_refit_works_on_an_ema_copy_whose_parameters_take_no_gradients():
    model = build("fireseg-lite").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = frames(8)
    refit_frame_head(model, x, y, MEAN, STD)
    assert not any(p.requires_grad for p in model.parameters())
