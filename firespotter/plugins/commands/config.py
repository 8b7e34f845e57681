"""`firespotter config`: the JSON Schema of a config file, a check of a file, and the generated reference page
(docs/configuration.md). Thin: the work is in firespotter.runtime.confdoc."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from firespotter.runtime.confdoc import check_settings, config_markdown, config_schema
from firespotter.runtime.config import load_settings
from firespotter.runtime.errors import ConfigError
from firespotter.runtime.plugins import get_registry, hookimpl
from firespotter.runtime.specs import CommandSpec

app = typer.Typer(help="Config files: JSON Schema, validation, reference page.", no_args_is_help=True,
                  rich_markup_mode=None)


@app.command("schema")
def schema(builtin: bool = typer.Option(False, "--builtin", help="Only the built-in plugins' tables.")) -> None:
    """Print the JSON Schema of a config file (every table, and each installed sink and processor type)."""
    typer.echo(json.dumps(config_schema(get_registry(), builtin_only=builtin), indent=2))


@app.command("check")
def check(
    files: List[Path] = typer.Argument(..., help="TOML config files to check."),
    set_: List[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a key, as `run --set` does."),
) -> None:
    """Validate config files without running them: tables, keys, values, plugin names and each plugin's options.
    Exit status 2 when any file is invalid; plugins missing on this machine only warn."""
    failed = []
    registry = get_registry()
    for path in files:
        try:
            settings = load_settings(path, overrides=tuple(set_))
        except ConfigError as exc:
            typer.echo(f"error: {exc}", err=True)
            failed.append(path)
            continue
        errors, warnings = check_settings(settings, registry, str(path))
        for w in warnings:
            typer.echo(f"warning: {w}", err=True)
        for e in errors:
            typer.echo(f"error: {e}", err=True)
        if errors:
            failed.append(path)
            continue
        sinks = ", ".join(f"{s.name or s.type} ({s.type})" for s in settings.sinks) or "none"
        typer.echo(f"{path}: ok (source {settings.source.uri or '-'}, model {settings.model.name}, sinks: {sinks})")
    if failed:
        raise ConfigError(f"{len(failed)} of {len(files)} config file(s) invalid: {', '.join(map(str, failed))}")


@app.command("docs")
def docs(out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write here (docs/configuration.md) "
                                            "instead of printing.")) -> None:
    """The configuration reference (docs/configuration.md), generated from the config models."""
    text = config_markdown(get_registry())
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}", err=True)


@hookimpl
def register_commands():
    return [CommandSpec("config", app, help="Config files: `schema`, `check FILE`, `docs` (the reference page).")]
