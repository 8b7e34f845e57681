"""The accuracy gate: a quantized artifact's IoU against FP32's on a named labelled set.

`measure` scores the FP32 model and the candidate on the same image/mask pairs with the runtime's own
post-processing; the relative drop (iou_fp32 - iou) / iou_fp32 is compared with the budget (the default,
1.225 %, is Briley & Afghah's tolerance). The result goes into the artifact's manifest (`accuracy`), and a load
of an artifact that failed its gate is refused with the numbers (`check_at_load`).
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from .calibration import QuantError

DEFAULT_BUDGET = 0.01225


class GateError(QuantError):
    """An artifact whose accuracy against FP32 dropped more than the budget allows."""


def gate_pairs(data: Path, include=()):
    from firespotter.models.datasets import find_pairs

    data = Path(data)
    if not data.exists():
        raise QuantError(f"--gate {data} does not exist", "give a labelled folder (images/ + masks/)")
    pairs, _ = find_pairs(data)
    include = list(include or ())
    if include:
        pairs = [p for p in pairs if any(fnmatch.fnmatch(p.name, g) for g in include)]
    if not pairs:
        raise QuantError(f"--gate {data}: no labelled image" + (f" matches {' '.join(include)}" if include else ""))
    return pairs


def measure(pairs, reference: Callable, candidate: Callable, budget: float = DEFAULT_BUDGET,
            data: str = "", threshold: float = 0.5) -> dict:
    """IoU of `reference` (FP32) and `candidate` on pairs; predict(batch N×H×W×3 uint8) -> N×H×W prob."""
    from firespotter.models.evaluate import evaluate
    from firespotter.runtime.post import PostParams

    if not 0 <= budget < 1:
        raise QuantError(f"--budget {budget} must be a fraction in [0, 1), e.g. 0.01225 for 1.225 %")
    params = PostParams(threshold=threshold)
    ref, cand = evaluate(pairs, reference, params).report(), evaluate(pairs, candidate, params).report()
    iou_ref, iou = ref.get("iou"), cand.get("iou")
    if iou_ref is None or iou is None:
        raise QuantError(f"--gate {data}: no fire pixel in the truth or the predictions; the gate needs a set "
                         "with fire")
    drop = (iou_ref - iou) / iou_ref if iou_ref > 0 else 0.0
    return {"data": str(data), "n_images": len(pairs), "iou_fp32": round(iou_ref, 6), "iou": round(iou, 6),
            "relative_drop": round(drop, 6), "budget": budget, "passed": bool(drop <= budget),
            "threshold": threshold}


def describe(acc: dict, precision: str = "") -> str:
    verdict = "passed" if acc.get("passed") else "FAILED"
    return (f"accuracy gate {verdict}{' for ' + precision if precision else ''}: IoU {acc['iou']:.4f} vs fp32 "
            f"{acc['iou_fp32']:.4f} on {acc['data']} ({acc['n_images']} images), relative drop "
            f"{100 * acc['relative_drop']:.3f} % (budget {100 * acc['budget']:.3f} %)"
            + (f"; fell back to {acc['fallback']}" if acc.get("fallback") else ""))


def enforce(acc: dict, precision: str) -> None:
    if not acc["passed"]:
        raise GateError(describe(acc, precision) + "; refusing this artifact",
                        "calibrate on more or more representative frames, try --build-option method=entropy, use "
                        "another precision, or pass --fallback fp32")


def record(artifact_dir: Path, acc: dict) -> None:
    """Write `accuracy` into the artifact's manifest (not a hashed file; replaced atomically)."""
    path = Path(artifact_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["accuracy"] = acc
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)


def check_at_load(manifest: dict, precision: str) -> str | None:
    """The line to show when an artifact loads (None without a gate result); GateError if it failed its gate."""
    acc = (manifest or {}).get("accuracy")
    if not acc or "passed" not in acc:
        return None
    if not acc["passed"]:
        raise GateError(describe(acc, precision) + "; this artifact was refused at build time",
                        f"rebuild it (firespotter build --precision {precision} --calib DIR --rebuild --gate DATA) "
                        "or use --precision fp32")
    return describe(acc, precision)


def onnx_predictor(path: Path, input_size, mean, std, threads: int = 1) -> Callable:
    """A predict function over an ONNX fire model (for gating files outside a bound segmenter, e.g. bench)."""
    import cv2
    import onnxruntime as ort

    from .calibration import to_inputs

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def predict(batch):
        out = []
        for frame in batch:
            logits = sess.run(None, {name: to_inputs([frame], tuple(input_size), mean, std)})[0][0, 0]
            prob = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
            out.append(cv2.resize(prob.astype(np.float32), (frame.shape[1], frame.shape[0]),
                                  interpolation=cv2.INTER_LINEAR))
        return np.stack(out)

    return predict


def gate_build(bind: Callable, model_settings, segmenter, data: Path, include=(), budget: float = DEFAULT_BUDGET,
               fallback: str | None = None, say: Callable[[str], None] = print):
    """`firespotter build --gate`: measure the bound artifact against FP32, record it, refuse or fall back.

    `bind(model_settings) -> (segmenter, backend)` binds a model as a run would. -> (accuracy, segmenter)."""
    precision = model_settings.precision
    artifact = (segmenter.info() or {}).get("artifact")
    if precision == "fp32" or not artifact:
        raise QuantError(f"--gate compares a built artifact with fp32; {precision} on this backend builds nothing",
                         "use --precision int8 (or another quantized precision)")
    pairs = gate_pairs(data, include)
    plain = {k: v for k, v in model_settings.backend_options.items()
             if k not in ("calib", "calib_frames", "build", "rebuild")}
    reference, _ = bind(model_settings.model_copy(update={"precision": "fp32", "backend_options": plain}))
    say(f"accuracy gate: scoring fp32 and {precision} on {len(pairs)} labelled images of {data}")
    acc = measure(pairs, reference.predict, segmenter.predict, budget, str(data))
    if not acc["passed"] and fallback:
        acc["fallback"] = fallback
    record(Path(artifact["dir"]), acc)
    say(describe(acc, precision))
    if acc["passed"]:
        return acc, segmenter
    if not fallback:
        enforce(acc, precision)
    fb_opts = plain if fallback == "fp32" else model_settings.backend_options
    fb, _ = bind(model_settings.model_copy(update={"precision": fallback, "backend_options": fb_opts}))
    say(f"falling back to {fallback}: {precision} lost more IoU than the budget allows")
    return acc, fb
