"""`firespotter train` and `firespotter export`: train a fire segmenter, write ONNX checked against PyTorch.

    firespotter train --arch fireseg-lite --data DIR [--data DIR2] [--synthetic N] --epochs E [--amp] --out DIR
    firespotter export DIR/model.pt --out firespotter/models/zoo --name fireseg-lite [--metrics SET=eval.json]
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import CommandSpec, module_available


def _command_line() -> str:
    return "firespotter " + shlex.join(sys.argv[1:])


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise FirespotterError(f"--input-size {text!r} must look like 512 or 512x384 (WIDTHxHEIGHT)") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 32:
        raise FirespotterError(f"--input-size {text!r} must look like 512 or 512x384, each side at least 32")
    return parts[1], parts[0]


class _Bar:
    """A rich progress bar with loss and validation IoU on a terminal; one line per epoch otherwise."""

    def __init__(self, total_epochs: int):
        self.total = total_epochs
        self.rich = None
        self.task = None

    def __enter__(self):
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.rich = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                 console=Console(file=sys.stderr), transient=False)
            self.rich.__enter__()
        return self

    @staticmethod
    def _val_text(val: dict) -> str:
        parts = []
        for name, v in val.items():
            if name.endswith("(negatives)"):  # no fire in truth: IoU says nothing, the share called fire does
                parts.append(f"{name} fire px {100 * v['fire_px_rate']:.3f}%")
                continue
            iou = "-" if v.get("iou") is None else f"{v['iou']:.3f}"
            parts.append(f"{name} IoU {iou}")
        return "; ".join(parts)

    def __call__(self, ev: dict) -> None:
        status = f"loss {ev['loss']:.4f}" + (f" | val {self._val_text(ev['val'])}" if ev.get("val") else "")
        desc = f"epoch {ev['epoch']}/{ev['epochs']}"
        if self.rich is not None:
            if self.task is None:
                self.task = self.rich.add_task(desc, total=ev["steps"], status=status)
            self.rich.update(self.task, description=desc, completed=ev["step"], total=ev["steps"], status=status)
            if ev.get("end_of_epoch") and ev["epoch"] < ev["epochs"]:
                self.rich.console.print(f"{desc}: {status}")
        elif ev.get("end_of_epoch"):
            print(f"{desc}: {status}", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self.rich is not None:
            self.rich.__exit__(*exc)


def _augment_overrides(items: list[str]) -> dict:
    """--augment KEY=VALUE ... -> AugmentParams fields, typed like their defaults (an error names the bad one)."""
    from dataclasses import fields

    from firespotter.models.augment import AugmentParams
    from firespotter.models.training import TrainingError
    from firespotter.runtime.config import parse_flag

    defaults = {f.name: f.default for f in fields(AugmentParams)}
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in defaults:
            raise TrainingError(f"--augment {item!r}: expected KEY=VALUE with KEY one of {', '.join(defaults)}")
        kind = type(defaults[key])
        try:
            if kind is bool:
                out[key] = parse_flag(value)
            elif kind is tuple:
                lo, hi = (float(v) for v in value.split(","))
                out[key] = (lo, hi)
            else:
                out[key] = kind(value)
        except ValueError:
            raise TrainingError(f"--augment {key}={value!r}: expected a {kind.__name__}"
                                + (" as LOW,HIGH" if kind is tuple else "")) from None
    return out


def _config_from_recipe(path: Path, **overrides):
    """TrainConfig from a recipe file; the given (non-None) overrides win."""
    from dataclasses import fields

    from firespotter.models.domains import load_recipe
    from firespotter.models.training import TrainConfig, TrainingError

    r = load_recipe(path)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(r.settings) - known)
    if unknown:
        raise TrainingError(f"recipe {path}: unknown setting(s) {', '.join(unknown)}",
                            f"known: {', '.join(sorted(known - {'domains', 'val_sets'}))}")
    settings = {**r.settings, **{k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()
                                 if v is not None}}
    if "arch" not in settings or "epochs" not in settings:
        raise TrainingError(f"recipe {path} needs arch and epochs")
    if "input_size" in settings and isinstance(settings["input_size"], str):
        settings["input_size"] = _parse_size(settings["input_size"])
    return TrainConfig(**settings, domains=r.domains, val_sets=r.val)


def train_command(
    arch: Optional[str] = typer.Option(None, "--arch", "-a", help="fireseg-lite or fireseg-unet (required "
                                       "without --recipe)."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="A training recipe (TOML): settings, [[domains]] "
                                          "with their share of every epoch, [[val]] sets. --epochs, --seed, --init "
                                          "and --threads override it; other data options are not allowed with it."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this checkpoint's weights (fine-tune)."),
    data: Optional[list[Path]] = typer.Option(None, "--data", "-d", help="images/+masks/, the FLAME segmentation "
                                              "layout, or FLAME classification folders (Training/{Fire,No_Fire}). "
                                              "Repeatable."),
    negatives: Optional[list[Path]] = typer.Option(None, "--negatives", help="Folder of fire-free images (no masks). "
                                                   "Repeatable."),
    include: Optional[list[str]] = typer.Option(None, "--include", help="Only training images whose name (without "
                                                "extension) matches this glob. Repeatable."),
    exclude: Optional[list[str]] = typer.Option(None, "--exclude", help="Leave out images matching this glob."),
    synthetic: int = typer.Option(0, "--synthetic", min=0, help="Synthetic frames per epoch, rendered on the fly."),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", min=1, help="Required without --recipe."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for last.pt, model.pt, train.json, model.onnx."),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Times each real frame is used per epoch."),
    batch: int = typer.Option(12, "--batch", min=2),
    crop: int = typer.Option(256, "--crop", min=32, help="Training crop side (multiple of 32)."),
    input_size: Optional[str] = typer.Option(None, "--input-size", help="Model input WIDTHxHEIGHT (default: the "
                                             "architecture's, 512x512)."),
    lr: float = typer.Option(3e-3, "--lr"),
    loss: str = typer.Option("bce-dice", "--loss", help="bce-dice or focal-dice."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Default 0 (or the recipe's)."),
    amp: bool = typer.Option(False, "--amp", help="Autocast: bf16 on the CPU, fp16 with a grad scaler on CUDA."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads."),
    val: Optional[list[Path]] = typer.Option(None, "--val", help="Labelled folder scored after every epoch."),
    val_include: Optional[list[str]] = typer.Option(None, "--val-include", help="Glob on --val image names."),
    val_negatives: Optional[list[Path]] = typer.Option(None, "--val-negatives", help="Fire-free folder scored after "
                                                       "every epoch (share of pixels called fire)."),
    val_synthetic: int = typer.Option(0, "--val-synthetic", min=0, help="Synthetic validation frames (held-out seeds)."),
    augment: Optional[list[str]] = typer.Option(None, "--augment", help="Override one augmentation setting, "
                                                "KEY=VALUE (e.g. haze=0, blur=0, scale=0.8,1.25). Repeatable."),
    synthetic_shifts: float = typer.Option(0.3, "--synthetic-shifts", help="Fraction of synthetic worlds rendered "
                                           "under a camera shift (haze, low light, colour cast, blur, noise, JPEG)."),
    light_epochs: int = typer.Option(0, "--light-epochs", min=0, help="The last N epochs train with light "
                                     "augmentation (exact geometry, mild colour)."),
    ema: float = typer.Option(0.995, "--ema", min=0.0, max=0.9999, help="Decay of the weights' moving average "
                              "that is validated and shipped (0 = off)."),
    calibrate: bool = typer.Option(True, "--calibrate/--no-calibrate", help="After training, shift the output so "
                                   "that 0.5 is the best threshold on the training data."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pt when it exists."),
    export: bool = typer.Option(True, "--export/--no-export", help="Write OUT/model.onnx (+ split graphs) at the end, "
                                "checked against PyTorch on real frames."),
) -> None:
    """Train a fire segmenter (seeded, resumable), then export it to ONNX."""
    from firespotter.models.training import TrainConfig, TrainingError, train

    if recipe is not None:
        if data or negatives or include or exclude or synthetic or val or val_negatives or val_synthetic:
            raise TrainingError("--recipe says what to train and validate on; leave out --data, --negatives, "
                                "--include, --exclude, --synthetic, --val*")
        cfg = _config_from_recipe(recipe, arch=arch, epochs=epochs, seed=seed, threads=threads, init=init)
        epochs = cfg.epochs
    else:
        if arch is None or epochs is None:
            raise TrainingError("--arch and --epochs are required (or give --recipe FILE)")
        cfg = TrainConfig(arch=arch, data=[str(d) for d in data or []], negatives=[str(d) for d in negatives or []],
                          include=list(include or []), exclude=list(exclude or []), synthetic=synthetic,
                          epochs=epochs, repeat=repeat, batch=batch, crop=crop, input_size=_parse_size(input_size),
                          lr=lr, loss=loss, seed=seed or 0, amp=amp, device=device, threads=threads,
                          val=[str(v) for v in val or []], val_include=list(val_include or []),
                          val_negatives=[str(v) for v in val_negatives or []], val_synthetic=val_synthetic,
                          calibrate=calibrate, ema=ema, light_epochs=light_epochs,
                          augment=_augment_overrides(augment or []), synthetic_shifts=synthetic_shifts,
                          init=str(init) if init else None)
    arch = cfg.arch
    t0 = time.monotonic()
    with _Bar(epochs) as bar:
        result = train(cfg, out, resume=resume, command=_command_line(), on_progress=bar)
    last = result.history[-1] if result.history else {}
    lines = [f"trained {arch} for {epochs} epochs in {result.wall_s:.0f} s"
             + (f" (resumed after epoch {result.resumed_from_epoch + 1})" if result.resumed_from_epoch is not None else "")
             + f"; final loss {last.get('loss', float('nan')):.4f}",
             f"wrote {result.checkpoint} and {out / 'train.json'}"]
    if last.get("val"):
        lines.append("validation: " + _Bar._val_text(last["val"]))
    from firespotter.models.checkpoint import load_checkpoint

    cal = load_checkpoint(result.checkpoint).get("calibration")
    if cal:
        on = "validation sets" if cal.get("on") == "validation" else "training data"
        lines.append(f"calibrated on the {on}: threshold {cal['threshold']:.2f} is now 0.5 "
                     f"(mean IoU {cal['mean_iou_at_0.5']:.3f} -> {cal['mean_iou_at_threshold']:.3f})")
    if export:
        paths, parity = _export(result.checkpoint, out, "model", None)
        lines.append(f"wrote {paths['onnx']} (+ encoder/decoder); ONNX vs PyTorch on {parity['frames_desc']}: "
                     f"max |dp| {parity['max_abs_diff_prob']:.1e}")
    lines.append(f"({time.monotonic() - t0:.0f} s in all)")
    typer.echo("\n".join(lines))


def _export(checkpoint: Path, out: Path, name: str, check: list[Path] | None):
    from firespotter.models.export import check_parity, export_onnx, frames_for_parity
    from firespotter.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    paths = export_onnx(ckpt, out, name)
    frames, desc = frames_for_parity(ckpt, check)
    parity = check_parity(ckpt, paths, frames)
    parity["frames_desc"] = desc
    (out / f"{name}.export.json").write_text(json.dumps({"checkpoint": str(checkpoint), "parity": parity,
                                                          "command": _command_line()}, indent=2) + "\n")
    return paths, parity


def _metrics_entry(label: str, path: Path) -> dict:
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise FirespotterError(f"--metrics {label}={path}: not a readable eval JSON ({exc})") from None
    keys = ("iou", "f1", "precision", "recall", "miou", "mean_image_iou", "false_positive_rate", "n_images",
            "n_empty_truth", "n_empty_truth_with_false_fire", "backend", "threshold", "data", "command")
    if "sets" in report:  # `firespotter eval --suite --json`: one entry per set, the colour rule beside
        return {"command": report.get("command"), "threshold": report.get("threshold"),
                "backend": report.get("backend"),
                "sets": {name: {"kind": s["kind"], **{model: _without_detail(r) for model, r in s["results"].items()}}
                         for name, s in report["sets"].items()}}
    entry = {k: report.get(k) for k in keys if k in report}
    if "classification" in report:
        entry["classification"] = report["classification"]
    return entry


def _without_detail(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("per_image", "per_frame")}


def export_command(
    checkpoint: Path = typer.Argument(..., help="model.pt / last.pt from `firespotter train`, or its folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for NAME.onnx, NAME.{encoder,decoder}.onnx, NAME.pt "
                             "and the manifest NAME.json."),
    name: Optional[str] = typer.Option(None, "--name", help="File name stem (default: the architecture's name)."),
    check: Optional[list[Path]] = typer.Option(None, "--check", help="Real images (files or folders) to check the "
                                               "export on (default: the checkpoint's training images)."),
    metrics: Optional[list[str]] = typer.Option(None, "--metrics", help="SET=EVAL.json from `firespotter eval --json` (or "
                                                "`eval --suite --json`: every set), recorded in the manifest. "
                                                "Repeatable."),
) -> None:
    """Export a checkpoint to ONNX (weights inside), check it against PyTorch, write a manifest with sha256s."""
    import torch

    from firespotter.models.arch import count_flops, count_params
    from firespotter.models.export import OPSET
    from firespotter.models.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from firespotter.models.zoo import MANIFEST_FORMAT, MANIFEST_VERSION, file_entry

    ckpt = load_checkpoint(checkpoint)
    name = name or ckpt["arch"]
    entries = []
    for m in metrics or []:
        label, sep, path = m.partition("=")
        if not sep or not label or not path:
            raise FirespotterError(f"--metrics {m!r} must look like 'SET NAME=path/to/eval.json'")
        entries.append((label, Path(path)))
    out.mkdir(parents=True, exist_ok=True)
    paths, parity = _export(Path(ckpt["path"]), out, name, check)
    weights = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "scaler", "path", "train_model")}
    save_checkpoint(out / f"{name}.pt", weights)
    model = model_from_checkpoint(ckpt)
    files = {role: file_entry(p, out) for role, p in paths.items()}
    files["torch"] = file_entry(out / f"{name}.pt", out)
    onnx_sha = files["onnx"]["sha256"]
    manifest = {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "name": name, "model_id": f"{name}-{onnx_sha[:8]}",
        "arch": ckpt["arch"], "input_size": list(ckpt["input_size"]), "mean": list(ckpt["mean"]),
        "std": list(ckpt["std"]), "output": "logits", "fire_output": "fire_logit", "opset": OPSET,
        "params": count_params(model), "gflops": round(count_flops(model, tuple(ckpt["input_size"])) / 1e9, 3),
        "files": files,
        "training": {
            "command": ckpt.get("command"), "epochs": ckpt.get("epochs", (ckpt.get("epoch") or 0) + 1),
            "seed": ckpt.get("seed", (ckpt.get("config") or {}).get("seed")), "amp": ckpt.get("amp"),
            "wall_s": ckpt.get("wall_s"), "threads": ckpt.get("threads"), "device": ckpt.get("device"),
            "versions": ckpt.get("versions"), "config": ckpt.get("config"),
            "final_epoch": (ckpt.get("history") or [{}])[-1], "data": ckpt.get("data"),
        },
        "export": {"command": _command_line(), "torch": str(torch.__version__),
                   "parity": {k: v for k, v in parity.items() if k != "detail"}},
        "metrics": {label: _metrics_entry(label, p) for label, p in entries},
    }
    (out / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / f"{name}.export.json").unlink(missing_ok=True)
    sizes = ", ".join(f"{Path(e['path']).name} {e['bytes'] / 1e6:.2f} MB" for e in files.values())
    typer.echo(f"wrote {out / (name + '.json')} ({sizes}); ONNX vs PyTorch on {parity['frames_desc']}: "
               f"max |dp| {parity['max_abs_diff_prob']:.1e}, max |d score| {parity['max_abs_diff_score']:.1e}")


@hookimpl
def register_commands():
    avail = module_available("torch", extra="torch")
    return [CommandSpec("train", train_command, help="Train a fire segmenter (seeded, resumable) and export it.",
                        available=avail),
            CommandSpec("export", export_command, help="Export a checkpoint to ONNX with a sha256 manifest.",
                        available=avail)]
