"""Refitting the frame head on whole frames, after training (the recipe's `head_refit = true`).

Training shows the network crops (192 px of a 512-px frame) and teaches the frame head "is there fire in this
crop". At run time the head sees the whole frame: far more lamps, sunsets and orange walls in one view than any
crop held, and a max-pooled feature that grows with the map. Refitting only the head's last linear layer on
whole training frames, with the rest of the network frozen, matches what it sees at run time. It is a logistic
regression on the pooled features (128 numbers per frame), fitted by L-BFGS with an L2 pull towards the trained
weights, so a few hundred frames are enough and the segmentation is untouched (except through the gate).
"""

from __future__ import annotations

import numpy as np

from firespotter.runtime.errors import FirespotterError

REFIT_L2 = 0.01  # pull towards the trained weights: keeps what the crops taught where whole frames say little
REFIT_MAX_ITER = 200


class HeadRefitError(FirespotterError):
    """The network has no frame head to refit, or nothing to refit it on."""


def pooled_features(model, frames: list[np.ndarray], mean, std, batch: int = 4) -> np.ndarray:
    """The frame head's linear-layer inputs for whole frames (uint8 RGB at the model's input size)."""
    import torch

    fc = getattr(getattr(model, "head", None), "fc", None)
    if not isinstance(fc, torch.nn.Linear):
        raise HeadRefitError(f"{type(model).__name__} has no frame head (head.fc) to refit",
                             "leave out head_refit for this architecture")
    captured: list[torch.Tensor] = []
    hook = fc.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].detach()))
    m = torch.tensor(np.asarray(mean, np.float32) * 255.0).view(1, 3, 1, 1)
    s = torch.tensor(np.asarray(std, np.float32) * 255.0).view(1, 3, 1, 1)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(frames), batch):
                x = torch.from_numpy(np.stack(frames[i:i + batch])).permute(0, 3, 1, 2).float()
                model.encode((x - m) / s)
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured).numpy()


def refit_frame_head(model, frames: list[np.ndarray], labels: list[int], mean, std,
                     l2: float = REFIT_L2) -> dict:
    """Fit head.fc on (frames, labels) in place; returns what was done and the head's accuracy before/after."""
    import torch

    if not frames or len(set(int(v) for v in labels)) < 2:
        raise HeadRefitError(f"head_refit needs whole frames with and without fire; got {len(frames)} frames "
                             f"with labels {sorted(set(int(v) for v in labels))}")
    x = torch.from_numpy(pooled_features(model, frames, mean, std))
    y = torch.tensor(labels, dtype=torch.float32).view(-1, 1)
    fc = model.head.fc
    w0, b0 = fc.weight.detach().clone(), fc.bias.detach().clone()

    def accuracy() -> float:
        with torch.no_grad():
            return float(((fc(x) > 0).float() == y).float().mean())

    before = accuracy()
    opt = torch.optim.LBFGS(list(fc.parameters()), max_iter=REFIT_MAX_ITER, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(fc(x), y) + l2 * ((fc.weight - w0) ** 2).sum()
        loss.backward()
        return loss

    frozen = [q for q in fc.parameters() if not q.requires_grad]  # an EMA copy's parameters take no gradients
    for q in frozen:
        q.requires_grad_(True)
    try:
        opt.step(closure)
    finally:
        for q in frozen:
            q.requires_grad_(False)
    record = {"frames": len(frames), "with_fire": int(sum(int(v) for v in labels)), "l2": l2,
              "accuracy_before": round(before, 4)}
    if not all(bool(torch.isfinite(p).all()) for p in fc.parameters()):  # never ship a broken head
        with torch.no_grad():
            fc.weight.copy_(w0)
            fc.bias.copy_(b0)
        return {**record, "diverged": True, "accuracy_after": round(accuracy(), 4)}
    return {**record, "accuracy_after": round(accuracy(), 4)}
