"""The Python API (firespotter/api.py): `firespotter.open` and `firespotter.pipeline`, and every example in
docs/api.md, run as written."""

from __future__ import annotations

import re
import threading

import pytest

import firespotter
from conftest import REPO
from firespotter.runtime.errors import ConfigError, PluginError
from firespotter.runtime.types import AlertLevel, Result

DOC = REPO / "docs" / "api.md"


def _examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_open_gives_one_result_per_frame():
    results = list(firespotter.open("test://?frames=5&size=128x96"))
    assert len(results) == 5 and all(isinstance(r, Result) for r in results)
    assert [r.seq for r in results] == list(range(5))
    assert all(r.mask.shape == (96, 128) and r.frozen for r in results)
    assert all(r.image is None for r in results)


def test_open_is_deterministic_and_matches_the_engine():
    a = [r.mask.copy() for r in firespotter.open("test://?frames=4&size=128x96&seed=5", model="colorrule")]
    b = [r.mask.copy() for r in firespotter.open("test://?frames=4&size=128x96&seed=5", model="colorrule")]
    assert len(a) == 4 and all((x == y).all() for x, y in zip(a, b))
    assert any(x.any() for x in a), "the synthetic scene has fire"


def test_leaving_early_closes_the_source():
    with firespotter.open("test://?frames=500&size=128x96", model="colorrule") as results:
        for r in results:
            if r.seq == 1:
                break
    assert results.summary is not None and results.summary["frames"] < 500
    assert not results._thread.is_alive()


def test_a_loop_left_early_without_with_still_closes():
    results = firespotter.open("test://?frames=500&size=128x96", model="colorrule")
    for r in results:
        if r.seq == 1:
            break
    assert results.summary is not None and results.summary["frames"] < 500
    assert not results._thread.is_alive()


def test_a_pipeline_stopped_before_it_started_closes_its_sinks(tmp_path):
    p = firespotter.pipeline("test://?frames=5&size=64x64", model="colorrule", on_result=lambda r: None,
                             sinks=[{"type": "files", "dir": str(tmp_path / "out")}])
    summary = p.stop(timeout=30)
    assert summary is not None and summary["frames"] == 0 and not p.running


def test_bad_arguments_fail_at_open():
    with pytest.raises(PluginError, match="unet9000"):
        firespotter.open("test://?frames=2", model="unet9000")
    with pytest.raises(ConfigError, match="threshold"):
        firespotter.open("test://?frames=2", threshold=3.0)
    with pytest.raises(ConfigError, match="on_result must be callable"):
        firespotter.pipeline("test://?frames=2", on_result=42)


def test_pipeline_callbacks_and_a_callback_that_raises():
    seen, alerts, ended = [], [], threading.Event()

    def on_result(r):
        seen.append(r.seq)
        if r.seq == 1:
            raise RuntimeError("a broken callback")

    p = firespotter.pipeline("test://?frames=10&size=128x96", model="colorrule", mode="replay", on_result=on_result,
                             on_alert=lambda r: alerts.append(r.alert), on_end=lambda s: ended.set())
    summary = p.start().join(timeout=60)
    assert seen == list(range(10)) and ended.is_set()
    assert summary["sinks"]["callbacks"]["errors"] == 1
    assert all(a == AlertLevel.FIRE for a in alerts)


@pytest.mark.parametrize("index", range(len(_examples())))
def test_docs_api_examples_run(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _examples()[index]
    exec(compile(code, f"docs/api.md example {index + 1}", "exec"), {"__name__": "__docs__"})
