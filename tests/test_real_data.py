"""The colour rule on real aerial fire frames (../shared, the team's workspace only; skipped elsewhere)."""

from __future__ import annotations

import json

from conftest import run_cli


def test_colorrule_replay_on_real_flame_frames(real_dev, tmp_path):
    out = tmp_path / "real"
    r = run_cli("replay", f"dir://{real_dev / 'images'}", "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 36 and summary["skipped"] == 0
    # Every FLAME frame has a (small) fire; the colour rule finds fire pixels in most of them.
    assert summary["fire_frames"] >= 18


def test_real_video_replays_every_frame(real_dev, tmp_path):
    video = real_dev / "videos" / "furg_house6.mp4"
    r = run_cli("replay", str(video), "--out", str(tmp_path / "v"), "--limit", "40")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "v" / "summary.json").read_text())
    assert summary["frames"] == 40 and summary["dropped"] == 0
