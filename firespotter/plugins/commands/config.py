"""`firespotter config`: the JSON Schema of a config file, a check of a file, and the generated reference page
(docs/configuration.md). Thin: the work is in firespotter.runtime.confdoc."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

import tomllib

from firespotter.ground.settings import GroundConfig, is_ground_config, parse_ground_config
from firespotter.runtime.confdoc import check_settings, config_markdown, config_schema
from firespotter.runtime.config import load_settings, set_key
from firespotter.runtime.errors import ConfigError

GROUND = [("Ground station (`firespotter listen -c FILE`)",
           "A file with a `[listen]` table is a ground station's (`deploy/configs/ground-laptop.toml`). Its keys are "
           "the options of `firespotter listen` of the same names; an option given on the command line wins. The "
           "access token is never in the file: it comes from `FIRESPOTTER_LISTEN_TOKEN`.", GroundConfig)]
from firespotter.runtime.plugins import get_registry, hookimpl
from firespotter.runtime.specs import CommandSpec

app = typer.Typer(help="Config files: JSON Schema, validation, reference page.", no_args_is_help=True,
                  rich_markup_mode=None)


@app.command("schema")
def schema(builtin: bool = typer.Option(False, "--builtin", help="Only the built-in plugins' tables."),
           ground: bool = typer.Option(False, "--ground", help="The ground station's config instead.")) -> None:
    """Print the JSON Schema of a config file (every table, and each installed sink and processor type)."""
    if ground:
        typer.echo(json.dumps(GroundConfig.model_json_schema(), indent=2))
        return
    typer.echo(json.dumps(config_schema(get_registry(), builtin_only=builtin), indent=2))


def _check_ground(path: Path, overrides: list[str]) -> str:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    for item in overrides:
        set_key(data, item)
    cfg = parse_ground_config(data, str(path))
    return f"{path}: ok (ground station {cfg.listen.station!r}, {cfg.listen.transport})"


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
            if path.is_file() and is_ground_config(_peek(path)):
                typer.echo(_check_ground(path, set_))
                continue
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


def _peek(path: Path) -> dict:
    """The file's tables, or {} when it does not parse (load_settings then says why, with the file named)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError):
        return {}


@app.command("docs")
def docs(out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write here (docs/configuration.md) "
                                            "instead of printing.")) -> None:
    """The configuration reference (docs/configuration.md), generated from the config models."""
    text = config_markdown(get_registry(), GROUND)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}", err=True)


@hookimpl
def register_commands():
    return [CommandSpec("config", app, help="Config files: `schema`, `check FILE`, `docs` (the reference page).")]
