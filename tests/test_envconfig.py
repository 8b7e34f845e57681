"""Per-drone overrides from the environment: FIRESPOTTER_<TABLE>__<KEY> (firespotter/runtime/envconfig.py)."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from firespotter.runtime.config import load_settings
from firespotter.runtime.errors import ConfigError

FLEET = """
[runtime]
drone_id = "drone-x"
[model]
name = "colorrule"
[[sinks]]
type = "mqtt"
host = "gcs.local"
[[sinks]]
type = "zenoh"
name = "mesh"
connect = ["tcp/10.0.0.1:7447"]
"""


@pytest.fixture
def fleet(tmp_path):
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET)
    return path


def test_one_file_many_drones(fleet):
    env = {"FIRESPOTTER_RUNTIME__DRONE_ID": "uav-07", "FIRESPOTTER_MODEL__THRESHOLD": "0.35",
           "FIRESPOTTER_SINKS__MQTT__PASSWORD_ENV": "UAV07_MQTT", "firespotter_sinks__mqtt__username": "uav-07",
           "FIRESPOTTER_SINKS__MESH__CONNECT": '["tcp/10.0.0.2:7447", "tcp/10.0.0.3:7447"]',
           "FIRESPOTTER_SINKS__0__PORT": "8883", "FIRESPOTTER_MODEL__OPTIONS__GATE": "false",
           "FIRESPOTTER_PLUGINS": "x", "FIRESPOTTER_MQTT_PASSWORD": "not an override"}
    s = load_settings(fleet, environ=env)
    assert s.runtime.drone_id == "uav-07" and s.model.threshold == 0.35
    mqtt, mesh = (t.options() for t in s.sinks)
    assert mqtt == {"host": "gcs.local", "password_env": "UAV07_MQTT", "username": "uav-07", "port": "8883"}
    assert mesh["connect"] == ["tcp/10.0.0.2:7447", "tcp/10.0.0.3:7447"]
    assert s.model.options == {"gate": "false"}
    assert load_settings(fleet, environ={}).runtime.drone_id == "drone-x"  # the file itself is unchanged
    assert load_settings(None, environ={"FIRESPOTTER_RUNTIME__DRONE_ID": "uav-9"}).runtime.drone_id == "uav-9"


@pytest.mark.parametrize("env, needle", [
    ({"FIRESPOTTER_RUNTIM__DRONE_ID": "a"}, "unknown table 'runtim' (did you mean RUNTIME?)"),
    ({"FIRESPOTTER_SINKS__KAFKA__HOST": "a"}, "no [[sinks]] named 'kafka' (there are: mqtt, mesh)"),
    ({"FIRESPOTTER_SINKS__5__HOST": "a"}, "there is no [[sinks]] number 5"),
    ({"FIRESPOTTER_RUNTIME__": "a"}, "expected FIRESPOTTER_<TABLE>__<KEY>"),
    ({"FIRESPOTTER_RUNTIME__DRONE_ID": "no spaces allowed"}, "with FIRESPOTTER_RUNTIME__DRONE_ID: runtime.drone_id"),
    ({"FIRESPOTTER_RUNTIME__DRONEID": "uav-1"}, "unknown key 'runtime.droneid'; did you mean 'drone_id'?"),
    ({"FIRESPOTTER_SINKS__MESH__CONNECT": "[unclosed"}, "is not a TOML array or table"),
])
def test_bad_overrides_name_the_variable(fleet, env, needle):
    with pytest.raises(ConfigError) as err:
        load_settings(fleet, environ=env)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_cli_applies_them(fleet, tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "replay.toml"
    config.write_text('[model]\nname = "fireseg-lite"\n')
    r = run_cli("replay", "test://?frames=2&size=64x64", "-c", str(config), "--out", str(out), "--no-overlay",
                "--no-report", env={"FIRESPOTTER_MODEL__NAME": "colorrule", "FIRESPOTTER_RUNTIME__DRONE_ID": "uav-3"})
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "colorrule" and summary["drone_id"] == "uav-3"
