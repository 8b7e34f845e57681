"""`firespotter eval --suite FILE`: every set of an evaluation suite, one table each, the colour rule beside."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from firespotter.models.evaluate import classification_eval, evaluate, frame_scores
from firespotter.models.suite import SuiteSet, masks_summary, score_video, select_pairs, synthetic_pairs
from firespotter.models.training import find_classified
from firespotter.runtime.assemble import bind_segmenter
from firespotter.runtime.config import apply_overrides
from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.plugins import get_registry
from firespotter.runtime.post import PostParams

REFERENCE = "colorrule"


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f}%" if pct else f"{v:.4f}"


def prepare(s: SuiteSet, tmp: Path):
    """What a set scores, loaded and checked before any model runs: pairs, classified items or a video."""
    if s.kind in ("masks", "negatives"):
        return select_pairs(s)
    if s.kind == "synthetic":
        return synthetic_pairs(s, tmp / s.name)
    if s.kind == "classification":
        items = find_classified(Path(s.folder))
        if items is None:
            raise FirespotterError(f"set {s.name!r}: {s.folder} has no fire/ and no_*/ (or Fire/No_Fire) folders")
        return items
    return None  # boxes-video: streamed when scored (checked there before the first frame)


def score_set(s: SuiteSet, inputs, segmenter, params: PostParams) -> dict:
    if s.kind == "classification":
        c = classification_eval(inputs, segmenter)
        return {"frames": c["n_frames"], "accuracy": c["accuracy"], "precision": c["precision"],
                "recall": c["recall"], "confusion": c["confusion"], "score_source": c["score_source"]}
    predict, scores, source = frame_scores(segmenter)
    if s.kind == "boxes-video":
        return score_video(s, predict, params)
    run = evaluate(inputs, predict, params)
    report = run.report()
    report["pred_px"] = sum(r["pred_px"] for r in run.rows)
    report["total_px"] = sum(r["tp"] + r["fp"] + r["fn"] + r["tn"] for r in run.rows)
    report["n_frames_with_fire_px"] = sum(1 for r in run.rows if r["pred_px"] > 0)
    truth = [r["truth_px"] > 0 for r in run.rows]
    out = masks_summary(report, scores if source == "frame head" else None, truth)
    out["per_image"] = [{"name": r["name"], "iou": r["iou"], "pred_px": r["pred_px"], "truth_px": r["truth_px"]}
                        for r in run.rows]
    return out


def table(s: SuiteSet, n: int | None, rows: dict[str, dict]) -> list[str]:
    head = f"== {s.name} ({s.kind}{'' if n is None else f', {n} frames'}) =="
    lines = [head]
    if s.kind == "classification":
        lines.append(f"{'model':<16}{'accuracy':>10}{'precision':>11}{'recall':>8}{'false fire':>12}{'missed':>8}")
        for name, r in rows.items():
            k = r["confusion"]
            lines.append(f"{name:<16}{_fmt(r['accuracy']):>10}{_fmt(r['precision']):>11}{_fmt(r['recall']):>8}"
                         f"{k['fp']:>12}{k['fn']:>8}")
    elif s.kind == "boxes-video":
        lines.append(f"{'model':<16}{'boxes hit':>10}{'fire px in boxes':>18}{'frames detected':>17}"
                     f"  (hit: >= 5 % of the box called fire; {next(iter(rows.values()))['boxes']} boxes)")
        for name, r in rows.items():
            lines.append(f"{name:<16}{_fmt(r['box_hit_rate'], True):>10}{_fmt(r['inside_rate'], True):>18}"
                         f"{_fmt(r['frame_detection_rate'], True):>17}")
    else:
        lines.append(f"{'model':<16}{'IoU':>8}{'F1':>8}{'prec':>8}{'recall':>8}{'fire px':>9}{'frames w/ fire':>16}"
                     f"{'head acc':>10}{'head FA':>9}")
        for name, r in rows.items():
            lines.append(f"{name:<16}{_fmt(r['iou']):>8}{_fmt(r['f1']):>8}{_fmt(r['precision']):>8}"
                         f"{_fmt(r['recall']):>8}{_fmt(r['fire_px_rate'], True):>9}"
                         f"{r['frames_with_fire_px']:>10} of {r['images']:<3}"
                         f"{_fmt(r.get('head_accuracy')):>10}{r.get('head_false_alarms', '-'):>9}")
    return lines


def run_suite(sets: list[SuiteSet], settings, reference: bool, json_path: Path | None, command: str) -> str:
    registry = get_registry()
    models = [(settings.model.name, settings)]
    if reference and settings.model.name != REFERENCE:
        # The colour rule as it comes: the configured model's options, backend and precision are not its own.
        models.append((REFERENCE, apply_overrides(settings, {"model.name": REFERENCE, "model.backend": "auto",
                                                             "model.precision": "fp32", "model.options": {},
                                                             "model.backend_options": {}})))
    report = {"command": command, "model": settings.model.name, "threshold": settings.model.threshold,
              "reference": REFERENCE if reference else None, "sets": {}}
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="firespotter-suite-") as tmp:
        inputs = {s.name: prepare(s, Path(tmp)) for s in sets}  # every set checked before the first model runs
        bound = []
        for name, st in models:
            segmenter, backend = bind_segmenter(registry, st.model)
            post = st.post
            params = PostParams(st.model.threshold, post.min_region_px, post.alert_min_area_px, post.alert_min_peak,
                                post.max_regions)
            bound.append((name, segmenter, backend, params))
            if name == settings.model.name:
                report.update(model_id=segmenter.model_id, backend=backend, **segmenter.precision.as_dict())
        for s in sets:
            rows = {name: score_set(s, inputs[s.name], seg, params) for name, seg, _, params in bound}
            n = None if s.kind == "boxes-video" else len(inputs[s.name])
            report["sets"][s.name] = {"kind": s.kind, "folder": s.folder, "include": list(s.include),
                                      "split": s.split, **({"video": s.video, "boxes": s.boxes} if s.video else {}),
                                      "results": rows}
            lines.extend(table(s, n, rows) + [""])
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    head = (f"model {settings.model.name} ({report.get('model_id')}) on {report.get('backend')} "
            f"[{report.get('precision_exec')}, {report.get('weight_bits')}-bit, simulated={report.get('simulated')}], "
            f"threshold {settings.model.threshold}" + (f"; reference row: the colour rule" if reference else ""))
    return "\n".join([head, ""] + lines).rstrip()
