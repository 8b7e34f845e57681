"""Per-drone overrides from the environment, so one config file serves a fleet (docs/deploy.md).

`FIRESPOTTER_<TABLE>__<KEY>=value` sets `[table] key` (names are case-insensitive; `__` separates the parts,
deeper parts reach nested tables: `FIRESPOTTER_MODEL__OPTIONS__GATE=false`). For the arrays of tables the
second part picks the table by index or by name (a sink's `name`, else its `type`):
`FIRESPOTTER_SINKS__MQTT__PASSWORD_ENV=...`, `FIRESPOTTER_SINKS__0__HOST=...`.

Values are strings, converted by the settings' own types (`"500"` for a number, `"true"` for a flag); a value
that starts with `[` or `{` is read as a TOML array or inline table (`["tcp/10.0.0.1:7447"]`). Only names
with `__` are overrides: `FIRESPOTTER_PLUGINS` and a password variable named by `password_env` are not.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import Any, Mapping

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PREFIX = "FIRESPOTTER_"
ARRAYS = ("sinks", "processors")


def overrides(environ: Mapping[str, str] | None = None) -> list[tuple[str, list[str], str]]:
    """(variable, lowercased path parts, raw value) for every override variable, sorted by name."""
    env = os.environ if environ is None else environ
    out = []
    for name in sorted(env):
        if not name.upper().startswith(PREFIX) or "__" not in name[len(PREFIX):]:
            continue
        parts = [p.lower() for p in name[len(PREFIX):].split("__")]
        if any(not p for p in parts) or len(parts) < 2:
            raise ConfigError(f"environment variable {name}: expected FIRESPOTTER_<TABLE>__<KEY>",
                              "e.g. FIRESPOTTER_RUNTIME__DRONE_ID=uav-07")
        out.append((name, parts, env[name]))
    return out


def _value(name: str, raw: str) -> Any:
    text = raw.strip()
    if text[:1] in ("[", "{"):
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"environment variable {name}: {raw!r} is not a TOML array or table ({exc})") from None
    return raw


def _pick(name: str, table: str, items: list, which: str) -> dict:
    if which.isdigit():
        i = int(which)
        if i >= len(items):
            raise ConfigError(f"environment variable {name}: there is no [[{table}]] number {i} "
                              f"(the config has {len(items)}, counted from 0)")
        return items[i]
    for item in items:
        if str(item.get("name") or item.get("type", "")).lower() == which:
            return item
    known = ", ".join(str(i.get("name") or i.get("type")) for i in items) or "none"
    raise ConfigError(f"environment variable {name}: no [[{table}]] named {which!r} (there are: {known})")


def apply(data: dict[str, Any], tables: list[str], environ: Mapping[str, str] | None = None
          ) -> tuple[dict[str, Any], list[str]]:
    """Apply the overrides to a config's raw data (before validation). `tables`: the top-level tables the
    settings know. Returns (data, names of the variables applied)."""
    applied = []
    for name, parts, raw in overrides(environ):
        table, rest = parts[0], parts[1:]
        if table not in tables:
            close = difflib.get_close_matches(table, tables, n=1)
            hint = f"did you mean {close[0].upper()}?" if close else f"tables: {', '.join(tables)}"
            raise ConfigError(f"environment variable {name}: unknown table {table!r}", hint)
        if table in ARRAYS:
            if len(rest) < 2:
                raise ConfigError(f"environment variable {name}: expected FIRESPOTTER_{table.upper()}__<NAME or "
                                  f"INDEX>__<KEY>")
            node = _pick(name, table, data.setdefault(table, []), rest[0])
            rest = rest[1:]
        else:
            node = data.setdefault(table, {})
        for part in rest[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment variable {name}: {part!r} is a value, not a table")
            node = child
        node[rest[-1]] = _value(name, raw)
        applied.append(name)
    return data, applied
