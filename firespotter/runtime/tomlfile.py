"""Reading a small TOML file (a recipe, an evaluation suite): bounded before it is parsed, one clear error."""

from __future__ import annotations

import tomllib
from pathlib import Path

from .errors import FirespotterError


def load_toml(path: Path, what: str, error: type[FirespotterError], max_bytes: int = 1 << 20) -> dict:
    """The parsed file, or `error` naming `what` and the problem (missing, too large, not TOML)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    if path.stat().st_size > max_bytes:
        raise error(f"{what} {path} is over {max_bytes >> 10} KiB; not a {what}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}") from None
