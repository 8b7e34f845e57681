"""Wire format v1's contract and its check: the JSON Schema (schemas/wire-v1.schema.json, documented in
docs/wire-format.md) and `validate()`, which compiles it once per message kind with fastjsonschema (a
maintained validator that generates Python code: about a millisecond for a 512x512 fire message with
hundreds of polygon points) and turns its first error into a line that names the field.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import fastjsonschema

WIRE_VERSION = 1
KINDS = ("fire", "state", "ack")
SCHEMA_PATH = Path(__file__).with_name("schemas") / "wire-v1.schema.json"


class WireError(ValueError):
    """A message that is not valid wire format v1: says where and what."""


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _validators() -> dict[str, Callable[[Any], Any]]:
    """One compiled validator per kind: the message's `kind` picks the definition, so an error is about that
    kind rather than 'matches none of fire/state/ack'."""
    root = load_schema()
    return {kind: fastjsonschema.compile({**root, "$ref": f"#/$defs/{kind}"}) for kind in KINDS}


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _explain(exc: fastjsonschema.JsonSchemaValueException) -> str:
    """fastjsonschema's error -> 'message.path: problem', in the words the wire tests and listeners log."""
    path = "message" + exc.name[len("data"):] if exc.name.startswith("data") else exc.name
    rule, value, definition = exc.rule, exc.value, exc.definition or {}
    if rule == "required" and isinstance(value, dict):
        missing = [k for k in definition.get("required", ()) if k not in value]
        return f"{path}: missing key {missing[0]!r}" if missing else f"{path}: missing keys"
    if rule == "additionalProperties" and isinstance(value, dict):
        extra = sorted(set(value) - set(definition.get("properties", {})))
        return f"{path}: unexpected key {extra[0]!r}" if extra else f"{path}: unexpected keys"
    if rule == "type":
        types = definition.get("type")
        types = types if isinstance(types, list) else [types]
        return f"{path}: expected {' or '.join(map(str, types))}, got {_describe(value)}"
    if rule == "const":
        return f"{path}: must be {json.dumps(definition.get('const'))}, got {_describe(value)}"
    if rule == "enum":
        options = ", ".join(json.dumps(e) for e in definition.get("enum", ()))
        return f"{path}: must be one of {options}, got {_describe(value)}"
    detail = exc.message[len(exc.name):].strip() if exc.message.startswith(exc.name) else exc.message
    return f"{path}: {detail}"


def validation_errors(msg: Any) -> list[str]:
    """The problem of `msg` against the wire v1 schema ([] when valid): the first one found, naming the field."""
    if not isinstance(msg, dict):
        return [f"message: expected a JSON object, got {_describe(msg)}"]
    kind = msg.get("kind")
    if kind not in KINDS:
        return [f"message.kind: must be one of {', '.join(KINDS)}, got {_describe(kind)}"]
    try:
        _validators()[kind](msg)
    except fastjsonschema.JsonSchemaValueException as exc:
        return [_explain(exc)]
    return []


def validate(msg: Any) -> dict[str, Any]:
    """Return `msg` when it is valid wire v1, else raise WireError naming the problem."""
    errors = validation_errors(msg)
    if errors:
        raise WireError("; ".join(errors))
    return msg
