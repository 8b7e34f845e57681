"""The `firespotter` command. Every component is found through the plugin registry.

User errors (FirespotterError) print one line on stderr and exit 2; no traceback.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import typer

from firespotter import __version__

from .assemble import build_pipeline, pipeline_options
from .config import ModelSettings, Settings, SinkSettings, apply_overrides, load_settings
from .daemon import Supervisor
from .logs import setup_logging
from .metrics import HealthServer, PipelineMetrics
from .notify import Notifier, StartExtender
from .errors import FirespotterError, RunFailure
from .plugins import KINDS, get_registry
from .progress import Progress
from .report import TopFireFrames, write_report

DEFAULT_MODEL = ModelSettings.model_fields["name"].default  # help texts read it: they cannot drift

app = typer.Typer(
    name="firespotter",
    help="Onboard wildfire detection: segment fire in drone video, adapt, geo-reference, publish.",
    no_args_is_help=True,
    add_completion=True,
    # Plain help: rich markup would eat "[model]" and "[post]" in help texts and squeeze long help into a narrow
    # column beside the metavars.
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"firespotter {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug details."),
) -> None:
    setup_logging(verbose)


# --- plugins ------------------------------------------------------------------------------------------


def plugin_report() -> list[dict[str, Any]]:
    registry = get_registry()
    registry.specs("sources")  # collect, which fills each plugin's `provides`
    rows = []
    for info in sorted(registry.plugins.values(), key=lambda i: (not i.builtin, i.name)):
        components = []
        for kind, names in sorted(info.provides.items()):
            for name in names:
                spec = next(s for s, plugin in registry.alternatives(kind, name) if plugin == info.name)
                avail = spec.available()
                components.append({"kind": kind[:-1], "name": name, "available": avail.ok,
                                   "reason": avail.reason or None, "description": spec.description})
        rows.append({
            "name": info.name, "module": info.module, "distribution": info.dist, "version": info.version,
            "builtin": info.builtin, "loaded": info.error is None, "error": info.error, "provides": components,
            "available": info.error is None and all(c["available"] for c in components),
        })
    return rows


@app.command()
def plugins(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List plugins: version, what each provides, and whether it is available here (and why not)."""
    rows = plugin_report()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="firespotter plugins")
    for col in ("plugin", "version", "provides", "available here"):
        table.add_column(col)
    for row in rows:
        origin = "" if row["builtin"] else f" ({row['distribution']})"
        if row["error"]:
            table.add_row(row["name"] + origin, row["version"], "-", f"[red]failed to load: {escape(row['error'])}[/red]")
            continue
        for i, c in enumerate(row["provides"] or [{"kind": "-", "name": "", "available": True, "reason": None}]):
            status = "[green]yes[/green]" if c["available"] else f"[red]no: {escape(c['reason'])}[/red]"
            first = i == 0
            table.add_row(row["name"] + origin if first else "", row["version"] if first else "",
                          f"{c['kind']}: {c['name']}", status)
    Console().print(table)


# --- doctor -------------------------------------------------------------------------------------------


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Check what this machine can run: backends, GStreamer elements, brokers, GPU."""
    from .doctor import run_checks

    checks = run_checks(get_registry())
    if as_json:
        typer.echo(json.dumps(checks, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="firespotter doctor")
    for col in ("check", "status", "detail"):
        table.add_column(col)
    for c in checks:
        mark = {"ok": "[green]ok[/green]", "missing": "[yellow]missing[/yellow]", "error": "[red]error[/red]"}[c["status"]]
        table.add_row(c["name"], mark, escape(c["detail"]))
    Console().print(table)


# --- replay / run -------------------------------------------------------------------------------------


def _with_default_sink(settings: Settings, out: Path) -> Settings:
    """Replay always leaves masks and events in OUT, whatever sinks the config adds."""
    if any(s.type == "files" and Path(str(s.options().get("dir", ""))) == out for s in settings.sinks):
        return settings
    names = {s.name or s.type for s in settings.sinks}
    name = "files" if "files" not in names else "replay-files"
    sinks = list(settings.sinks) + [SinkSettings(type="files", name=name, dir=str(out))]
    return settings.model_copy(update={"sinks": sinks})


def _with_overlay_sink(settings: Settings, registry, path: Path) -> Settings:
    """Replay's overlay video, through the `video` sink plugin when it is installed and available."""
    spec = registry.specs("sinks").get("video")
    if spec is None or not spec.available():
        logging.getLogger("firespotter.cli").warning("no available `video` sink plugin; replay writes no overlay.mp4")
        return settings
    names = {s.name or s.type for s in settings.sinks}
    name = "overlay" if "overlay" not in names else "replay-overlay"
    sinks = list(settings.sinks) + [SinkSettings(type="video", name=name, path=str(path))]
    return settings.model_copy(update={"sinks": sinks})


def _run_pipeline(pipeline, *, label: str, on_stop=None, on_hup=None, progress: bool = True) -> dict[str, Any]:
    """Run with SIGTERM/SIGINT wired to a graceful stop (and SIGHUP to `on_hup`) and a progress display."""
    progress = Progress(label, total=pipeline.source.expected_frames, limit=pipeline.options.limit, enabled=progress)
    pipeline.add_observer(lambda result: progress.update(pipeline.frames_out))
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


def _print_summary(summary: dict[str, Any], out: Path | None) -> None:
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
    typer.echo("\n".join(lines))


def _finish(summary: dict[str, Any]) -> None:
    if summary.get("fatal_error"):
        raise RunFailure(f"stopped: {summary['fatal_error']}")
    if summary.get("source_error"):
        # Outputs are written already; the frames before the failure were processed.
        raise RunFailure(f"source failed after {summary['frames']} processed frames: {summary['source_error']}")


