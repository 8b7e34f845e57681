"""`firespotter keys new NAME`: an Ed25519 key pair for message authentication (firespotter/net/auth.py,
docs/security.md). NAME is a drone id (its sink's `auth_key`) or a ground station's name (`listen --auth-key`)."""

from __future__ import annotations

from pathlib import Path

import typer

from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import CommandSpec, module_available

keys_app = typer.Typer(help="Message authentication keys.", no_args_is_help=True, add_completion=False)


@keys_app.command("new")
def new(
    name: str = typer.Argument(..., help="The drone id (or ground station name) the key belongs to."),
    out: Path = typer.Option(Path("."), "--out", help="Folder for NAME.key (private, mode 0600) and NAME.pub."),
    force: bool = typer.Option(False, "--force", help="Replace an existing key pair."),
) -> None:
    """Make NAME.key (keep it on NAME only) and NAME.pub (give it to whoever must check NAME's messages)."""
    from firespotter.net import auth, wire

    try:
        priv, pub = auth.new_key_pair(name, out, force=force)
    except wire.WireError as exc:
        raise FirespotterError(f"keys new: {exc}") from None
    except OSError as exc:
        raise FirespotterError(f"keys new: cannot write into {out}: {exc.strerror or exc}") from None
    typer.echo(f"private key {priv} (stays on {name}; mode 0600)\npublic key  {pub} (copy it to the "
               f"ground stations or drones that must check {name}'s messages)")


@hookimpl
def register_commands():
    return [CommandSpec("keys", keys_app, help="Message authentication: make Ed25519 key pairs (keys new NAME).",
                        available=module_available("cryptography", extra="auth"))]
