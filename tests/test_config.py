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


def test_model_and_backend_options_are_separate_tables_each_checked_by_its_plugin(tmp_path):
    """[model] options belong to the model, [model] backend_options to the backend that runs it; each plugin's
    options model checks its own table when the pipeline is built."""
    from firespotter.runtime.assemble import bind_segmenter
    from firespotter.runtime.config import ModelSettings
    from firespotter.runtime.plugins import new_registry

    registry = new_registry()
    seg, backend = bind_segmenter(registry, ModelSettings(name="fireseg-lite", backend="onnxruntime",
                                                          backend_options={"threads": 1, "spin": "off"}))
    assert backend == "onnxruntime" and seg.info()["threads"] == 1 and seg.frame_head
    with pytest.raises(ConfigError, match=r"model.backend_options \(onnxruntime\): unknown key 'thread'; did you "
                                          r"mean 'threads'"):
        bind_segmenter(registry, ModelSettings(name="fireseg-lite", backend="onnxruntime",
                                               backend_options={"thread": 1}))
    with pytest.raises(ConfigError, match=r"model.backend_options \(onnxruntime\): threads: .*greater than or "
                                          r"equal to 1 \(got 0\)"):
        bind_segmenter(registry, ModelSettings(name="fireseg-lite", backend="onnxruntime",
                                               backend_options={"threads": 0}))
    with pytest.raises(ConfigError, match=r"model.options \(colorrule\): this model takes no options, got gain"):
        bind_segmenter(registry, ModelSettings(name="colorrule", options={"gain": 2}))
    with pytest.raises(ConfigError, match=r"\[model\] backend_options: weights is an option of model 'fireseg-lite', "
                                          r"not of backend 'onnxruntime': move it to \[model\] options"):
        bind_segmenter(registry, ModelSettings(name="fireseg-lite", backend="onnxruntime",
                                               backend_options={"weights": "x"}))


def test_backend_options_under_the_model_give_a_one_line_migration_error(tmp_path):
    """A config from before the split (backend options in [model] options) says exactly what to move where."""
    path = write(tmp_path, GOOD.replace('name = "colorrule"', 'name = "fireseg-lite"\nbackend = "onnxruntime"\n'
                                        'options = { weights = "w", threads = 2, gate = true }'))
    r = run_cli("run", "-c", str(path))
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0] == (f"error: {path}: [model] options: threads, gate are options of the backend (onnxruntime), "
                        "not of model 'fireseg-lite': move them to [model] backend_options, e.g. "
                        "backend_options = { threads = 2, gate = true }")


def test_command_line_options_go_to_the_table_of_whoever_declares_them():
    """`firespotter build/bench --option KEY=VALUE`: a key the model declares is the model's, any other the
    backend's."""
    from firespotter.runtime.assemble import with_options
    from firespotter.runtime.config import ModelSettings
    from firespotter.runtime.plugins import new_registry

    m = with_options(new_registry(), ModelSettings(name="fireseg-lite", backend_options={"spin": True}),
                     {"weights": "out/w", "threads": 2})
    assert m.options == {"weights": "out/w"} and m.backend_options == {"spin": True, "threads": 2}
