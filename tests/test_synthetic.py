"""The synthetic aerial fire scene: exact masks, determinism, spreading fires, distractors, domain shifts."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_cli
from firespotter.models.shifts import SHIFTS, apply_shift
from firespotter.models.synthetic import HIDE_OPACITY, SyntheticScene, mask_is_exact
from firespotter.plugins.commands.synth import write_flight
from firespotter.runtime.errors import SourceError
from firespotter.runtime.plugins import new_registry
from firespotter.runtime.sources import open_source


def flames_changed(scene: SyntheticScene, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixels that painting the flames changed, mask): equal when the mask is exact."""
    rgb, mask = scene.render(i)
    bare, _ = scene.render(i, paint_flames=False)
    return (rgb != bare).any(axis=2), mask > 0


def test_mask_is_exactly_the_visible_flames():
    fire_pixels = 0
    for seed in range(6):
        scene = SyntheticScene(96, 64, frames=12, seed=seed)
        for i in (0, 6, 11):
            changed, fire = flames_changed(scene, i)
            assert np.array_equal(changed, fire), f"seed {seed} frame {i}: {int((changed != fire).sum())} pixels differ"
            assert set(np.unique(scene.render(i)[1]).tolist()) <= {0, 255}
            assert mask_is_exact(scene, i)
            fire_pixels += int(fire.sum())
    assert fire_pixels > 100


def test_fires_appear_with_a_flame_gradient():
    scene = SyntheticScene(128, 96, frames=10, seed=1, fronts=1, piles=1, smoke=0.0, hover=True)
    rgb, mask = scene.render(9)
    flame = rgb[mask > 0].astype(int)
    assert len(flame) > 30
    r, g, b = flame.T
    assert (r >= g).mean() > 0.95 and (g >= b).mean() > 0.95  # flame colours throughout
    assert ((r > 240) & (g > 200)).any()  # a white-yellow core
    assert ((r > 130) & (g < 70)).any()  # a deep red edge


def test_smoke_hides_part_of_a_fire_and_the_mask_follows():
    scene = SyntheticScene(128, 96, frames=8, seed=0, fronts=1, piles=0, smoke=1.0, hover=True)
    hidden = thin = 0
    for i in range(8):
        layers = scene.layers(i)
        changed, fire = flames_changed(scene, i)
        assert np.array_equal(changed, fire)
        assert not fire[layers.hidden_flame].any()  # thick smoke: not painted, not in the mask
        under_thin_smoke = layers.flame & (layers.smoke_alpha > 0.1) & (layers.smoke_alpha < HIDE_OPACITY)
        assert fire[under_thin_smoke].all()  # thin smoke: painted, blended over, in the mask
        hidden += int(layers.hidden_flame.sum())
        thin += int(under_thin_smoke.sum())
    assert hidden > 0 and thin > 0


def test_same_seed_same_bytes_other_seed_differs():
    a, b = SyntheticScene(96, 64, 10, seed=4), SyntheticScene(96, 64, 10, seed=4)
    for i in (0, 9, 3):  # out of order too: no state carries between frames
        (ia, ma), (ib, mb) = a.render(i), b.render(i)
        assert ia.tobytes() == ib.tobytes() and ma.tobytes() == mb.tobytes()
    assert SyntheticScene(96, 64, 10, seed=5).render(3)[0].tobytes() != a.render(3)[0].tobytes()


def test_synth_command_writes_identical_files_for_one_seed(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b", tmp_path / "other"]
    for out, seed in zip(runs, (7, 7, 8)):
        stats = write_flight(out, frames=4, width=96, height=64, seed=seed, video=False)
        assert stats["frames"] == 4

    def files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}

    a, b, other = (files(r) for r in runs)
    assert len(a) == 8 and sorted(a) == sorted(b) == sorted(other)
    assert a == b
    assert any(a[k] != other[k] for k in a if k.startswith("images/"))


def test_fire_front_spreads_and_piles_grow():
    front = SyntheticScene(128, 96, frames=10, seed=2, fronts=1, piles=0, smoke=0.0, hover=True)
    area = [int((front.render(i)[1] > 0).sum()) for i in range(10)]
    assert area[-1] > 1.3 * area[0] > 0
    assert sum(area[5:]) > sum(area[:5])
    piles = SyntheticScene(128, 96, frames=10, seed=2, fronts=0, piles=1, smoke=0.0, hover=True)
    area = [int((piles.render(i)[1] > 0).sum()) for i in range(10)]
    assert sum(area[7:]) > sum(area[:3]) > 0


def test_fire_is_seen_during_a_flight():
    scene = SyntheticScene(96, 64, frames=20, seed=3)
    assert sum(bool(scene.render(i)[1].any()) for i in range(20)) >= 4


def test_distractors_fool_a_naive_colour_rule():
    fooled = 0
    for seed in range(3):
        scene = SyntheticScene(128, 96, frames=6, seed=seed, distractors=True, light="noon")
        for i in (0, 3, 5):
            rgb, mask = scene.render(i)
            r, g, b = (rgb[..., c].astype(int) for c in range(3))
            naive = (r > 150) & (r > g) & (g > b)
            fooled += int((naive & (mask == 0)).sum())
    assert fooled > 100


