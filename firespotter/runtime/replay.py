"""One flight replayed into one folder: what `firespotter replay SOURCE --out DIR` does, as a function, so the
archive runner (firespotter/archive/) replays each flight of an archive exactly as a single replay does."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any, Callable

from .assemble import build_pipeline
from .config import Settings, SinkSettings
from .errors import RunFailure
from .progress import Progress
from .report import TopFireFrames, write_report


def with_default_sink(settings: Settings, out: Path) -> Settings:
    """Replay always leaves masks and events in OUT, whatever sinks the config adds."""
    if any(s.type == "files" and Path(str(s.options().get("dir", ""))) == out for s in settings.sinks):
        return settings
    names = {s.name or s.type for s in settings.sinks}
    name = "files" if "files" not in names else "replay-files"
    sinks = list(settings.sinks) + [SinkSettings(type="files", name=name, dir=str(out))]
    return settings.model_copy(update={"sinks": sinks})


def with_overlay_sink(settings: Settings, registry, path: Path) -> Settings:
    """Replay's overlay video, through the `video` sink plugin when it is installed and available."""
    spec = registry.specs("sinks").get("video")
    if spec is None or not spec.available():
        logging.getLogger("firespotter.cli").warning("no available `video` sink plugin; replay writes no overlay.mp4")
        return settings
    names = {s.name or s.type for s in settings.sinks}
    name = "overlay" if "overlay" not in names else "replay-overlay"
    sinks = list(settings.sinks) + [SinkSettings(type="video", name=name, path=str(path))]
    return settings.model_copy(update={"sinks": sinks})


def run_pipeline(pipeline, *, label: str, on_stop=None, on_hup=None, progress: bool = True,
                 on_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run with SIGTERM/SIGINT wired to a graceful stop (and SIGHUP to `on_hup`) and a progress display.
    `on_progress(frames)` is called beside the display (the archive runner counts frames across workers)."""
    progress = Progress(label, total=pipeline.source.expected_frames, limit=pipeline.options.limit, enabled=progress)
    pipeline.add_observer(lambda result: progress.update(pipeline.frames_out))  # the pipeline's observer channel
    if on_progress is not None:
        pipeline.add_observer(lambda result: on_progress(pipeline.frames_out))
    previous = {}
    if threading.current_thread() is threading.main_thread():
        def _stop(signum, _frame):
            logging.getLogger("firespotter").warning("signal %d: draining and flushing sinks", signum)
            if on_stop is not None:
                on_stop()
            pipeline.request_stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _stop)
        if on_hup is not None:
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: on_hup())
    try:
        with progress:
            summary = pipeline.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    skipped = list(pipeline.source.skipped)
    summary["skipped"] = len(skipped)
    summary["skipped_files"] = skipped[:100]
    return summary


def replay_one(settings: Settings, out: Path, registry, *, limit: int | None = None, overlay: bool = True,
               report: bool = True, where: str = "command line", progress: bool = True,
               on_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Replay settings.source.uri into OUT: summary.json, events.jsonl, masks/, overlay.mp4, report.html.
    Returns the summary; raises FirespotterError (bad input) before any frame when the pipeline cannot be built."""
    settings = with_default_sink(settings, out)
    if overlay:
        settings = with_overlay_sink(settings, registry, out / "overlay.mp4")
    top = TopFireFrames() if report else None
    pipeline = build_pipeline(settings, registry, limit=limit, where=where,
                              extra_sinks=[("report", top)] if top else [])
    summary = run_pipeline(pipeline, label="replay", progress=progress, on_progress=on_progress)
    summary["out"] = str(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if report:
        write_report(out / "report.html", summary, pipeline, top)
    return summary


def print_summary(summary: dict[str, Any], out: Path | None) -> None:
    lines = [
        f"frames      {summary['frames']}  (read {summary['frames_in']}, dropped {summary['dropped']}, "
        f"skipped {summary.get('skipped', 0)}, inference errors {summary['infer_errors']})",
        f"fire frames {summary['fire_frames']}  (alerts {summary['alert_frames']})",
        f"fps         {summary['fps']:.1f}  (wall {summary['wall_s']:.2f} s; infer p50 "
        f"{summary['stages_ms']['infer'].get('p50', 0):.2f} ms)",
        f"model       {summary['model']} on {summary['backend']}  "
        f"[{summary['precision_exec']}, {summary['weight_bits']}-bit weights, simulated={summary['simulated']}]",
    ]
    for name, s in summary["sinks"].items():
        if s["errors"] or s["dropped"]:
            lines.append(f"sink {name}: {s['errors']} errors, {s['dropped']} dropped; last: {s['last_error']}")
    if out is not None:
        written = [p for p in ("summary.json", "events.jsonl", "masks/", "overlay.mp4", "report.html") if (out / p).exists()
                   or p == "summary.json"]
        lines.append(f"outputs     {out}/  ({', '.join(written)})")
    print("\n".join(lines), flush=True)


def failure(summary: dict[str, Any]) -> str | None:
    """What stopped this run, in one line, or None when it ran to the end of its input."""
    if summary.get("fatal_error"):
        return f"stopped: {summary['fatal_error']}"
    if summary.get("source_error"):
        # Outputs are written already; the frames before the failure were processed.
        return f"source failed after {summary['frames']} processed frames: {summary['source_error']}"
    return None


def finish(summary: dict[str, Any]) -> None:
    """A run that started and could not go on exits 1 (RunFailure), not 2 (input it cannot accept)."""
    message = failure(summary)
    if message is not None:
        raise RunFailure(message)
