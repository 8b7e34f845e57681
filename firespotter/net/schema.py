"""Wire format v1's contract and its check: the JSON Schema (schemas/wire-v1.schema.json, documented in
docs/wire-format.md) and `validate()`, a small validator for the JSON Schema keywords the schema uses (no
third-party dependency on the drone); tests cross-check it with `jsonschema` where that is installed.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

WIRE_VERSION = 1
KINDS = ("fire", "state", "ack")
SCHEMA_PATH = Path(__file__).with_name("schemas") / "wire-v1.schema.json"


class WireError(ValueError):
    """A message that is not valid wire format v1: says where and what."""


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _resolve(root: dict, ref: str) -> dict:
    if not ref.startswith("#/"):
        raise WireError(f"schema: unsupported $ref {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _check(value: Any, schema: dict, root: dict, path: str, errors: list[str]) -> None:
    """The subset of JSON Schema 2020-12 the wire schema uses. Appends 'path: problem' to errors."""
    if "$ref" in schema:
        _check(value, _resolve(root, schema["$ref"]), root, path, errors)
    for sub in schema.get("allOf", ()):
        _check(value, sub, root, path, errors)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            matches = 0
            first: list[str] = []
            for sub in schema[key]:
                errs: list[str] = []
                _check(value, sub, root, path, errs)
                if not errs:
                    matches += 1
                elif not first or len(errs) < len(first):
                    first = errs
            if matches == 0:
                errors.extend(first or [f"{path}: matches none of the alternatives"])
            elif key == "oneOf" and matches > 1:
                errors.append(f"{path}: matches {matches} alternatives of oneOf, expected exactly one")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            errors.append(f"{path}: expected {' or '.join(types)}, got {_describe(value)}")
            return
    if "const" in schema and not _same(value, schema["const"]):
        errors.append(f"{path}: must be {json.dumps(schema['const'])}, got {_describe(value)}")
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        errors.append(f"{path}: must be one of {', '.join(json.dumps(e) for e in schema['enum'])}, got {_describe(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} is above the maximum {schema['maximum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {_describe(value)} does not match {schema['pattern']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: {len(value)} items, at least {schema['minItems']} expected")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: {len(value)} items, at most {schema['maxItems']} expected")
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], root, f"{path}[{i}]", errors)
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                errors.append(f"{path}: missing key {key!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                _check(item, props[key], root, f"{path}.{key}", errors)
            elif extra is False:
                errors.append(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                _check(item, extra, root, f"{path}.{key}", errors)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _compile(schema: dict, root: dict, refs: dict[str, Any]):
    """The same checks as _check as one boolean predicate, built once: the fast path (a 512x512 fire
    message with hundreds of polygon points validates in about a millisecond). _check explains failures."""
    if "$ref" in schema and len(schema) == 1:
        ref = schema["$ref"]
        if ref not in refs:
            refs[ref] = None  # recursion guard (the wire schema is not recursive)
            refs[ref] = _compile(_resolve(root, ref), root, refs)
        return refs[ref]
    if set(schema) <= {"type", "minItems", "maxItems", "items"} and schema.get("type") == "array" \
            and schema.get("items") == {"type": "number"}:  # a point: the hot spot, one closure
        lo, hi = schema.get("minItems", 0), schema.get("maxItems", 1 << 62)
        isfinite = math.isfinite

        def point(v, lo=lo, hi=hi):
            if type(v) is not list or not lo <= len(v) <= hi:
                return False
            for x in v:
                t = type(x)
                if t is int:
                    continue
                if t is not float or not isfinite(x):
                    return False
            return True

        return point
    preds = []
    if "$ref" in schema:
        preds.append(_compile({"$ref": schema["$ref"]}, root, refs))
    for sub in schema.get("allOf", ()):
        preds.append(_compile(sub, root, refs))
    for key in ("oneOf", "anyOf"):
        if key in schema:
            alts = [_compile(s, root, refs) for s in schema[key]]
            if key == "oneOf":
                preds.append(lambda v, alts=alts: sum(1 for a in alts if a(v)) == 1)
            else:
                preds.append(lambda v, alts=alts: any(a(v) for a in alts))
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        tests = [_TYPES[t] for t in types]
        if len(tests) == 1:
            preds.append(tests[0])
        else:
            preds.append(lambda v, tests=tests: any(t(v) for t in tests))
    if "const" in schema:
        c = schema["const"]
        preds.append(lambda v, c=c: _same(v, c))
    if "enum" in schema:
        options = schema["enum"]
        preds.append(lambda v, options=options: any(_same(v, e) for e in options))
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if "minimum" in schema:
        lo = schema["minimum"]
        preds.append(lambda v, lo=lo: not num(v) or v >= lo)
    if "maximum" in schema:
        hi = schema["maximum"]
        preds.append(lambda v, hi=hi: not num(v) or v <= hi)
    if "pattern" in schema:
        rx = re.compile(schema["pattern"])
        preds.append(lambda v, rx=rx: not isinstance(v, str) or rx.search(v) is not None)
    if "maxLength" in schema:
        n = schema["maxLength"]
        preds.append(lambda v, n=n: not isinstance(v, str) or len(v) <= n)
    if "minItems" in schema or "maxItems" in schema:
        lo, hi = schema.get("minItems", 0), schema.get("maxItems", 1 << 62)
        preds.append(lambda v, lo=lo, hi=hi: not isinstance(v, list) or lo <= len(v) <= hi)
    if "items" in schema:
        item = schema["items"]
        if item == {"type": "number"}:  # polygon points: the hot spot
            ok_num = _TYPES["number"]
            preds.append(lambda v, ok=ok_num: not isinstance(v, list) or all(ok(x) for x in v))
        else:
            ok_item = _compile(item, root, refs)
            preds.append(lambda v, ok=ok_item: not isinstance(v, list) or all(ok(x) for x in v))
    if "required" in schema or "properties" in schema or "additionalProperties" in schema:
        required = tuple(schema.get("required", ()))
        props = {k: _compile(s, root, refs) for k, s in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties", True)
        extra_ok = _compile(extra, root, refs) if isinstance(extra, dict) else None

        def obj(v, required=required, props=props, extra=extra, extra_ok=extra_ok):
            if not isinstance(v, dict):
                return True
            for k in required:
                if k not in v:
                    return False
            for k, item in v.items():
                p = props.get(k)
                if p is not None:
                    if not p(item):
                        return False
                elif extra is False:
                    return False
                elif extra_ok is not None and not extra_ok(item):
                    return False
            return True

        preds.append(obj)
    if not preds:
        return lambda v: True
    if len(preds) == 1:
        return preds[0]
    return lambda v, preds=tuple(preds): all(p(v) for p in preds)


@lru_cache(maxsize=1)
def _predicates() -> dict[str, Any]:
    root = load_schema()
    refs: dict[str, Any] = {}
    return {kind: _compile(root["$defs"][kind], root, refs) for kind in KINDS}


def validation_errors(msg: Any) -> list[str]:
    """Every problem of `msg` against the wire v1 schema ([] when valid). The message's `kind` picks the
    definition, so errors are about that kind rather than 'matches none of fire/state/ack'."""
    root = load_schema()
    if not isinstance(msg, dict):
        return [f"message: expected a JSON object, got {_describe(msg)}"]
    kind = msg.get("kind")
    if kind not in KINDS:
        return [f"message.kind: must be one of {', '.join(KINDS)}, got {_describe(kind)}"]
    if _predicates()[kind](msg):
        return []
    errors: list[str] = []
    _check(msg, root["$defs"][kind], root, "message", errors)
    return errors or ["message: does not match the schema"]


def validate(msg: Any) -> dict[str, Any]:
    """Return `msg` when it is valid wire v1, else raise WireError naming the first problems."""
    errors = validation_errors(msg)
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise WireError("; ".join(errors[:3]) + more)
    return msg
