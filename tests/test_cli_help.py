"""CLI texts a user meets on day one: help that tells the real default and keeps "[model]", shell completion,
commands whose plugin cannot run here saying what to install, a plugin name refused for the reason it fails."""

from __future__ import annotations

from conftest import run_cli

NARROW = {"COLUMNS": "80"}


def test_replay_help_names_the_real_default_model():
    r = run_cli("replay", "--help", env=NARROW)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "else fireseg-lite" in text and "colorrule" not in text


def test_help_keeps_bracketed_table_names():
    for cmd in ("eval", "build", "bench"):
        r = run_cli(cmd, "--help", env=NARROW)
        assert r.returncode == 0, r.stderr
        assert "[model]" in r.stdout, (cmd, r.stdout[:600])
    assert "[post]" in " ".join(run_cli("eval", "--help", env=NARROW).stdout.split())


def test_train_help_is_not_a_narrow_column():
    r = run_cli("train", "--help", env=NARROW)
    assert r.returncode == 0, r.stderr
    # a 40-character phrase of one option's help fits on one line at 80 columns
    assert any("[[domains]] with their share of every" in line for line in r.stdout.splitlines()), r.stdout[:800]


def test_shell_completion_is_offered():
    r = run_cli("--help", env=NARROW)
    assert "--install-completion" in r.stdout and "--show-completion" in r.stdout


def test_commands_without_torch_say_what_to_install(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'torch'\")\n"
        "sys.meta_path.insert(0, NoTorch())\n")
    env = {"PYTHONPATH": str(tmp_path)}
    for cmd in ("train", "export"):
        r = run_cli(cmd, "--out", str(tmp_path / "o"), env=env)
        assert r.returncode == 2, (cmd, r.stderr)
        assert "No such command" not in r.stderr
        assert f"`firespotter {cmd}` is not available here" in r.stderr and "pip install 'firespotter[torch]'" in r.stderr


def test_pdk_name_refused_for_the_reason_it_fails(tmp_path):
    r = run_cli("pdk", "new", "x", "--kind", "sink", "--out", str(tmp_path))
    assert r.returncode == 2 and "it has 1 character(s); use 2 to 41" in r.stderr, r.stderr
    r = run_cli("pdk", "new", "fire-x", "--kind", "sink", "--out", str(tmp_path))
    assert r.returncode == 2 and "'-'" in r.stderr, r.stderr
