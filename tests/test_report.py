"""`firespotter replay` leaves an overlay video and a self-contained report that renders in a real browser."""

from __future__ import annotations

import json
import re
import shutil

import cv2
import pytest

from conftest import run_cli, synthetic_clip

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def count_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    clip = synthetic_clip(root / "flight.mp4", 160, 120, frames=24, seed=11)
    out = root / "out"
    r = run_cli("replay", str(clip), "--out", str(out))
    assert r.returncode == 0, r.stderr
    return clip, out, r


def test_replay_writes_overlay_with_every_frame(replayed):
    clip, out, _ = replayed
    assert count_frames(out / "overlay.mp4") == count_frames(clip) == 24
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 160 and round(cap.get(cv2.CAP_PROP_FPS)) == 12


def test_report_is_self_contained(replayed):
    _, out, r = replayed
    text = (out / "report.html").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 24
    assert text.count("<svg") >= 5  # fire area, regions, three latency histograms: inlined
    assert "data:image/jpeg;base64," in text  # the frames with the most fire
    assert "precision_exec" in text and "weight_bits" in text and "simulated" in text
    assert not re.search(r'(src|href)="(http|//)', text)  # nothing fetched from anywhere
    assert "report.html" in r.stdout and "overlay.mp4" in r.stdout


def test_report_renders_in_headless_chromium_without_errors(replayed, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium not installed (make setup installs Debian's chromium package)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed (dev extra)")
    _, out, _ = replayed
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((out / "report.html").resolve().as_uri())
        assert page.locator("svg").count() >= 5
        assert page.locator("img").count() >= 1
        assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []


def test_no_report_and_no_overlay_flags(tmp_path):
    r = run_cli("replay", "test://?frames=4&size=64x64", "--out", str(tmp_path / "o"), "--no-report", "--no-overlay")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "o" / "report.html").exists() and not (tmp_path / "o" / "overlay.mp4").exists()
