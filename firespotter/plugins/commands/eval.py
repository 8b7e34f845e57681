"""`firespotter eval DATA --model M`: fire-class metrics of a model on image/mask pairs."""

from __future__ import annotations

import csv
import fnmatch
import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from firespotter.models.datasets import find_pairs
from firespotter.models.evaluate import classification_eval, evaluate, frame_accuracy, frame_scores
from firespotter.models.training import find_classified
from firespotter.runtime.assemble import bind_segmenter
from firespotter.runtime.config import ModelSettings, apply_overrides, load_settings
from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.plugins import get_registry, hookimpl
from firespotter.runtime.post import PostParams
from firespotter.runtime.specs import CommandSpec

CSV_FIELDS = ["name", "group", "iou", "f1", "precision", "recall", "tp", "fp", "fn", "tn", "truth_px", "pred_px",
              "regions", "alert", "mask_resized"]


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def eval_command(
    data: Optional[Path] = typer.Argument(None, help="images/ + masks/ (same stems), the FLAME layout, or "
                                          "classification folders (Training/{Fire,No_Fire}, or fire/ + no_*/): "
                                          "frame-level accuracy. Not with --suite."),
    suite: Optional[Path] = typer.Option(None, "--suite", help="Score every set of an evaluation suite (TOML "
                                         "[[sets]]; eval/suite.toml is the project's), one table per set with "
                                         "the colour rule as a reference row."),
    reference: bool = typer.Option(True, "--reference/--no-reference", help="With --suite: also score the colour "
                                   "rule."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name (default: config or fireseg-lite)."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b"),
    precision: Optional[str] = typer.Option(None, "--precision", "-p"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Fire probability threshold."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config ([model] and [post] are used)."),
    negatives: bool = typer.Option(False, "--negatives", help="Score every image as fire-free (no masks)."),
    include: Optional[list[str]] = typer.Option(None, "--include", help="Only images whose name matches this "
                                                "glob (repeatable), e.g. 'flame1_t01*' for a temporal split."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the metrics here."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write one row per image here."),
) -> None:
    """Score a model on labelled images: IoU, F1, precision, recall, mIoU, MPA, per image and per group."""
    settings = apply_overrides(load_settings(config), {
        "model.name": model, "model.backend": backend, "model.precision": precision, "model.threshold": threshold})
    command = "firespotter " + shlex.join(sys.argv[1:])
    if suite is not None:
        if data is not None or include or negatives or csv_path:
            raise FirespotterError("--suite names its own data; leave out DATA, --include, --negatives and --csv")
        from firespotter.models.suite import load_suite

        from .eval_suite import run_suite

        typer.echo(run_suite(load_suite(suite), settings, reference, json_path, command))
        return
    if data is None:
        raise FirespotterError("give DATA (a labelled folder) or --suite FILE")
    classified = None if negatives else find_classified(data)
    if classified is not None:
        if include:
            classified = [(p, lab) for p, lab in classified if any(fnmatch.fnmatch(p.stem, g) for g in include)]
            if not classified:
                raise FirespotterError(f"no image of {data} matches --include {' '.join(include)}")
        segmenter, backend_name = bind_segmenter(get_registry(), settings.model)
        report = {"data": str(data), "layout": "classification", "model": settings.model.name,
                  "model_id": segmenter.model_id, "backend": backend_name, **segmenter.precision.as_dict(),
                  "command": command, "include": list(include or [])}
        report["classification"] = classification_eval(classified, segmenter)
        c = report["classification"]
        if not c["n_frames"]:
            raise FirespotterError(f"no image of {data} could be read ({len(c['skipped_files'])} skipped)")
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(report, indent=2) + "\n")
        k = c["confusion"]
        typer.echo(f"{c['n_frames']} frames (classification folders) from {data}; model {report['model']} on "
                   f"{backend_name}; fire score from the {c['score_source']}, fire when >= 0.5\n"
                   f"frame accuracy {_fmt(c['accuracy'])}  precision {_fmt(c['precision'])}  recall {_fmt(c['recall'])}"
                   f"  (fire frames {c['n_fire']}: tp {k['tp']} fn {k['fn']}; fire-free {k['fp'] + k['tn']}: "
                   f"fp {k['fp']} tn {k['tn']})")
        return
    pairs, layout = find_pairs(data, negatives=negatives)
    if include:
        pairs = [p for p in pairs if any(fnmatch.fnmatch(p.name, pattern) for pattern in include)]
        if not pairs:
            raise FirespotterError(f"no image of {data} matches --include {' '.join(include)}")
    segmenter, backend_name = bind_segmenter(get_registry(), settings.model)
    post = settings.post
    params = PostParams(settings.model.threshold, post.min_region_px, post.alert_min_area_px, post.alert_min_peak,
                        post.max_regions)
    predict, scores, score_source = frame_scores(segmenter)
    run = evaluate(pairs, predict, params)
    if not run.rows:
        raise FirespotterError(f"no image of {data} could be read ({len(run.skipped)} skipped)")
    report = {
        **run.report(),
        "data": str(data), "layout": layout, "model": settings.model.name, "model_id": segmenter.model_id,
        "backend": backend_name, **segmenter.precision.as_dict(), "threshold": settings.model.threshold,
        "command": command, "include": list(include or []), "negatives": negatives,
    }
    if score_source == "frame head" and len(scores) == len(run.rows):
        report["frame_head"] = frame_accuracy([r["truth_px"] > 0 for r in run.rows], scores)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    if csv_path:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            writer.writeheader()
            for row in run.rows:
                writer.writerow({k: row[k] for k in CSV_FIELDS})
    lines = [f"{report['n_images']} images ({layout}) from {data}; model {report['model']} on {backend_name} "
             f"[{report['precision_exec']}, {report['weight_bits']}-bit, simulated={report['simulated']}], "
             f"threshold {report['threshold']}"]
    if run.skipped:
        lines.append(f"skipped {len(run.skipped)} unreadable: {', '.join(run.skipped[:5])}")
    if run.resized:
        lines.append(f"resized {len(run.resized)} masks to their image's size (nearest-neighbour)")
    lines.append(f"{'group':<12}{'images':>7}{'IoU':>8}{'F1':>8}{'prec':>8}{'recall':>8}{'mIoU':>8}{'MPA':>8}"
                 f"{'FPR':>9}")
    for name, s in [("ALL", report)] + list(report["groups"].items()):
        lines.append(f"{name:<12}{s['n_images']:>7}{_fmt(s['iou']):>8}{_fmt(s['f1']):>8}{_fmt(s['precision']):>8}"
                     f"{_fmt(s['recall']):>8}{_fmt(s['miou']):>8}{_fmt(s['mpa']):>8}{_fmt(s['false_positive_rate']):>9}")
    if report["n_empty_truth"]:
        lines.append(f"fire-free images: {report['n_empty_truth']}, with false fire: "
                     f"{report['n_empty_truth_with_false_fire']}")
    if "frame_head" in report:
        fh = report["frame_head"]
        lines.append(f"frame head (fire when score >= 0.5): accuracy {_fmt(fh['accuracy'])} on {fh['n_frames']} "
                     f"frames ({fh['confusion']['fp']} false fire, {fh['confusion']['fn']} missed)")
    typer.echo("\n".join(lines))


@hookimpl
def register_commands():
    return [CommandSpec("eval", eval_command, help="Score a model on labelled images (IoU, F1, mIoU, ...).")]
