"""Training augmentation: deterministic, masks stay binary and aligned, crops find small fires, light mode is exact."""

from __future__ import annotations

import numpy as np
import pytest

from firespotter.models.augment import AugmentParams, augment, osd_text, resize_to


def scene(size=128):
    rng = np.random.default_rng(0)
    rgb = rng.integers(40, 120, (size, size, 3)).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[20:30, 90:100] = 255  # a big fire
    mask[100:102, 10:12] = 255  # a tiny one
    rgb[mask > 0] = (250, 160, 40)
    return rgb, mask


def test_augment_is_deterministic_and_masks_stay_binary():
    rgb, mask = scene()
    a = augment(rgb, mask, 64, np.random.default_rng(7))
    b = augment(rgb, mask, 64, np.random.default_rng(7))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for seed in range(20):
        out, m = augment(rgb, mask, 64, np.random.default_rng(seed))
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and m.shape == (64, 64)
        assert set(np.unique(m).tolist()) <= {0, 255}


def test_fire_centred_crops_see_small_fires_too():
    rgb, mask = scene()
    p = AugmentParams(scale=(1.0, 1.0), rotate=False, flip=False, fire_centred=1.0)
    tiny_seen = 0
    for seed in range(40):
        _, m = augment(rgb, mask, 32, np.random.default_rng(seed), p)
        assert m.any()  # always near a fire
        tiny_seen += int(0 < np.count_nonzero(m) <= 8)
    assert tiny_seen >= 8  # blobs are picked uniformly, not by pixel count (the big one has 25x the pixels)


def test_light_augmentation_is_exact_geometry():
    from firespotter.models.augment import geometric

    rgb, mask = scene()
    packed = set((rgb.astype(np.int64) @ np.array([65536, 256, 1])).ravel().tolist())
    for seed in range(10):
        out, m = geometric(rgb, mask, 64, np.random.default_rng(seed), AugmentParams.light())
        # Flips and right angles only: every output pixel is a source pixel, nothing interpolated.
        assert set((out.astype(np.int64) @ np.array([65536, 256, 1])).ravel().tolist()) <= packed
        assert np.count_nonzero(m) == np.count_nonzero((out == (250, 160, 40)).all(axis=2))


def test_osd_text_leaves_the_mask_alone():
    rgb, mask = scene()
    out = osd_text(rgb, np.random.default_rng(3))
    assert out.shape == rgb.shape and not np.array_equal(out, rgb)


def test_resize_to_matches_the_backends():
    rgb, mask = scene(96)
    big, m = resize_to(rgb, mask, (128, 160))
    assert big.shape == (128, 160, 3) and m.shape == (128, 160) and set(np.unique(m).tolist()) <= {0, 255}


def test_light_epochs_must_fit_the_run():
    pytest.importorskip("torch")
    from firespotter.models.training import TrainConfig, TrainingError

    with pytest.raises(TrainingError, match="--light-epochs 5 must be between 0 and --epochs 2"):
        TrainConfig(arch="fireseg-lite", synthetic=4, epochs=2, light_epochs=5, crop=64, input_size=(64, 64))


def lamp_scene(size=256):
    """A dull negative frame with one small orange lamp in a corner, and a fire frame with an orange wall."""
    rgb = np.full((size, size, 3), (70, 80, 90), np.uint8)
    rgb[200:208, 20:28] = (240, 150, 60)  # the lamp: bright, warm, not fire
    return rgb


def test_lure_centred_crops_find_the_lamp_in_a_negative():
    rgb = lamp_scene()
    lamp = np.zeros(rgb.shape[:2], np.uint8)
    lamp[200:208, 20:28] = 1
    seen = {}
    for lure in (0.0, 1.0):
        p = AugmentParams(scale=(1.0, 1.0), rotate=False, flip=False, fire_centred=0.0, lure_centred=lure, color=0.0,
                          blur=0.0, haze=0.0, noise=0.0, jpeg=0.0, osd=0.0)
        seen[lure] = sum(int(((augment(rgb, np.zeros_like(lamp), 64, np.random.default_rng(s), p)[0]
                               == (240, 150, 60)).all(axis=2)).any()) for s in range(40))
    assert seen[1.0] == 40  # every crop holds the lamp
    assert seen[0.0] <= 8  # a random 64-px crop of a 256-px frame seldom does


def test_lure_mask_leaves_out_the_fire_and_its_glow():
    from firespotter.models.augment import lure_mask

    rgb = lamp_scene()
    mask = np.zeros(rgb.shape[:2], np.uint8)
    rgb[100:120, 100:120] = (250, 160, 40)
    mask[100:120, 100:120] = 255
    lure = lure_mask(rgb, mask)
    assert lure[200:208, 20:28].all()
    assert not lure[96:124, 96:124].any()  # the flame and its surrounding ring are fire, not lures
    assert not lure_mask(np.full((32, 32, 3), (90, 160, 60), np.uint8), None).any()  # foliage is no lure


def test_settled_augmentation_keeps_the_lure_crops():
    p = AugmentParams(lure_centred=0.4)
    assert p.settled() == AugmentParams.light().__class__(**{**AugmentParams.light().__dict__, "lure_centred": 0.4})
    assert AugmentParams().settled() == AugmentParams.light()  # recipes without lures train as they did


def test_dimmed_flames_keep_their_label_and_only_the_fire_changes():
    from firespotter.models.augment import dim_flames

    rgb, mask = scene()
    out = dim_flames(rgb, mask, np.random.default_rng(0))
    fire = mask > 0
    assert (out[fire].astype(int).sum(axis=1) < rgb[fire].astype(int).sum(axis=1)).all()  # darker
    assert (out[fire][:, 0] > out[fire][:, 2]).all()  # still red over blue
    far = np.ones_like(fire)
    far[10:40, 80:110] = False
    far[92:110, 2:20] = False
    assert np.array_equal(out[far], rgb[far])  # nothing else touched
    p = AugmentParams(flame_dim=1.0)
    a, m = augment(rgb, mask, 64, np.random.default_rng(3), p)
    assert set(np.unique(m).tolist()) <= {0, 255}
