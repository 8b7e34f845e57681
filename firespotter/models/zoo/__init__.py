"""Shipped weights and their manifests.

Each model NAME ships as NAME.json (the manifest) beside its files: NAME.onnx (the full graph, weights inside),
NAME.encoder.onnx + NAME.decoder.onnx (the same network split for the `gate` option) and NAME.pt (the PyTorch
weights for the torch backend). The manifest records every file's sha256, the training data (every file
trained on), epochs, seed, the exact training and export commands, and metrics on named evaluation sets with
the command that produced each. A file whose sha256 does not match its manifest is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from firespotter.runtime.artifacts import sha256_file
from firespotter.runtime.errors import FirespotterError

ZOO_DIR = Path(__file__).resolve().parent
MANIFEST_FORMAT = "firespotter-model-manifest"
MANIFEST_VERSION = 1


class ModelFileError(FirespotterError):
    """A model file or manifest that is missing, unreadable or does not match its recorded sha256."""


def manifest_path(name: str, zoo: Path | None = None) -> Path:
    return Path(zoo or ZOO_DIR) / f"{name}.json"


def shipped() -> list[str]:
    """Names of the models whose manifest is in the zoo."""
    return sorted(p.stem for p in ZOO_DIR.glob("*.json"))


def load_manifest(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model manifest {path} does not exist")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"model manifest {path} is not readable JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ModelFileError(f"{path} is not a firespotter model manifest (no \"format\": \"{MANIFEST_FORMAT}\")")
    if not isinstance(manifest.get("files"), dict) or "onnx" not in manifest["files"]:
        raise ModelFileError(f"model manifest {path} lists no ONNX file")
    manifest["_path"] = str(path)
    return manifest


def verified_files(manifest: dict) -> dict[str, Path]:
    """{role: path} of every file in the manifest, each checked against its sha256 (ModelFileError if not)."""
    base = Path(manifest["_path"]).parent
    out = {}
    for role, entry in manifest["files"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not isinstance(entry.get("sha256"), str):
            raise ModelFileError(f"model manifest {manifest['_path']}: files.{role} needs a path and a sha256")
        path = base / entry["path"]
        # only files inside the manifest's own folder: a path may not climb out of it (../, an absolute path)
        if Path(entry["path"]).is_absolute() or base.resolve() not in path.resolve().parents:
            raise ModelFileError(f"model manifest {manifest['_path']}: files.{role} ({entry['path']}) is outside "
                                 f"{base}; a manifest may name only files in its own folder")
        if not path.is_file():
            raise ModelFileError(f"model file {path} ({role}) listed in {manifest['_path']} does not exist",
                                 "reinstall firespotter or re-export the model")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ModelFileError(
                f"model file {path} does not match its manifest: sha256 {actual[:16]}... but "
                f"{Path(manifest['_path']).name} says {entry['sha256'][:16]}...; the file was modified or corrupted, "
                "refusing to load it", "reinstall firespotter or re-export the model with `firespotter export`")
        out[role] = path
    return out


def file_entry(path: Path, base: Path) -> dict:
    path = Path(path)
    return {"path": str(path.relative_to(base)), "sha256": sha256_file(path), "bytes": path.stat().st_size}
