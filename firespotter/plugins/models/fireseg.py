"""fireseg-lite and fireseg-unet: the project's own fire segmentation networks, with a frame-level fire head.

Weights come from the zoo (`firespotter/models/zoo/NAME.json` and the files it lists, each checked against its
sha256) unless `[model] options.weights` points elsewhere:
- a folder written by `firespotter train --out DIR` (model.pt, model.onnx, ...) or `firespotter export`,
- a manifest (`NAME.json`, files verified), a checkpoint (`.pt`) or an ONNX file (`.onnx`; the split
  encoder/decoder graphs and a `.pt` with the same stem are used when they sit beside it).

The model comes as `onnx` (for the onnxruntime backend) and `torch` (for the torch and tensorrt backends) when
both files exist. `weights` is the model's only option (`FireSegOptions`); the backends' options (`threads`,
`gate`, `amp`, ...) are theirs, in `[model] backend_options`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from firespotter.runtime.errors import PluginError
from firespotter.runtime.formats import FireOnnxArtifact, TorchArtifact
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import ModelSpec
from firespotter.runtime.types import InputSpec

DEFAULT_INPUT = (512, 512)
MEAN = (0.485, 0.456, 0.406)  # = firespotter.models.arch.MEAN, repeated here so that ONNX-only use needs no torch
STD = (0.229, 0.224, 0.225)


class FireSegOptions(BaseModel):
    """`[model] options` of the fireseg models."""

    model_config = ConfigDict(extra="forbid")
    weights: str | None = Field(None, description="a training folder, manifest, .pt or .onnx; default: the zoo's")


def _split_siblings(onnx: Path) -> dict[str, Path]:
    stem = onnx.name[: -len(".onnx")]
    out = {"onnx": onnx}
    for role in ("encoder", "decoder"):
        p = onnx.with_name(f"{stem}.{role}.onnx")
        if p.is_file():
            out[role] = p
    pt = onnx.with_name(f"{stem}.pt")
    if pt.is_file():
        out["torch"] = pt
    return out


class FireSegModel:
    def __init__(self, name: str, options: FireSegOptions | None = None):
        from firespotter.models.zoo import ModelFileError, load_manifest, manifest_path, verified_files

        self.name = name
        options = options or FireSegOptions()
        self.manifest: dict | None = None
        if options.weights:
            files = self._from_path(Path(options.weights).expanduser())
        else:
            path = manifest_path(name)
            if not path.is_file():
                raise ModelFileError(
                    f"model {name!r} has no shipped weights (no {path.name} in the zoo)",
                    f"train it: firespotter train --arch {name} --data DIR --epochs N --out DIR, then set "
                    "[model] options = {weights = \"DIR\"}")
            self.manifest = load_manifest(path)
            files = verified_files(self.manifest)
        self.files = files
        meta = self._describe(files)
        arch = meta.get("arch")
        if arch and arch != name:
            raise PluginError(f"{files.get('onnx') or files.get('torch')} holds a {arch} network, not a {name}",
                              f"use --model {arch}")
        self.input_size = tuple(meta.get("input_size") or DEFAULT_INPUT)
        self.mean = tuple(meta.get("mean") or MEAN)
        self.std = tuple(meta.get("std") or STD)
        self.output = meta.get("output", "logits")
        ident = (self.manifest or {}).get("model_id") or f"{name}-{_short_hash(files.get('onnx') or files['torch'])}"
        self.model_id = ident
        self.input_spec = InputSpec(size=self.input_size)

    def _from_path(self, p: Path) -> dict[str, Path]:
        from firespotter.models.zoo import ModelFileError, load_manifest, verified_files

        if p.is_dir():
            manifests = sorted(p.glob("*.json"))
            named = p / f"{self.name}.json"
            for m in ([named] if named.is_file() else []) + manifests:
                try:
                    self.manifest = load_manifest(m)
                except ModelFileError:
                    continue
                return verified_files(self.manifest)
            if (p / "model.onnx").is_file():
                return _split_siblings(p / "model.onnx")
            if (p / "model.pt").is_file():
                return {"torch": p / "model.pt"}
            raise ModelFileError(f"{p} holds no model: expected model.pt / model.onnx (from `firespotter train`) "
                                 "or a manifest (from `firespotter export`)")
        if not p.exists():
            raise ModelFileError(f"model weights {p} do not exist")
        suffix = p.suffix.lower()
        if suffix == ".json":
            self.manifest = load_manifest(p)
            return verified_files(self.manifest)
        if suffix == ".onnx":
            return _split_siblings(p)
        if suffix in (".pt", ".pth"):
            onnx = p.with_suffix(".onnx")
            return {**(_split_siblings(onnx) if onnx.is_file() else {}), "torch": p}
        raise ModelFileError(f"model weights {p}: expected a .onnx, .pt or manifest .json file, or a training folder")

    def _describe(self, files: dict[str, Path]) -> dict:
        if self.manifest is not None:
            return {k: self.manifest.get(k) for k in ("arch", "input_size", "mean", "std", "output")}
        if "onnx" in files:
            from firespotter.models.export import read_metadata

            try:
                meta = read_metadata(files["onnx"])
            except Exception as exc:
                raise PluginError(f"ONNX Runtime cannot load {files['onnx']}: {exc}") from None
            if meta:
                return meta
            return {"input_size": _static_input_size(files["onnx"])}
        from firespotter.models.checkpoint import load_checkpoint

        ckpt = load_checkpoint(files["torch"])
        return {k: ckpt.get(k) for k in ("arch", "input_size", "mean", "std", "output")}

    def formats(self) -> tuple[str, ...]:
        return tuple(f for f, role in (("onnx", "onnx"), ("torch", "torch")) if role in self.files)

    def artifact(self, fmt: str):
        if fmt == "onnx" and "onnx" in self.files:
            return FireOnnxArtifact(self.files["onnx"], self.input_size, self.mean, self.std, self.output,
                                    fire_output="fire_logit", encoder=self.files.get("encoder"),
                                    decoder=self.files.get("decoder"), arch=self.name)
        if fmt == "torch" and "torch" in self.files:
            return TorchArtifact(self.name, self.files["torch"], self.input_size, self.mean, self.std, self.output)
        raise KeyError(fmt)


def _short_hash(path: Path) -> str:
    from firespotter.models.zoo import sha256_file

    return sha256_file(path)[:8]


def _static_input_size(path: Path):
    import onnxruntime as ort

    shape = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]):
        return (shape[2], shape[3])
    return None


def make(name: str):
    def factory(options: FireSegOptions | None = None):
        return FireSegModel(name, options)

    return factory


@hookimpl
def register_models():
    return [
        ModelSpec("fireseg-lite", make("fireseg-lite"),
                  "real-time fire segmenter (~1 GFLOP at 512x512) with a frame-level fire head; shipped weights",
                  ("fp32", "fp16", "bf16"), options_model=FireSegOptions),
        ModelSpec("fireseg-unet", make("fireseg-unet"),
                  "FLAME-baseline U-Net (16-256, ~24 GFLOPs at 512x512) with a frame-level fire head; parity reference",
                  ("fp32", "fp16", "bf16"), options_model=FireSegOptions),
    ]
