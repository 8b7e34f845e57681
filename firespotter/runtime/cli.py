"""The `firespotter` command. Every component is found through the plugin registry.

User errors (FirespotterError) print one line on stderr and exit 2; no traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from firespotter import __version__

from .assemble import build_pipeline, pipeline_options
from .config import load_settings
from .daemon import Supervisor
from .logs import setup_logging
from .metrics import HealthServer, PipelineMetrics
from .notify import Notifier, StartExtender
from .errors import FirespotterError
from .plugins import KINDS, get_registry
from .replay import finish, print_summary, run_pipeline

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


# --- run (replay is the `replay` command plugin: plugins/commands/replay.py) ------------------------------


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
        summary = run_pipeline(pipeline, label=settings.runtime.mode, on_stop=notifier.stopping,
                               on_hup=supervisor.request_reload, progress=not notifier.enabled)
    finally:
        extender.stop()
        supervisor.stop()
        if server is not None:
            server.stop()
        notifier.close()
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print_summary(summary, None)
    finish(summary)


# --- plugin commands and entry point --------------------------------------------------------------------


_plugin_commands_added = False


def _add_plugin_commands() -> None:
    global _plugin_commands_added
    if _plugin_commands_added:
        return
    _plugin_commands_added = True
    registry = get_registry()
    taken = {c.name for c in app.registered_commands if c.name} | {"plugins", "doctor", "run"}
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


# Options whose value may be left out (`replay ... --ray` = a local Ray): click needs the value spelled out, and
# typer cannot declare an optional value, so a bare one gets its default here.
OPTIONAL_VALUE = {"--ray": "local"}


def _fill_optional_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg in OPTIONAL_VALUE and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append(OPTIONAL_VALUE[arg])
    return out


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
        app(args=_fill_optional_values(list(sys.argv[1:] if argv is None else argv)), prog_name="firespotter")
    except FirespotterError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