def test_scene_without_distractors_or_fire_leaves_the_naive_rule_mostly_quiet():
    scene = SyntheticScene(128, 96, frames=4, seed=1, n_fires=0, distractors=False, snow=False, light="noon")
    for i in range(4):
        rgb, mask = scene.render(i)
        assert not mask.any()
        r, g, b = (rgb[..., c].astype(int) for c in range(3))
        assert ((r > 150) & (r > g) & (g > b)).mean() < 0.01


@pytest.mark.parametrize("kind", SHIFTS)
def test_every_shift_changes_the_image_not_the_mask_and_is_deterministic(kind):
    plain = SyntheticScene(96, 64, frames=6, seed=3)
    shifted, again = (SyntheticScene(96, 64, frames=6, seed=3, shift=kind) for _ in range(2))
    for i in (0, 5):
        (rgb, mask), (srgb, smask), (argb, amask) = plain.render(i), shifted.render(i), again.render(i)
        assert np.array_equal(mask, smask)
        assert np.abs(rgb.astype(int) - srgb.astype(int)).mean() > 1.0, kind
        assert srgb.tobytes() == argb.tobytes()
        assert srgb.dtype == np.uint8 and srgb.shape == rgb.shape


def test_apply_shift_is_pure():
    rgb = SyntheticScene(64, 48, frames=2, seed=1).render(0)[0]
    before = rgb.copy()
    for kind in SHIFTS:
        assert apply_shift(rgb, kind, 5).tobytes() == apply_shift(rgb, kind, np.random.default_rng(5)).tobytes()
        assert apply_shift(rgb, kind, 5, strength=0.0).tobytes() == rgb.tobytes()
    assert np.array_equal(rgb, before)


def test_unknown_shift_is_a_value_error_naming_the_known_kinds():
    rgb = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="haze.*lowlight.*colorcast.*blur.*noise.*jpeg"):
        apply_shift(rgb, "bogus", 0)
    with pytest.raises(ValueError, match="bogus"):
        SyntheticScene(32, 32, shift="bogus")


def test_synth_unknown_shift_is_one_line_exit_2(tmp_path):
    r = run_cli("synth", str(tmp_path / "o"), "--frames", "2", "--size", "96x64", "--shift", "bogus")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "bogus" in lines[0] and all(k in lines[0] for k in SHIFTS)


def test_test_source_takes_a_shift():
    registry = new_registry()
    with pytest.raises(SourceError, match="bogus.*haze"):
        open_source("test://?shift=bogus", registry)
    plain = list(open_source("test://?frames=2&size=64x48&seed=2", registry))
    hazy = list(open_source("test://?frames=2&size=64x48&seed=2&shift=haze", registry))
    assert [f.image.tobytes() for f in plain] != [f.image.tobytes() for f in hazy]
    assert all(np.array_equal(p.meta["truth_mask"], h.meta["truth_mask"]) for p, h in zip(plain, hazy))


def test_synth_command_twice_gives_identical_files_including_the_video(tmp_path):
    import subprocess
    import sys
    import time

    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        r = subprocess.run([sys.executable, "-m", "firespotter", "synth", str(out), "--frames", "6", "--size", "96x64",
                            "--seed", "21", "--video"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(out)
        time.sleep(1.1)  # a muxer clock stamp would differ by now
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert any(f.name == "flight.mp4" for f in files) and len(files) == 13
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f


def test_zoom_flies_lower_fires_fill_more_of_the_frame_and_masks_stay_exact():
    # A drone close to a front sees it large: the training recipes draw such worlds (synthetic_close).
    areas = []
    for zoom in (1.0, 4.0):
        scene = SyntheticScene(160, 128, frames=10, seed=1, fronts=1, piles=0, smoke=0.0, zoom=zoom)
        rgb, mask = scene.render(5)
        assert mask_is_exact(scene, 5)
        areas.append(float((mask > 0).mean()))
    assert areas[0] > 0
    assert areas[1] > 4 * areas[0]


@pytest.mark.parametrize("zoom", [0.1, 9.0, float("nan")])
def test_zoom_outside_its_range_is_a_value_error(zoom):
    with pytest.raises(ValueError, match="zoom"):
        SyntheticScene(64, 64, zoom=zoom)


def test_training_draws_close_worlds_only_when_asked():
    from firespotter.models.training import SyntheticEpoch

    far = SyntheticEpoch(8, seed=0, epoch=0, size=(128, 128))
    near = SyntheticEpoch(8, seed=0, epoch=0, size=(128, 128), close_prob=1.0)
    assert far.scene(0).zoom == 1.0
    assert near.scene(0).zoom > 1.5
    # Same world otherwise: the zoom is drawn after everything a zoom-free epoch draws.
    assert near.scene(0).seed == far.scene(0).seed
