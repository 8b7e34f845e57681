"""Overlay video at any frame size: GStreamer's RGB rows are padded to 4 bytes, so widths like 426 (1278-byte
rows) once came out as one flat colour. Every frame size must encode the scene, and a sheared encoding must be
reported as an error, not written silently."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli
from firespotter.models.synthetic import SyntheticScene
from firespotter.runtime import video
from firespotter.runtime.gst import gst_available
from firespotter.runtime.video import EncodedFrameMismatch, VideoWriter, frame_difference

pytestmark = pytest.mark.skipif(not gst_available(), reason="GStreamer/PyGObject not installed (make setup)")


def scene(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A frame with structure in both directions, so a row shear or a flat frame cannot pass as it."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // max(1, width - 1)).astype(np.uint8)
    img[..., 1] = (y * 255 // max(1, height - 1)).astype(np.uint8)
    img[..., 2] = np.where(((x // 16 + y // 16 + seed) % 2) == 0, 220, 30).astype(np.uint8)
    return img


def roundtrip(tmp_path, width: int, height: int, frames: int = 2) -> tuple[np.ndarray, VideoWriter]:
    path = tmp_path / f"v_{width}x{height}.mp4"
    img = scene(width, height)
    writer = VideoWriter(path, width, height, 10)
    for _ in range(frames):
        writer.write(img)
    writer.close()
    cap = cv2.VideoCapture(str(path))
    ok, bgr = cap.read()
    assert ok, f"{path} does not decode"
    return bgr[:height, :width, ::-1], writer


@pytest.mark.parametrize("size", [(426, 240), (1920, 1080), (427, 241), (424, 240), (320, 240)])
def test_named_sizes_encode_the_scene(tmp_path, size):
    decoded, writer = roundtrip(tmp_path, *size)
    assert frame_difference(decoded, scene(*size)) < 10
    assert writer.verified is True


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(min_value=16, max_value=400), height=st.integers(min_value=16, max_value=300))
def test_any_size_encodes_the_scene(tmp_path, width, height):
    decoded, writer = roundtrip(tmp_path, width, height)
    assert decoded.shape[:2] == (height, width)
    assert frame_difference(decoded, scene(width, height)) < 12
    assert writer.verified is True


def test_a_sheared_encoding_is_reported(tmp_path, monkeypatch):
    # Hand GStreamer unpadded rows again (the old bug): the writer must notice, not write a blank video.
    monkeypatch.setattr(video, "gst_rgb_bytes", lambda rgb: np.ascontiguousarray(rgb).tobytes())
    with pytest.raises(EncodedFrameMismatch, match="426x240"):
        roundtrip(tmp_path, 426, 240, frames=3)


def test_replay_of_a_426x240_flight_shows_the_scene(tmp_path):
    clip = tmp_path / "flight.mp4"
    synth = SyntheticScene(426, 240, frames=6, seed=3)
    inputs = []
    with VideoWriter(clip, 426, 240, fps=10) as w:
        for i in range(6):
            inputs.append(synth.render(i)[0])
            w.write(inputs[-1])
    out = tmp_path / "out"
    r = run_cli("replay", str(clip), "--out", str(out), "--model", "colorrule")
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 6
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    shown = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = bgr[..., ::-1]
        assert rgb.std() > 10, "a flat frame"
        # the overlay tints fire and adds a caption, the rest of the frame is the scene
        assert frame_difference(rgb, inputs[shown]) < 30
        shown += 1
    assert shown == 6
