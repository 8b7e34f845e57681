"""The replay report's charts and the results' source state: histogram axes reach the slowest sample, the time
axis is time in the flight (not the frame number), and the last frames of a replay say "streaming" (the state
of their frame), not "ended"."""

from __future__ import annotations

import json
import re


from conftest import run_cli, synthetic_clip
from firespotter.runtime.report import histogram, nice_ceiling


def axis_labels(svg: str) -> list[str]:
    return re.findall(r'text-anchor="middle">([^<]+)</text>', svg)


def test_histogram_axis_reaches_the_largest_value():
    values = [1.0] * 300 + [2.0] * 100 + [187.0]  # one slow outlier
    svg = histogram(values, "milliseconds")
    ends = [float(v) for v in axis_labels(svg) if re.fullmatch(r"[\d.]+", v)]
    assert max(ends) >= 187.0, ends
    assert nice_ceiling(187.0) == 200.0 and nice_ceiling(0.3) == 0.5 and nice_ceiling(10.0) == 10.0
    titles = re.findall(r"<title>([\d.e+-]+)–([\d.e+-]+) ms: (\d+)</title>", svg)
    assert sum(int(n) for *_, n in titles) == len(values)
    assert any(float(lo) <= 187.0 <= float(hi) for lo, hi, _ in titles)


def test_replay_report_time_axis_and_last_frames_state(tmp_path):
    clip = synthetic_clip(tmp_path / "flight.mp4", 128, 96, frames=24, seed=5)
    out = tmp_path / "out"
    r = run_cli("replay", str(clip), "--out", str(out), "--no-overlay", "--model", "colorrule")
    assert r.returncode == 0, r.stderr
    text = (out / "report.html").read_text()
    assert "time in the recording (s)" in text and ">frame<" not in text
    labels = axis_labels(text)
    assert "1.9" in labels, labels  # 23 frames at 12 fps: the last at 1.92 s
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert len(events) == 24
    assert {e["source_state"] for e in events} == {"streaming"}, [e["source_state"] for e in events[-5:]]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source_state"] == "ended"  # the source itself did end
