"""systemd on a Jetson and on x86: the units verify clean and stay under an exposure of 4.5, keep PrivateTmp with
the argus socket bound in, allow the Jetson GPU/NVDEC/VIC nodes, write where the examples write, do not restart a
config error (exit status 2) but do restart a failed run (1); the daemon extends its start timeout while it cannot
be ready yet and logs with journald priorities; an image folder with nothing decodable is an error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from test_daemon import NotifyListener, free_tcp_port, write_config

UNITS = REPO / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt: systemd)")


def unit_here(tmp_path: Path, name: str) -> Path:
    """The unit with ExecStart pointed at this checkout's CLI (verify checks the binary exists)."""
    exe = shutil.which("firespotter") or str(REPO / ".venv" / "bin" / "firespotter")
    text = (UNITS / name).read_text().replace("/opt/firespotter/.venv/bin/firespotter", exe)
    target = tmp_path / name.replace("@.", "@cam0.")
    target.write_text(text)
    return target


def settings(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


@needs_analyze
@pytest.mark.parametrize("name", ["firespotter.service", "firespotter@.service"])
def test_exposure_at_most_4_5(tmp_path, name):
    unit = unit_here(tmp_path, name)  # --threshold is on systemd's 0-100 scale (exposure x 10)
    r = subprocess.run([ANALYZE, "security", "--offline=yes", "--threshold=45", str(unit)], capture_output=True,
                       text=True, timeout=60)
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
    assert level, r.stdout[-500:] + r.stderr
    assert r.returncode == 0 and float(level.group(1)) <= 4.5, level.group(0)


@pytest.mark.parametrize("name", ["firespotter.service", "firespotter@.service"])
def test_jetson_and_hardening_settings(name):
    s = settings(name)
    assert s["PrivateTmp"] == ["yes"] and "-/tmp/argus_socket" in s["BindPaths"]
    assert s["UMask"] == ["0077"] and s["RestartPreventExitStatus"] == ["2"]
    allowed = " ".join(s["DeviceAllow"])
    for node in ("/dev/nvmap", "/dev/nvhost-ctrl", "/dev/nvhost-ctrl-gpu", "/dev/nvhost-nvdec", "/dev/nvhost-vic",
                 "/dev/nvhost-msenc", "/dev/nvgpu/igpu0/ctrl", "/dev/host1x-fence", "char-video4linux"):
        assert node in allowed, node
    assert not any("FIRESPOTTER_STATE_DIR" in v for v in s.get("Environment", []))  # read nowhere


def test_template_writes_where_the_examples_write():
    s = settings("firespotter@.service")
    writable = s["ReadWritePaths"][0].split()
    for example in (REPO / "deploy" / "configs").glob("drone-*.toml"):
        for sink in tomllib.loads(example.read_text()).get("sinks", []):
            if sink["type"] == "files":
                assert any(Path(sink["dir"]).is_relative_to(w) for w in writable if "%" not in w), (example.name, sink)
    # the outbox ($STATE_DIRECTORY's first entry) stays per instance
    assert s["StateDirectory"][0].split()[0] == "firespotter/%i"


def test_template_is_the_main_unit_but_per_instance():
    main, tmpl = settings("firespotter.service"), settings("firespotter@.service")
    differ = {k for k in main.keys() | tmpl.keys() if main.get(k) != tmpl.get(k)}
    assert differ == {"Description", "ExecStart", "StateDirectory", "LogsDirectory", "ReadWritePaths"}, differ


def test_config_error_exits_2_and_a_failed_run_exits_1(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[source]\nuri = "test://"\n[runtime]\nmodee = "live"\n')
    r = run_cli("run", "-c", str(bad))
    assert r.returncode == 2 and "runtime.modee" in r.stderr
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "only.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    r = run_cli("replay", f"dir://{folder}", "--out", str(tmp_path / "o"), "--no-overlay", "--no-report")
    assert r.returncode == 1, r.stderr  # not an empty report with status 0, and restartable under systemd
    assert "none of its 1 image file(s) could be decoded (only.png)" in r.stderr
    assert "Traceback" not in r.stderr


def test_start_timeout_extended_while_not_ready_then_bounded(tmp_path):
    port = free_tcp_port()
    # a camera that never delivers a frame: never READY; extensions every 1 s for 3 s, then no more
    cfg = write_config(tmp_path, uri="test://?size=64x64&fps=10&loop=1&stall_after=0", port=port,
                       extra="start_timeout_s = 3")
    listener = NotifyListener(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    proc = subprocess.Popen([sys.executable, "-m", "firespotter", "run", "-c", str(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert listener.wait_for("EXTEND_TIMEOUT_USEC=", 30), listener.messages
        time.sleep(5)
        ext = listener.times("EXTEND_TIMEOUT_USEC=")
        assert len(ext) >= 2 and time.monotonic() - ext[-1] > 1.5, "extensions must stop after start_timeout_s"
        assert not listener.times("READY=1")
        assert any(m.startswith("STATUS=starting") for _, m in listener.messages)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        listener.close()
    assert "no more start-timeout extensions" in err


def test_journal_lines_carry_priorities(tmp_path):
    port = free_tcp_port()
    cfg = write_config(tmp_path, uri="test://?size=64x64&fps=20&frames=10", port=port)
    read_fd, write_fd = os.pipe()
    st = os.fstat(write_fd)
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", "NOTIFY_SOCKET": str(tmp_path / "n.sock")}
    listener = NotifyListener(tmp_path / "n.sock")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "firespotter", "run", "-c", str(cfg)], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=write_fd)
        os.close(write_fd)
        with os.fdopen(read_fd) as f:
            err = f.read()
        proc.wait(60)
    finally:
        listener.close()
    lines = [l for l in err.splitlines() if l.strip()]
    assert lines and all(re.match(r"<[0-7]>", l) for l in lines), lines[:5]
    assert any(l.startswith("<6>INFO firespotter.daemon: ready") for l in lines), lines
    assert not any(l.startswith("<4>") and "ready" in l for l in lines)
