"""Plugin options: every spec's `options_model` checks its table here, in one place, when a pipeline is assembled.

A config table that belongs to a plugin (`[source] options`, `[model] options`, `[model] backend_options`,
`[adapt] options`, a `[[processors]]` or `[[sinks]]` table, `[telemetry]`'s own keys) is validated by that
plugin's pydantic model, and any problem is one ConfigError line per key that names the table and the plugin:
`config.toml: model.backend_options (onnxruntime): threads: Input should be greater than or equal to 1 (got 0)`.
A spec without an options model takes no options: a non-empty table is an error, its factory gets `{}`.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from pydantic import ValidationError

from .config import describe_validation_error, reject_non_finite
from .errors import ConfigError


def option_keys(spec: Any) -> frozenset[str]:
    """The option names `spec`'s options model declares (none without one)."""
    model = spec.options_model
    return frozenset(model.model_fields) if model is not None else frozenset()


def validated_options(spec: Any, options: Mapping[str, Any] | None, *, kind: str, table: str,
                      where: str = "config") -> Any:
    """`options` checked by `spec.options_model` -> an instance of it (`{}` for a spec without one).
    kind: "source", "model", "backend", ... (for "this KIND takes no options"); table: where the options were
    written, e.g. "sinks[1] (mqtt)" or "model.options (fireseg-lite)"."""
    options = dict(options or {})
    model = spec.options_model
    if model is None:
        if options:
            raise ConfigError(f"{where}: {table}: this {kind} takes no options, got {', '.join(options)}")
        return options
    try:
        validated = model.model_validate(options)
    except ValidationError as exc:
        msg = describe_validation_error(exc, where, root=model)
        raise ConfigError(msg.replace(f"{where}: ", f"{where}: {table}: ")) from None
    reject_non_finite(validated, f"{where}: {table}")
    return validated


def toml_value(value: Any) -> str:
    """A value as it would be written in a TOML file (for messages that say what to write where)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))
