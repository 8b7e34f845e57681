"""Build (or find) a model's artifact at one precision: the variant builder behind the artifact cache.

`build_artifact(model, backend, precision, calib=...)` computes the cache key (model sha256, backend,
precision, library versions, device and compute capability, calibration-set hash, build options), returns the
verified cached artifact on a hit, and on a miss runs the precision's variant builder with a visible progress
line. Backends (onnxruntime) call it when they load a non-fp32 precision; `firespotter build` calls it
through the backend, so what it builds is exactly what a run will load.

A build with calibration frames also records itself as the latest build for its key without calibration, so a
later run that gives no `--calib` (e.g. the daemon) loads the artifact `firespotter build --calib DIR` made.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from firespotter.runtime.artifacts import Artifact, ArtifactCache, ArtifactKey, library_versions, sha256_file
from firespotter.runtime.errors import ConfigError
from firespotter.runtime.types import PrecisionLabel

from .calibration import DEFAULT_FRAMES, load_calibration
from .variants import BuildRequest, VariantError, get_variant

# Distributions whose version can change a built file's bytes. Absent ones are recorded as "absent".
LIBRARIES = ("firespotter", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "onnxconverter-common",
             "tensorrt", "torch-tensorrt", "nvidia-modelopt")


@dataclass
class BuiltModel:
    artifact: Artifact
    files: dict[str, Path]  # role -> verified file in the cache ("onnx" always)
    labels: PrecisionLabel
    key: ArtifactKey
    hit: bool  # found in the cache (no build)
    seconds: float  # lookup + verification on a hit, build time on a miss

    @property
    def onnx(self) -> Path:
        return self.files["onnx"]

    @property
    def manifest(self) -> dict[str, Any]:
        return self.artifact.manifest

    def describe(self) -> dict[str, Any]:
        return {"dir": str(self.artifact.dir), "hit": self.hit, "seconds": round(self.seconds, 3),
                "key": self.key.digest()[:16], **self.labels.as_dict()}


def device_identity(device: str) -> tuple[str, str | None]:
    """(device name, compute capability) for the cache key. CPU graphs are portable; GPU engines are not."""
    if not str(device).startswith("cuda"):
        return "cpu", None
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    try:
        import torch

        if torch.cuda.is_available() and index < torch.cuda.device_count():
            major, minor = torch.cuda.get_device_capability(index)
            return f"cuda:{torch.cuda.get_device_name(index)}", f"{major}.{minor}"
    except ImportError:
        pass
    return f"cuda:{index}", None


def _latest_path(cache: ArtifactCache, key: ArtifactKey) -> Path:
    bare = ArtifactKey(**{**key.__dict__, "calibration_sha256": None})
    return Path(cache.root) / "latest" / f"{bare.digest()}.json"


def _remember_latest(cache: ArtifactCache, key: ArtifactKey) -> None:
    path = _latest_path(cache, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(key.as_dict()) + "\n")
    os.replace(tmp, path)


def _latest_key(cache: ArtifactCache, key: ArtifactKey) -> ArtifactKey | None:
    path = _latest_path(cache, key)
    try:
        d = json.loads(path.read_text())
        return ArtifactKey(**{**d, "versions": tuple(sorted(d["versions"].items())),
                              "options": tuple(sorted(d["options"].items()))})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build_artifact(model, backend: str, precision: str, *, device: str = "cpu", calib: Path | str | None = None,
                   calib_frames: int = DEFAULT_FRAMES, options: dict | None = None,
                   cache: ArtifactCache | None = None, rebuild: bool = False,
                   progress: Callable[[str], None] | None = None) -> BuiltModel:
    """The artifact of `model` (a Model with an "onnx" format) at `precision` for `backend` on `device`.

    `options` are the variant's build options (calibration method, profile, ...); they are part of the key."""
    progress = progress or _stderr
    cache = cache or ArtifactCache(progress=progress)
    variant = get_variant(precision)
    if "onnx" not in model.formats():
        raise VariantError(f"model {model.model_id} has no ONNX graph to build {precision} from",
                           "export it first: firespotter export")
    src = model.artifact("onnx")
    source_torch = model.artifact("torch").checkpoint if "torch" in model.formats() else None
    options = dict(options or {})
    t0 = time.perf_counter()
    calibration = None
    if calib is not None:
        calibration = load_calibration(Path(calib), int(calib_frames), tuple(src.input_size))
        progress(calibration.description)
    name, capability = device_identity(device)
    key = ArtifactKey(
        model_sha256=sha256_file(src.path), backend=backend, precision=precision, device=name,
        compute_capability=capability, versions=library_versions(LIBRARIES),
        calibration_sha256=calibration.sha256 if calibration else None,
        options=tuple(sorted((str(k), json.dumps(v, sort_keys=True)) for k, v in
                             {**options, "input_size": list(src.input_size)}.items())),
    )
    if variant.needs_calibration and calibration is None:
        latest = _latest_key(cache, key)
        hit = cache.get(latest) if latest is not None and not rebuild else None
        if hit is None:
            raise ConfigError(f"precision {precision!r} needs calibration frames and no {precision} artifact of "
                              f"{model.model_id} for {backend} on {name} is in the cache {cache.root}",
                              f"build it once: firespotter build --model NAME --backend {backend} --precision "
                              f"{precision} --calib DIR (real frames: an image folder or a video)")
        return _built(hit, latest, False, time.perf_counter() - t0)
    if not rebuild:
        hit = cache.get(key)
        if hit is not None:
            return _built(hit, key, False, time.perf_counter() - t0)

    def builder(tmp: Path) -> dict:
        req = BuildRequest(source_onnx=Path(src.path), source_torch=source_torch, out_dir=tmp,
                           calibration=calibration.frames if calibration else None,
                           input_size=tuple(src.input_size), mean=tuple(src.mean), std=tuple(src.std),
                           options=options, progress=progress)
        out = variant.build(req)
        if "onnx" not in out.files:
            raise VariantError(f"the {precision} builder produced no 'onnx' file (got {', '.join(out.files)})")
        roles = {}
        for role, path in out.files.items():
            path = Path(path)
            if path.parent.resolve() != tmp.resolve():
                raise VariantError(f"the {precision} builder wrote {path} outside its output folder")
            roles[role] = path.name
        extra = {"roles": roles, "build_info": out.info, "model_id": model.model_id, "source": str(src.path)}
        if calibration is not None:
            extra["calibration"] = {"frames": len(calibration.frames), "sha256": calibration.sha256,
                                    "description": calibration.description}
        return extra

    artifact = cache.build(key, builder, variant.labels,
                           describe=f"{model.model_id} {precision} for {backend} on {name}")
    if calibration is not None:
        _remember_latest(cache, key)
    return _built(artifact, key, True, artifact.build_s)


def _built(artifact: Artifact, key: ArtifactKey, built: bool, seconds: float) -> BuiltModel:
    roles = artifact.manifest.get("roles") or {"onnx": "model.onnx"}
    files = {role: artifact.path(name) for role, name in roles.items()}
    return BuiltModel(artifact, files, artifact.labels, key, hit=not built, seconds=seconds)


def record_accuracy(built: BuiltModel, accuracy: dict[str, Any]) -> None:
    """Add the artifact's measured accuracy against fp32 to its manifest (the manifest is not a hashed file)."""
    path = built.artifact.dir / "manifest.json"
    manifest = dict(built.artifact.manifest, accuracy=accuracy)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
    built.artifact.manifest = manifest


def parse_option_pairs(pairs: list[str] | None, flag: str = "--option") -> dict[str, Any]:
    """["threads=2", "providers=cuda,cpu", "trt_fp16=true"] -> dict; values are read as JSON when they parse."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {pair!r}: expected KEY=VALUE", f"e.g. {flag} threads=2")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out
