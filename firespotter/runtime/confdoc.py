"""The configuration described by its own models: the JSON Schema (`firespotter config schema`), the reference
page docs/configuration.md (`firespotter config docs`, generated, so it cannot drift from the code) and a check
of a file against everything installed (`firespotter config check FILE`).

Everything comes from the pydantic models: the top-level tables from `Settings`, each [[sinks]] and
[[processors]] type from its plugin's options model. The reference page lists the built-in plugins only, so it
is the same on every machine whatever else is installed.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .assemble import validated_options
from .config import PluginTable, Settings
from .errors import FirespotterError
from .sources import parse_uri

TABLE_KINDS = (("sinks", "sink"), ("processors", "processor"))


# --- JSON Schema ---------------------------------------------------------------------------------------------


def _merge_defs(into: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Move a sub-schema's $defs into the root's (the $refs point at the root)."""
    for name, sub in schema.pop("$defs", {}).items():
        into.setdefault(name, sub)
    return schema


def _table_schema(kind: str, name: str, spec: Any, defs: dict[str, Any]) -> dict[str, Any]:
    model = getattr(spec, "options_model", None)
    if model is not None:
        sub = _merge_defs(defs, model.model_json_schema())
    else:
        sub = {"type": "object", "properties": {}, "additionalProperties": False}
    sub = dict(sub)
    sub["title"] = f"{kind} {name}"
    props = {"type": {"const": name}, **sub.get("properties", {})}
    if kind == "sink":
        props["name"] = {"type": "string", "description": "the sink's name (default: its type); names are unique"}
    sub["properties"] = props
    sub["required"] = ["type", *sub.get("required", [])]
    if getattr(spec, "description", ""):
        sub["description"] = spec.description
    return sub


def config_schema(registry, builtin_only: bool = False) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a config file: the top-level tables, and every [[sinks]]/[[processors]]
    table as one of the installed plugin types (`type` picks it)."""
    schema = Settings.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "firespotter config"
    defs = schema.setdefault("$defs", {})
    for plural, kind in TABLE_KINDS:
        variants = [_table_schema(kind, name, spec, defs) for name, spec in sorted(plugin_specs(registry, plural, builtin_only).items())]
        prop = schema["properties"][plural]
        prop["items"] = {"oneOf": variants} if variants else prop.get("items", {})
    return schema


def plugin_specs(registry, kind: str, builtin_only: bool = False) -> dict[str, Any]:
    specs = registry.specs(kind)
    if not builtin_only:
        return specs
    out = {}
    for name, spec in specs.items():
        info = registry.plugins.get(registry.provider(kind, name))
        if info is not None and info.builtin:
            out[name] = spec
    return out


# --- the reference page --------------------------------------------------------------------------------------


def _type_name(ann: Any) -> str:
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(names) + (" (optional)" if type(None) in args else "")
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "table"
    if inspect.isclass(ann) and issubclass(ann, BaseModel):
        return "table"
    return {"str": "string", "int": "integer", "float": "number", "bool": "true/false", "PosixPath": "path",
            "Path": "path", "Any": "any"}.get(getattr(ann, "__name__", str(ann)), getattr(ann, "__name__", str(ann)))


def _limits(field: FieldInfo) -> str:
    out = []
    for m in field.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("pattern", "matches")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym} `{v}`" if attr == "pattern" else f"{sym} {v}")
    return ", ".join(out)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if value is None or value is PydanticUndefined:
        return "—"
    if isinstance(value, BaseModel):
        return "(table)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (dict, list)) and not value:
        return "`{}`" if isinstance(value, dict) else "`[]`"
    return f"`{json.dumps(value) if isinstance(value, str) else value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def model_table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[str]:
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        desc = field.description or ""
        limits = _limits(field)
        if limits:
            desc = f"{desc} ({limits})" if desc else limits
        rows.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {_cell(desc)} |")
    if len(rows) == 2:
        rows.append("| — | | | no keys |")
    return rows


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__) if obj.__doc__ else ""


def config_markdown(registry, extra: list[tuple[str, str, type[BaseModel]]] = ()) -> str:
    """docs/configuration.md: every table and key of a config file, and every built-in sink, processor,
    source scheme and telemetry reader. `extra`: (heading, intro, root model) of other config files (the ground
    station's), each table of the root model documented like the drone's."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `firespotter config docs` from the config models; do not edit by hand. "
        "tests/test_config_docs.py fails when this file and the code disagree. -->",
        "",
        "One TOML file, validated at start-up: an unknown key, a wrong type or an impossible value stops start-up "
        "with a message naming the file, the key and what was expected. Commented examples: `deploy/configs/`.",
        "",
        "- `firespotter config check FILE` validates a file against everything installed (tables, keys, plugin "
        "names and each plugin's options) without opening a camera or a broker; exit status 2 when it is invalid.",
        "- `firespotter config schema` prints the JSON Schema (for editors and CI).",
        "- `--set KEY=VALUE` (on `run` and `config check`) overrides one key for one run: `--set source.uri=test://`, "
        "`--set sinks[0].port=1884`. The value is read as TOML (`5`, `true`, `\"text\"`), else as a string.",
        "",
        "## Top-level tables",
        "",
    ]
    for name, field in Settings.model_fields.items():
        ann = field.annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)] or [ann]
        model = args[0]
        if typing.get_origin(ann) is list:
            title = f"### `[[{name}]]`"
        else:
            title = f"### `[{name}]`" + (" (optional)" if type(None) in typing.get_args(ann) else "")
        out += [title, ""]
        doc = _doc(model)
        if doc and not doc.startswith(model.__name__ + "("):
            out += [doc, ""]
        if issubclass(model, PluginTable):
            out += [f"`type` picks the plugin; the other keys are its options: see `[[{name}]]` types below.", ""]
            continue
        out += model_table(model) + [""]
    for plural, kind in TABLE_KINDS:
        out += [f"## `[[{plural}]]` types", ""]
        for name, spec in sorted(plugin_specs(registry, plural, builtin_only=True).items()):
            out += [f"### {kind} `{name}`", ""]
            if getattr(spec, "description", ""):
                out += [spec.description[0].upper() + spec.description[1:] + ".", ""]
            model = getattr(spec, "options_model", None)
            doc = _doc(model) if model is not None else ""
            if doc and not doc.startswith(model.__name__ + "(") and "Options every network sink" not in doc:
                out += [doc, ""]
            if plural == "sinks":
                out += ["`name`: the sink's name (default: its type), unique among the sinks.", ""]
            out += (model_table(model) if model is not None else ["No options."]) + [""]
    out += ["## Source URI schemes (`[source] uri`)", "",
            "A bare path is `file://`. Each scheme takes `?key=value` parameters (e.g. `test://?size=128x128&fps=15`).",
            "", "| scheme | what |", "| --- | --- |"]
    for scheme, spec in sorted(plugin_specs(registry, "sources", builtin_only=True).items()):
        out.append(f"| `{scheme}://` | {_cell(spec.description)} |")
    out += ["", "## Telemetry readers (`[telemetry] source`)", "", "| reader | what |", "| --- | --- |"]
    for name, spec in sorted(plugin_specs(registry, "telemetry_readers", builtin_only=True).items()):
        out.append(f"| `{name}` | {_cell(spec.description)} |")
    out += ["", "## Models and backends (`[model] name`, `[model] backend`)", "",
            "`firespotter plugins` lists what is installed and available on this machine.", "",
            "| kind | name | what |", "| --- | --- | --- |"]
    for kind in ("models", "backends", "adapters"):
        for name, spec in sorted(plugin_specs(registry, kind, builtin_only=True).items()):
            out.append(f"| {kind[:-1]} | `{name}` | {_cell(getattr(spec, 'description', ''))} |")
    for heading, intro, root in extra:
        out += ["", f"## {heading}", "", intro]
        for name, field in root.model_fields.items():
            model = field.annotation
            out += ["", f"### `[{name}]`" + ("" if field.is_required() else " (optional)"), ""]
            if _doc(model):
                out += [_doc(model), ""]
            out += model_table(model)
    return "\n".join(out).rstrip() + "\n"


