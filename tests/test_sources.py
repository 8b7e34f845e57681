"""Built-in sources: folders in order with unreadable files skipped, video files, the synthetic scene."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from firespotter.models.synthetic import SyntheticScene
from firespotter.runtime.errors import SourceError
from firespotter.runtime.sources import open_source, parse_uri
from firespotter.runtime.types import SourceState
from firespotter.runtime.video import VideoWriter


def test_parse_uri_forms(tmp_path):
    assert parse_uri("test://?frames=3&size=64x32").params == {"frames": "3", "size": "64x32"}
    assert parse_uri(f"dir://{tmp_path}").location == str(tmp_path)
    assert parse_uri(str(tmp_path)).scheme == "dir"
    f = tmp_path / "a.mp4"
    f.write_bytes(b"x")
    assert parse_uri(str(f)).scheme == "file"
    assert parse_uri("rtsp://cam.local:8554/live").location == "cam.local:8554/live"
    with pytest.raises(SourceError, match="does not exist"):
        parse_uri(str(tmp_path / "missing.mp4"))


def test_dir_source_sorted_and_skips_unreadable(tmp_path, registry, caplog):
    for name in ("c.png", "a.png", "b.jpg"):
        cv2.imwrite(str(tmp_path / name), np.full((20, 30, 3), 100, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(f"dir://{tmp_path}", registry)
    frames = list(src)
    assert [f.meta["name"] for f in frames] == ["a", "b", "c"]
    assert [f.seq for f in frames] == [0, 1, 2]
    assert frames[0].image.shape == (20, 30, 3) and frames[0].image.flags.c_contiguous
    assert src.skipped == ["broken.png"] and src.state is SourceState.ENDED
    assert "broken.png" in caplog.text


def test_video_file_source_reads_every_frame(tmp_path, registry):
    path = tmp_path / "clip.mp4"
    scene = SyntheticScene(96, 64, frames=15, seed=2)
    with VideoWriter(path, 96, 64, fps=10) as writer:
        for i in range(15):
            writer.write(scene.render(i)[0])
    src = open_source(str(path), registry)
    frames = list(src)
    assert len(frames) == 15 == src.expected_frames
    assert frames[0].image.shape == (64, 96, 3)
    # Lossy, but the picture survives: fire-red pixels stay where the scene painted them.
    assert abs(float(frames[5].image.mean()) - float(scene.render(5)[0].mean())) < 8


def test_single_image_file(tmp_path, registry):
    cv2.imwrite(str(tmp_path / "one.png"), np.zeros((10, 12, 3), np.uint8))
    assert len(list(open_source(str(tmp_path / "one.png"), registry))) == 1


def test_synthetic_scene_is_deterministic_and_masks_are_exact():
    from firespotter.models.synthetic import mask_is_exact

    a, b = SyntheticScene(128, 96, 20, seed=5), SyntheticScene(128, 96, 20, seed=5)
    for i in (0, 10, 19):
        (ia, ma), (ib, mb) = a.render(i), b.render(i)
        assert ia.tobytes() == ib.tobytes() and ma.tobytes() == mb.tobytes()
    other = SyntheticScene(128, 96, 20, seed=6).render(10)[0]
    assert other.tobytes() != a.render(10)[0].tobytes()
    # Exactness: the mask is exactly the pixels that painting the flames changed (distractors may look
    # like fire, so colour alone cannot tell; tests/test_synthetic.py has the details).
    fire_seen = 0
    for i in range(0, 20, 4):
        img, mask = a.render(i)
        assert set(np.unique(mask)) <= {0, 255}
        assert mask_is_exact(a, i)
        fire_seen += int((mask > 0).sum())
    assert fire_seen > 0


def test_test_source_carries_truth_masks_and_paces_in_live_mode(registry):
    import time

    src = open_source("test://?frames=6&size=64x64&fps=50", registry, live=True)
    t0 = time.monotonic()
    frames = list(src)
    assert time.monotonic() - t0 >= 5 / 50 * 0.9
    assert all(f.meta["truth_mask"].shape == (64, 64) for f in frames)
    replay = open_source("test://?frames=6&size=64x64&fps=1", registry, live=False)
    t0 = time.monotonic()
    assert len(list(replay)) == 6 and time.monotonic() - t0 < 2  # replay ignores the rate


def test_bad_test_uri(registry):
    with pytest.raises(SourceError, match="frames"):
        open_source("test://?frames=zero", registry)


def test_one_bounded_image_reader(tmp_path, monkeypatch):
    """runtime/images.py reads every image the project reads: RGB, grey or a mask's largest channel, any path,
    and refuses what is not an image or is too large, saying why."""
    from firespotter.runtime import images
    from firespotter.runtime.images import ImageError, read_image, read_image_or_none

    folder = tmp_path / "vols d'été"
    folder.mkdir()
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR order
    bgr[0, 0, 0] = 255  # and one blue pixel
    cv2.imwrite(str(folder / "a.png"), bgr)
    rgb = read_image(folder / "a.png")
    assert rgb.shape == (4, 6, 3) and rgb[1, 1].tolist() == [200, 0, 0]
    assert read_image(folder / "a.png", "mask")[0, 0] == 255 and read_image(folder / "a.png", "gray").shape == (4, 6)
    (folder / "b.png").write_bytes(b"not an image")
    assert read_image_or_none(folder / "b.png") is None and read_image_or_none(folder / "none.png") is None
    with pytest.raises(ImageError, match="b.png is not a readable image"):
        read_image(folder / "b.png")
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 16)
    with pytest.raises(ImageError, match=r"a.png is not a readable image: 0 MiB, over the 0 MiB"):
        read_image(folder / "a.png")
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 1 << 20)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 20)
    with pytest.raises(ImageError, match=r"6x4 pixels"):
        read_image(folder / "a.png")
