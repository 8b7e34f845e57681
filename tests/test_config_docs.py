"""`firespotter config`: docs/configuration.md is generated from the config models (a test fails when the
committed page and the code disagree), every key is described, the JSON Schema validates the shipped examples
and rejects a typo, and `config check` gives exit status 2 with the key named."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, run_cli
from firespotter.plugins.commands.config import GROUND
from firespotter.runtime.confdoc import config_markdown, config_schema
from firespotter.runtime.plugins import get_registry

EXAMPLES = sorted((REPO / "deploy" / "configs").glob("*.toml"))


def test_committed_reference_equals_the_generated_one():
    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == config_markdown(get_registry(), GROUND), \
        "docs/configuration.md is stale: run `firespotter config docs --out docs/configuration.md`"


def test_every_key_in_the_reference_is_described():
    rows = [line for line in config_markdown(get_registry(), GROUND).splitlines() if line.startswith("| `")]
    assert len(rows) > 80
    empty = [row.split("|")[1].strip() for row in rows if row.rstrip().endswith("|  |")]
    assert empty == [], f"keys without a description: {empty}"


def test_schema_accepts_the_examples_and_rejects_a_typo():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed (dev extra)")
    import tomllib

    from firespotter.ground.settings import GroundConfig

    schema = config_schema(get_registry())
    validator = jsonschema.Draft202012Validator(schema)
    ground = jsonschema.Draft202012Validator(GroundConfig.model_json_schema())
    for path in EXAMPLES:
        data = tomllib.loads(path.read_text())
        errors = list((ground if "listen" in data else validator).iter_errors(data))
        assert errors == [], f"{path.name}: {errors[0].message if errors else ''}"
    bad = {"sinks": [{"type": "mqtt", "hots": "gcs.local"}]}
    assert list(validator.iter_errors(bad))


def test_config_schema_command_prints_json():
    r = run_cli("config", "schema")
    assert r.returncode == 0, r.stderr
    schema = json.loads(r.stdout)
    sink_types = {v["properties"]["type"]["const"] for v in schema["properties"]["sinks"]["items"]["oneOf"]}
    assert {"files", "mqtt", "zenoh", "video"} <= sink_types


def test_config_check_names_the_bad_key_and_exits_2(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[source]\nuri = "test://"\n[[sinks]]\ntype = "mqtt"\nprot = 1883\n')
    r = run_cli("config", "check", str(cfg))
    assert r.returncode == 2 and "sinks[0] (mqtt)" in r.stderr and "prot" in r.stderr and "port" in r.stderr, r.stderr
    cfg.write_text('[source]\nuri = "test://"\n[model]\nname = "firesegg"\n')
    r = run_cli("config", "check", str(cfg))
    assert r.returncode == 2 and "model.name" in r.stderr and "firesegg" in r.stderr, r.stderr
    r = run_cli("config", "check", str(cfg), "--set", "model.name=colorrule")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_ground_config_errors_name_the_key(tmp_path):
    cfg = tmp_path / "ground.toml"
    cfg.write_text('[listen]\ntransport = "mqtt"\nstatoin = "x"\n[mqtt]\nport = 99999\n')
    r = run_cli("config", "check", str(cfg))
    assert r.returncode == 2, r.stderr
    assert "listen.statoin" in r.stderr and "did you mean 'station'" in r.stderr and "mqtt.port" in r.stderr, r.stderr
    r = run_cli("listen", "-c", str(cfg))
    assert r.returncode == 2 and "listen.statoin" in r.stderr