# --- checking a file -----------------------------------------------------------------------------------------


def check_settings(settings: Settings, registry, where: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) of a validated Settings against the installed plugins: names that do not exist and
    plugin options that do not validate are errors; a plugin that exists but cannot run on this machine (no
    CSI camera element on a laptop) is a warning, since the file may be meant for another machine."""
    errors: list[str] = []
    warnings: list[str] = []

    def lookup(kind: str, name: str, key: str):
        specs = registry.specs(kind)
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(sorted(specs)) or "none"
            errors.append(f"{where}: {key}: no {kind[:-1].replace('_', ' ')} {name!r} is installed (known: {known})")
            return None
        avail = spec.available()
        if not avail:
            warnings.append(f"{where}: {key}: {kind[:-1].replace('_', ' ')} {name!r} is not available on this "
                            f"machine: {avail.reason}")
        return spec

    if settings.source.uri:
        try:
            uri = parse_uri(settings.source.uri)
        except FirespotterError as exc:
            errors.append(f"{where}: source.uri: {exc}")
        else:
            lookup("sources", uri.scheme, "source.uri")
    else:
        warnings.append(f"{where}: source.uri: no source given (pass one on the command line or with --set)")
    lookup("models", settings.model.name, "model.name")
    if settings.model.backend != "auto":
        lookup("backends", settings.model.backend, "model.backend")
    if settings.adapt.name:
        lookup("adapters", settings.adapt.name, "adapt.name")
    if settings.telemetry is not None:
        lookup("telemetry_readers", settings.telemetry.source, "telemetry.source")
    for plural, kind in TABLE_KINDS:
        for i, table in enumerate(getattr(settings, plural)):
            spec = lookup(plural, table.type, f"{plural}[{i}].type")
            if spec is not None:
                try:
                    validated_options(spec, table, kind, i, where)
                except FirespotterError as exc:
                    errors.append(str(exc))
    return errors, warnings
