"""Checkpoints of the fire segmenters: written by training, read by inference (the torch and TensorRT backends,
the adapters, export, quantization). Weights only, never pickled code (`torch.load(weights_only=True)`)."""

from __future__ import annotations

import os
from pathlib import Path

from firespotter.runtime.errors import FirespotterError

CHECKPOINT_FORMAT = "firespotter-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(FirespotterError):
    """A file that is not a firespotter checkpoint, or one this version cannot read."""


def save_checkpoint(path: Path, payload: dict) -> None:
    import torch

    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """A firespotter checkpoint (weights only, never pickled code), or a CheckpointError saying what it is not."""
    import torch

    path = Path(path)
    if path.is_dir():
        for name in ("model.pt", "last.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise CheckpointError(f"{path} has no model.pt or last.pt", "pass a checkpoint written by `firespotter train`")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a firespotter checkpoint ({exc.__class__.__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a firespotter checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} is a version {ckpt['version']} checkpoint; this firespotter reads up to "
                              f"{CHECKPOINT_VERSION}", "upgrade firespotter")
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt: dict):
    from .arch import build, load_state

    model = build(ckpt["arch"], **ckpt.get("arch_kwargs", {}))
    load_state(model, ckpt["model"], ckpt.get("path", "checkpoint"))
    model.eval()
    return model
