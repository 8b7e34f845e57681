"""Configuration: typos and wrong types are stopped with a message naming the file and the key."""

from __future__ import annotations

import pytest

from conftest import run_cli
from firespotter.runtime.config import load_settings
from firespotter.runtime.errors import ConfigError

GOOD = """
[runtime]
mode = "live"
drone_id = "uav-7"
deadline_ms = 250

[source]
uri = "test://?frames=5"

[model]
name = "colorrule"
threshold = 0.6

[[sinks]]
type = "null"
"""


def write(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_good_config_loads(tmp_path):
    s = load_settings(write(tmp_path, GOOD))
    assert s.runtime.mode == "live" and s.runtime.deadline_ms == 250 and s.model.threshold == 0.6
    assert s.sinks[0].type == "null"


def test_typo_names_file_key_and_suggestion(tmp_path):
    path = write(tmp_path, GOOD.replace("threshold = 0.6", "treshold = 0.6"))
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    msg = str(exc.value)
    assert str(path) in msg and "model.treshold" in msg and "did you mean 'threshold'" in msg


def test_unknown_section_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'modle'.*did you mean 'model'"):
        load_settings(write(tmp_path, GOOD + "\n[modle]\nname = 'x'\n"))


def test_wrong_type_names_key_and_expectation(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, GOOD.replace("deadline_ms = 250", 'deadline_ms = "soon"')))
    msg = str(exc.value)
    assert "runtime.deadline_ms" in msg and "valid number" in msg and "'soon'" in msg


def test_impossible_value(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.threshold: .*less than or equal to 1"):
        load_settings(write(tmp_path, GOOD.replace("threshold = 0.6", "threshold = 1.5")))
    with pytest.raises(ConfigError, match=r"runtime\.mode"):
        load_settings(write(tmp_path, GOOD.replace('mode = "live"', 'mode = "fast"')))


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[runtime\nmode = 1"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_sink_options_are_validated_by_the_sink(tmp_path):
    path = write(tmp_path, GOOD.replace('type = "null"', f'type = "files"\ndirr = "{tmp_path}"'))
    r = run_cli("run", "-c", str(path))
    assert r.returncode == 2
    assert "sinks[0] (files)" in r.stderr and "dirr" in r.stderr and "Traceback" not in r.stderr


def test_cli_config_error_is_one_line_without_traceback(tmp_path):
    r = run_cli("run", "-c", str(write(tmp_path, GOOD.replace("threshold = 0.6", "treshold = 0.6"))))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "model.treshold" in lines[0]


def test_shipped_example_configs_are_valid():
    from conftest import REPO

    from firespotter.ground.settings import load_ground_config

    examples = sorted((REPO / "deploy" / "configs").glob("*.toml"))
    assert examples, "deploy/ should hold example configs"
    for path in examples:  # a ground station's config (it has [listen]) is `firespotter listen -c`'s
        load_ground_config(path) if "[listen]" in path.read_text() else load_settings(path)