@app.command()
def replay(
    source: str = typer.Argument(..., help="Flight to replay: a video, an image folder, or a URI (test://, dir://...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for masks, events.jsonl and summary.json."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=f"Model name (default: the config's [model] name, else {DEFAULT_MODEL})."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="Backend name, or auto."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp32, fp16, int8, ..."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="Stop after N frames."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Fire probability threshold."),
    overlay: bool = typer.Option(True, "--overlay/--no-overlay", help="Write OUT/overlay.mp4."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write OUT/report.html."),
    adapt: Optional[str] = typer.Option(None, "--adapt", help="Test-time adaptation: bnstats, tent, ostta, "
                                        "or default (bnstats)."),
) -> None:
    """Process every frame of a recorded flight, in order, and write the results to OUT."""
    settings = load_settings(config)
    settings = apply_overrides(settings, {
        "runtime.mode": "replay", "source.uri": source, "model.name": model, "model.backend": backend,
        "model.precision": precision, "model.threshold": threshold, "adapt.name": adapt,
    })
    out = out.expanduser()
    settings = _with_default_sink(settings, out)
    registry = get_registry()
    if overlay:
        settings = _with_overlay_sink(settings, registry, out / "overlay.mp4")
    top = TopFireFrames() if report else None
    pipeline = build_pipeline(settings, registry, limit=limit, where=str(config or "command line"),
                              extra_sinks=[("report", top)] if top else [])
    summary = _run_pipeline(pipeline, label="replay")
    summary["out"] = str(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if report:
        write_report(out / "report.html", summary, pipeline, top)
    _print_summary(summary, out)
    _finish(summary)


@app.command()
def run(
    config: Path = typer.Option(..., "--config", "-c", help="TOML config file (see deploy/configs/)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="Stop after N frames."),
    summary_json: Optional[Path] = typer.Option(None, "--summary-json", help="Write the final summary here."),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE",
                                   help="Override one key of the file for this run (repeat): source.uri=test://, "
                                        "sinks[0].port=1884."),
) -> None:
    """Run the configured pipeline until the source ends or SIGTERM arrives (the onboard daemon).

    Under systemd (Type=notify): READY=1 after the first processed frame, WATCHDOG=1 while frames make progress,
    STATUS= with fps, source state and fires, STOPPING=1 on SIGTERM; SIGHUP reloads what can change live."""
    settings = load_settings(config, overrides=tuple(set_))  # an invalid config stops here, before READY=1
    notifier = Notifier()
    phase = {"why": "loading the model (a first TensorRT engine build takes minutes)"}
    extender = StartExtender(notifier, settings.daemon.start_timeout_s, lambda: phase["why"]).start()
    try:
        pipeline = build_pipeline(settings, get_registry(), limit=limit, where=str(config))
    except BaseException:
        extender.stop()
        raise
    metrics = server = supervisor = None
    try:
        if settings.metrics.enabled:
            metrics = PipelineMetrics(pipeline.describe())
        supervisor = Supervisor(pipeline, settings, notifier, metrics, config_path=config,
                                apply_post=lambda new: setattr(pipeline.options, "post", pipeline_options(new).post),
                                on_ready=extender.stop)
        phase["why"] = "waiting for the first frame"
        extender.status = lambda: supervisor.readiness()[1]
        if metrics is not None:
            metrics.bind_readiness(supervisor.is_ready)
            metrics.bind_outboxes(pipeline.sinks)
            server = HealthServer(settings.metrics.address, settings.metrics.port, metrics, supervisor.readiness).start()
    except Exception:
        extender.stop()
        pipeline.source.close()
        for worker in pipeline.sinks:
            worker.sink.close()
        raise
    supervisor.start()
    try:
        summary = _run_pipeline(pipeline, label=settings.runtime.mode, on_stop=notifier.stopping,
                                on_hup=supervisor.request_reload, progress=not notifier.enabled)
    finally:
        extender.stop()
        supervisor.stop()
        if server is not None:
            server.stop()
        notifier.close()
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    _print_summary(summary, None)
    _finish(summary)


# --- plugin commands and entry point --------------------------------------------------------------------


_plugin_commands_added = False


def _add_plugin_commands() -> None:
    global _plugin_commands_added
    if _plugin_commands_added:
        return
    _plugin_commands_added = True
    registry = get_registry()
    taken = {c.name for c in app.registered_commands if c.name} | {"plugins", "doctor", "replay", "run"}
    for name, spec in registry.specs("commands").items():
        if name in taken:
            logging.getLogger("firespotter.cli").warning("plugin command %r clashes with a built-in; ignored", name)
            continue
        avail = spec.available()
        if not avail:
            _add_unavailable(name, spec.help, avail.reason)
            continue
        if isinstance(spec.callback, typer.Typer):  # a command group (e.g. `pdk new`)
            app.add_typer(spec.callback, name=name, help=spec.help)
        else:
            app.command(name=name, help=spec.help)(spec.callback)


def _add_unavailable(name: str, help_text: str, reason: str) -> None:
    """A command whose plugin cannot run here still exists: it says what is missing and how to install it,
    instead of the CLI answering "No such command"."""

    def unavailable(ctx: typer.Context) -> None:
        raise FirespotterError(f"`firespotter {name}` is not available here: {reason}")

    app.command(name=name, help=f"{help_text} [not available here: {reason}]",
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(unavailable)


def main(argv: list[str] | None = None) -> None:
    try:
        _add_plugin_commands()
        app(args=argv, prog_name="firespotter")
    except FirespotterError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
