"""deploy/install.sh into a staging root: the config, an owner-only secrets file, the state directories, the
source and both units land where the units expect them, the installed units verify clean, the steps that act on
the running system are listed and skipped, and a second run keeps the operator's config."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

ANALYZE = shutil.which("systemd-analyze")


def install(root: Path, *args: str) -> subprocess.CompletedProcess:
    venv = Path(sys.executable).parent.parent  # this checkout's venv, prepared like JetPack's would be
    return subprocess.run(["bash", str(REPO / "deploy" / "install.sh"), "--root", str(root), "--venv", str(venv),
                           *args], capture_output=True, text=True, timeout=120)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_into_a_staging_root(tmp_path):
    root = tmp_path / "root"
    r = install(root, "--config", "drone-csi-mqtt")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    etc = root / "etc" / "firespotter"
    assert (etc / "config.toml").read_text() == (REPO / "deploy" / "configs" / "drone-csi-mqtt.toml").read_text()
    assert mode(etc / "env") == 0o600 and mode(etc / "config.toml") == 0o644 and mode(etc / "keys") == 0o700
    for d in ("var/lib/firespotter", "var/cache/firespotter", "var/log/firespotter"):
        assert mode(root / d) == 0o750, d
    assert (root / "opt" / "firespotter" / "src" / "firespotter" / "runtime" / "cli.py").is_file()
    assert not (root / "opt" / "firespotter" / "src" / ".venv").exists(), "the checkout's venv must not be copied"
    assert "config.toml: ok" in r.stdout  # checked with the installed CLI
    for skipped in ("apt-get install", "useradd", "systemctl enable --now"):
        assert f"# skipped under --root: {skipped}" in r.stdout
    exe = str(Path(sys.executable).parent / "firespotter")
    for unit in ("firespotter.service", "firespotter@.service"):
        text = (root / "etc" / "systemd" / "system" / unit).read_text()
        assert f"ExecStart={exe} run -c /etc/firespotter/" in text
        assert "EnvironmentFile=-/etc/firespotter/env" in text
    (etc / "config.toml").write_text("# the operator's own\n")
    again = install(root, "--config", "ci")
    assert again.returncode == 0 and "config.toml exists: kept" in again.stdout
    assert (etc / "config.toml").read_text() == "# the operator's own\n"


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt: systemd)")
def test_installed_units_verify_clean(tmp_path):
    root = tmp_path / "root"
    assert install(root, "--config", "drone-rtsp-zenoh").returncode == 0
    for unit, as_name in (("firespotter.service", "firespotter.service"), ("firespotter@.service", "firespotter@cam0.service")):
        target = tmp_path / as_name
        shutil.copy(root / "etc" / "systemd" / "system" / unit, target)
        r = subprocess.run([ANALYZE, "verify", "--man=no", str(target)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr


def test_a_bad_venv_is_refused(tmp_path):
    r = subprocess.run(["bash", str(REPO / "deploy" / "install.sh"), "--root", str(tmp_path), "--venv",
                        str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "has no bin/firespotter" in r.stderr


def test_a_ground_station_config_is_not_installed_as_a_drone(tmp_path):
    r = install(tmp_path / "root", "--config", "ground-laptop")
    assert r.returncode == 2 and "ground station config" in r.stderr and "listen -c" in r.stderr
