"""Plugin discovery through real entry points (a fake third-party distribution on sys.path)."""

from __future__ import annotations

import json
import pytest

from conftest import make_dist, run_cli

BUILTINS = {"dir_source", "video_file_source", "test_source", "numpy_backend", "onnxruntime_backend",
            "colorrule", "files_sink", "null_sink", "synth_command"}


GOOD_PLUGIN = """
    from firespotter.runtime.plugins import hookimpl
    from firespotter.runtime.specs import ModelSpec, Availability

    class Model:
        model_id = "always-fire"
        from firespotter.runtime.types import InputSpec
        input_spec = InputSpec()
        def formats(self): return ("numpy",)
        def artifact(self, fmt):
            import numpy as np
            return lambda batch: np.ones(batch.shape[:3], np.float32)

    @hookimpl
    def register_models():
        return [ModelSpec("always-fire", lambda options: Model(), "test model"),
                ModelSpec("needs-npu", lambda options: None, "cannot run here",
                          available=lambda: Availability(False, "no NPU on this machine"))]
"""


@pytest.fixture
def third_party(tmp_path):
    make_dist(tmp_path, "fakefire", "fakefire", "fakefire_plugin", GOOD_PLUGIN)
    make_dist(tmp_path, "brokenfire", "brokenfire", "brokenfire_plugin", "raise ImportError('needs libfoo')\n")
    return {"PYTHONPATH": str(tmp_path)}


def plugin_names(env) -> dict:
    r = run_cli("plugins", "--json", env=env)
    assert r.returncode == 0, r.stderr
    return {row["name"]: row for row in json.loads(r.stdout)}


def test_builtins_are_discovered_through_entry_points():
    rows = plugin_names({})
    assert BUILTINS <= set(rows)
    assert all(rows[n]["builtin"] and rows[n]["loaded"] for n in BUILTINS)
    provides = {(c["kind"], c["name"]) for n in BUILTINS for c in rows[n]["provides"]}
    assert {("source", "dir"), ("source", "file"), ("source", "test"), ("model", "colorrule"),
            ("sink", "files"), ("sink", "null"), ("backend", "numpy"), ("command", "synth")} <= provides


def test_third_party_plugin_loads_and_reports_availability(third_party, tmp_path):
    rows = plugin_names(third_party)
    fake = rows["fakefire"]
    assert fake["version"] == "1.2.3" and fake["distribution"] == "fakefire" and not fake["builtin"]
    comps = {c["name"]: c for c in fake["provides"]}
    assert comps["always-fire"]["available"] is True
    assert comps["needs-npu"]["available"] is False and "no NPU" in comps["needs-npu"]["reason"]
    broken = rows["brokenfire"]
    assert not broken["loaded"] and "needs libfoo" in broken["error"]
    # The third-party model really runs end to end.
    r = run_cli("replay", "test://?frames=3&size=64x64", "--out", str(tmp_path / "o"), "--model", "always-fire",
                env=third_party)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["fire_frames"] == 3


def test_allow_list_limits_third_party_plugins(third_party):
    rows = plugin_names({**third_party, "FIRESPOTTER_PLUGINS": "fakefire"})
    assert "fakefire" in rows and "brokenfire" not in rows
    assert BUILTINS <= set(rows)  # built-ins always load
    rows = plugin_names({**third_party, "FIRESPOTTER_PLUGINS": ""})
    assert "fakefire" not in rows and "brokenfire" not in rows


def test_disable_autoload_skips_third_party_unless_allowed(third_party):
    rows = plugin_names({**third_party, "FIRESPOTTER_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert "fakefire" not in rows and BUILTINS <= set(rows)
    rows = plugin_names({**third_party, "FIRESPOTTER_DISABLE_PLUGIN_AUTOLOAD": "1", "FIRESPOTTER_PLUGINS": "fakefire"})
    assert "fakefire" in rows


def test_trace_plugins_writes_hook_calls(third_party):
    r = run_cli("plugins", "--json", env={**third_party, "FIRESPOTTER_TRACE_PLUGINS": "1"})
    assert r.returncode == 0
    assert "register_models" in r.stderr and "register_sources" in r.stderr
    r = run_cli("plugins", "--json", env=third_party)
    assert "register_models" not in r.stderr


def test_unknown_component_error_suggests_close_name(registry):
    from firespotter.runtime.errors import PluginError

    with pytest.raises(PluginError) as exc:
        registry.get("models", "colorrul")
    assert "unknown model 'colorrul'" in str(exc.value) and "did you mean 'colorrule'" in str(exc.value)


def test_plugins_table_output():
    r = run_cli("plugins")
    assert r.returncode == 0
    assert "colorrule" in r.stdout and "onnxruntime" in r.stdout


@pytest.mark.parametrize("value, on", [("", False), ("0", False), ("false", False), ("No", False), ("off", False),
                                       ("OFF ", False), ("1", True), ("yes", True), ("true", True)])
def test_switches_read_off_as_off(monkeypatch, value, on):
    from firespotter.runtime.plugins import _flag

    monkeypatch.setenv("FIRESPOTTER_TRACE_PLUGINS", value)
    assert _flag("FIRESPOTTER_TRACE_PLUGINS") is on
