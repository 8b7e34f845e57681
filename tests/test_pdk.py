"""The plugin kit: scaffolded plugins of every kind install, pass their own tests, list and replay; the worked
example does the same; a plugin that breaks the contract fails with the rule named."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, run_cli
from firespotter.pdk.scaffold import KINDS, scaffold
from firespotter.runtime.errors import FirespotterError

PIP = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]


def pip_uninstall(*dists):
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *dists], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory):
    out = tmp_path_factory.mktemp("pdk")
    roots = {kind: scaffold(f"my_{kind}", kind, out) for kind in KINDS}
    r = subprocess.run(PIP + [arg for root in roots.values() for arg in ("-e", str(root))], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    yield roots
    pip_uninstall(*[f"firespotter-my-{kind}" for kind in KINDS])


def test_generated_plugins_pass_their_own_tests(scaffolded):
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        *[str(root) for root in scaffolded.values()]], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]
    assert " passed" in r.stdout and "failed" not in r.stdout


def test_generated_plugins_are_listed(scaffolded):
    rows = {row["name"]: row for row in json.loads(run_cli("plugins", "--json").stdout)}
    for kind in KINDS:
        row = rows[f"my_{kind}"]
        assert row["loaded"] and row["distribution"] == f"firespotter-my-{kind}" and row["version"] == "0.1.0"
        assert row["provides"][0]["kind"] == kind and row["provides"][0]["available"]


def test_replays_use_the_generated_plugins(scaffolded, tmp_path):
    r = run_cli("replay", "my_source://?frames=4&size=64x48", "--out", str(tmp_path / "s"), "--no-overlay")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["frames"] == 4
    r = run_cli("replay", "test://?frames=3&size=64x64", "--out", str(tmp_path / "m"), "--model", "my_model",
                "--backend", "my_backend", "--no-overlay")
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert s["model_id"] == "my_model-1" and s["backend"] == "my_backend"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[source]\nuri = "test://?frames=3&size=64x64"\n[adapt]\nname = "my_adapter"\n'
                   f'[[processors]]\ntype = "my_processor"\n'
                   f'[[sinks]]\ntype = "my_sink"\npath = "{tmp_path / "events.jsonl"}"\n')
    r = run_cli("run", "-c", str(cfg), "--summary-json", str(tmp_path / "summary.json"))
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 3
    assert json.loads((tmp_path / "summary.json").read_text())["processors"]["my_processor"]["results"] == 3


def test_worked_example_installs_lists_passes_and_replays(tmp_path):
    example = REPO / "examples" / "firespotter-webhook"
    r = subprocess.run(PIP + ["-e", str(example)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    try:
        rows = {row["name"]: row for row in json.loads(run_cli("plugins", "--json").stdout)}
        assert rows["webhook"]["version"] == "0.2.0" and rows["webhook"]["provides"][0]["name"] == "webhook"
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:]
        assert "4 passed" in r.stdout or "5 passed" in r.stdout
    finally:
        pip_uninstall("firespotter-webhook")


BROKEN = '''
import time
import numpy as np
import pytest
from firespotter.pdk.testing import AdapterContract, CommandContract, SinkContract, SourceContract
from firespotter.runtime.assemble import bind_segmenter
from firespotter.runtime.config import ModelSettings
from firespotter.runtime.plugins import new_registry
from firespotter.runtime.source_base import FrameSource
from firespotter.runtime.specs import CommandSpec


class Backwards(FrameSource):
    def __init__(self):
        super().__init__("bad")

    def __iter__(self):
        from firespotter.runtime.types import Frame, SourceState
        self._state = SourceState.STREAMING
        for seq in (0, 1, 2, 1, 3):
            if self._closed:
                return
            yield Frame(np.zeros((8, 8, 3), np.uint8), seq, time.monotonic_ns(), time.time_ns(), "bad")
        self._state = SourceState.ENDED


class TestBackwardsSource(SourceContract):
    @pytest.fixture
    def source(self):
        return Backwards()


class Lossy:
    name, needs_image = "lossy", False

    def __init__(self):
        self.kept = []

    def send(self, result):
        if result.seq != 4:  # loses one message
            self.kept.append(result.seq)

    def flush(self):
        pass

    def close(self):
        pass


class TestLossySink(SinkContract):
    @pytest.fixture
    def sink(self):
        return Lossy()

    def delivered(self, sink):
        return sink.kept


class NoFlush:  # a sink that forgot a required member of its contract: flush()
    name = "noflush"
    send = close = lambda self, *args: None


class TestNoFlushSink(SinkContract):
    @pytest.fixture
    def sink(self):
        return NoFlush()

    def delivered(self, sink):
        return []


class Idle:  # claims to adapt, changes nothing
    name = "idle"

    def observe(self, batch, prediction):
        return None

    def close(self):
        pass


class TestIdleAdapter(AdapterContract):
    @pytest.fixture
    def segmenter(self):
        return bind_segmenter(new_registry(), ModelSettings(name="colorrule"))[0]

    @pytest.fixture
    def adapter(self):
        return Idle()


class TestNotCallableCommand(CommandContract):
    @pytest.fixture
    def command(self):
        return CommandSpec("bad", "bad.main", help="a dotted path, not the function")
'''


def test_contract_breakers_fail_with_the_rule_named(tmp_path):
    (tmp_path / "test_broken.py").write_text(textwrap.dedent(BROKEN))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "contract rule 'seq increases by one' broken: seq 1 after 2" in r.stdout
    assert "contract rule 'flush() delivers everything accepted' broken: missing seqs [4]" in r.stdout
    assert "contract rule 'observing a shifted stream changes the segmenter's output' broken" in r.stdout
    assert "contract rule 'the callback is a function or a typer.Typer' broken: 'bad.main'" in r.stdout
    assert ("contract rule 'a sink implements its contract' broken: sink (NoFlush) does not implement flush of the "
            "sink contract") in r.stdout
    assert "7 failed" in r.stdout


def test_scaffold_refuses_bad_names_kinds_and_existing_folders(tmp_path):
    with pytest.raises(FirespotterError, match="not usable"):
        scaffold("My-Plugin", "sink", tmp_path)
    with pytest.raises(FirespotterError, match="unknown plugin kind"):
        scaffold("ok", "printer", tmp_path)
    scaffold("twice", "sink", tmp_path)
    with pytest.raises(FirespotterError, match="already exists"):
        scaffold("twice", "sink", tmp_path)
    r = run_cli("pdk", "new", "Bad Name", "--kind", "sink", "--out", str(tmp_path))
    assert r.returncode == 2 and "not usable" in r.stderr
