"""`firespotter pdk new NAME --kind KIND`: scaffold a plugin package (see firespotter.pdk)."""

from __future__ import annotations

from pathlib import Path

import typer

from firespotter.pdk.scaffold import KINDS, scaffold
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import CommandSpec

pdk_app = typer.Typer(help="Plugin development kit.", no_args_is_help=True, add_completion=False)


@pdk_app.command("new")
def new(
    name: str = typer.Argument(..., help="Plugin name: lower-case letters, digits, underscores."),
    kind: str = typer.Option(..., "--kind", help=f"One of: {', '.join(KINDS)}."),
    out: Path = typer.Option(Path("."), "--out", help="Where to create firespotter-NAME/."),
) -> None:
    """Create an installable plugin package with a working example, conformance tests and a README."""
    root = scaffold(name, kind, out)
    typer.echo(f"created {root}/ ({kind} plugin '{name}')\n  pip install -e {root}\n  cd {root} && pytest")


@hookimpl
def register_commands():
    return [CommandSpec("pdk", pdk_app, help="Plugin development kit: scaffold plugins.")]
