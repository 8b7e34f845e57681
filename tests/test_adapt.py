"""Test-time adaptation (issue 8): bnstats, tent, ostta on the torch backend and through ONNX Runtime."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from firespotter.models.adapt.engine import AdaptError
from firespotter.models.adapt.norm import batch_norms
from firespotter.models.adapt.objective import balanced_entropy, binary_entropy, ostta_selection
from firespotter.models.synthetic import SyntheticScene
from firespotter.runtime.assemble import bind_segmenter
from firespotter.runtime.config import ModelSettings
from firespotter.runtime.errors import ConfigError
from firespotter.runtime.options import validated_options

from conftest import run_cli

SIZE = 128


@pytest.fixture(autouse=True)
def _one_thread():
    # One intra-op thread is many times faster than two on the shared, loaded test machine.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def torch_segmenter(registry, size: int = SIZE):
    seg, _ = bind_segmenter(registry, ModelSettings(backend="torch"))
    seg.artifact = dataclasses.replace(seg.artifact, input_size=(size, size))  # fully convolutional
    return seg


def adapter(registry, name, seg, **options):
    spec = registry.get("adapters", name)
    return spec.factory(seg, validated_options(spec, options, kind="adapter", table=f"adapt.options ({name})"))


@pytest.fixture(scope="module")
def lowlight_stream():
    scene = SyntheticScene(SIZE, SIZE, frames=24, seed=3, n_fires=3, shift="lowlight")
    return [scene.render(i) for i in range(24)]


def stream_iou(seg, frames, ad=None, skip: int = 8) -> float:
    inter = union = 0
    for i, (rgb, mask) in enumerate(frames):
        pred = seg.predict(rgb[None])[0] >= 0.5
        if i >= skip:  # score once the statistics had a few frames to move
            inter += int((pred & (mask > 0)).sum())
            union += int((pred | (mask > 0)).sum())
        if ad is not None:
            ad.observe(rgb[None], None)
    return inter / max(union, 1)


def test_adapters_are_registered(registry):
    assert {"bnstats", "tent", "ostta"} <= set(registry.specs("adapters"))


@pytest.fixture(scope="module")
def control_stream():
    scene = SyntheticScene(SIZE, SIZE, frames=16, seed=4, n_fires=3)
    return [scene.render(i) for i in range(16)]


def predictions(seg, frames, ad=None) -> list[np.ndarray]:
    out = []
    for rgb, _ in frames:
        out.append(seg.predict(rgb[None])[0])
        if ad is not None:
            ad.observe(rgb[None], None)
    return out


def test_bnstats_and_ostta_improve_iou_on_a_shifted_stream(registry, lowlight_stream):
    none = stream_iou(torch_segmenter(registry), lowlight_stream)
    results, shift = {}, {}
    for name in ("bnstats", "ostta"):
        seg = torch_segmenter(registry)
        ad = adapter(registry, name, seg, alpha=0.2, every=2)  # the default shift detector decides when
        results[name] = stream_iou(seg, lowlight_stream, ad)
        shift[name] = ad.summary()["shift"]
        ad.close()
    # An adapter that did nothing scores exactly `none`.
    assert results["bnstats"] > none + 0.05, (none, results, shift)
    assert results["ostta"] > none + 0.05, (none, results, shift)
    assert shift["bnstats"]["shifted_frames"] > 0 and shift["bnstats"]["distance"] > shift["bnstats"]["threshold"]


def test_bnstats_with_alpha_zero_reproduces_none_exactly(registry, lowlight_stream):
    frames = lowlight_stream[:6]
    ref = predictions(torch_segmenter(registry), frames)
    seg = torch_segmenter(registry)
    ad = adapter(registry, "bnstats", seg, alpha=0.0, threshold=0.0)  # no detector: adapting from frame 1
    got = predictions(seg, frames, ad)
    ad.close()
    assert all(np.array_equal(a, b) for a, b in zip(ref, got))
    seg = torch_segmenter(registry)  # and alpha > 0 does change them (the comparison can fail)
    ad = adapter(registry, "bnstats", seg, alpha=0.05, threshold=0.0)
    assert not np.array_equal(predictions(seg, frames, ad)[-1], ref[-1])
    ad.close()


def test_bnstats_every_n_measures_only_every_nth_frame(registry, lowlight_stream):
    """`every = 3`: the statistics move on frames 1, 4, 7, ... and stay put on the frames in between."""
    seg = torch_segmenter(registry)
    ad = adapter(registry, "bnstats", seg, threshold=0.0, every=3)
    bn = batch_norms(seg.module)[1][1]
    changed = []
    for rgb, _ in lowlight_stream[:7]:
        before = bn.running_mean.clone()
        seg.predict(rgb[None])
        ad.observe(rgb[None], None)
        changed.append(not torch.equal(before, bn.running_mean))
    ad.close()
    assert changed == [True, False, False, True, False, False, True]


def test_shadow_measures_only_the_first_layer_until_a_shift_is_detected(registry, lowlight_stream):
    """A shadow's statistics-only forward stops after the first BN layer while no shift is detected (the
    detector still gets its distance); with the detector off it runs the whole network."""
    from firespotter.models.adapt.engine import TTAConfig, TTAEngine, to_input

    for threshold, expected in ((1e9, 0), (0.0, 3)):
        seg = torch_segmenter(registry)
        engine = TTAEngine(seg.module, TTAConfig.from_options("bnstats", {"threshold": threshold}),
                           stats_in_forward=False)
        finished = []
        handle = seg.module.logit.register_forward_hook(lambda *_: finished.append(1))
        for rgb, _ in lowlight_stream[:3]:
            engine.observe(to_input(rgb[None], (SIZE, SIZE), seg.artifact.mean, seg.artifact.std, "cpu"))
        handle.remove()
        engine.close()
        assert len(finished) == expected, threshold
        if threshold:
            assert engine.stats.distance is not None and engine.stats.frames == 3


def test_unshifted_stream_keeps_the_source_model(registry, control_stream):
    """Control safety: on an unshifted stream the detector stays below its threshold, so every adapter
    serves the source model exactly (no statistics moved, no gradient step)."""
    ref = predictions(torch_segmenter(registry), control_stream)
    for name in ("bnstats", "ostta"):
        seg = torch_segmenter(registry)
        source = _norm_state(seg.module)
        ad = adapter(registry, name, seg)
        got = predictions(seg, control_stream, ad)
        s = ad.summary()
        ad.close()
        assert s["shift"]["shifted_frames"] == 0 and s["shift"]["distance"] < s["shift"]["threshold"], s
        assert s.get("updates", 0) == 0
        assert all(np.array_equal(a, b) for a, b in zip(ref, got)), name
        assert all(torch.equal(source[k], v) for k, v in _norm_state(seg.module).items())


def test_shift_gone_restores_the_source_state_exactly(registry, lowlight_stream, control_stream):
    seg = torch_segmenter(registry)
    source = _norm_state(seg.module)
    ad = adapter(registry, "ostta", seg, detect_smoothing=0.5)
    predictions(seg, lowlight_stream[:6], ad)
    assert ad.engine.stats.active and ad.engine.updates > 0  # the shift was detected and adapted to
    assert any(not torch.equal(source[k], v) for k, v in _norm_state(seg.module).items())
    predictions(seg, control_stream[:8], ad)
    s = ad.summary()
    ad.close()
    assert not ad.engine.stats.active and s["reset_reasons"]["shift_gone"] == 1, s
    assert all(torch.equal(source[k], v) for k, v in _norm_state(seg.module).items())


def _norm_state(module):
    return {f"{n}.{k}": getattr(bn, k).detach().clone() for n, bn in batch_norms(module)
            for k in ("weight", "bias", "running_mean", "running_var")}


def test_ostta_update_moves_norm_parameters_and_reset_restores_them_exactly(registry, lowlight_stream):
    seg = torch_segmenter(registry)
    source = _norm_state(seg.module)
    ad = adapter(registry, "ostta", seg, threshold=0.0)  # no detector: a step on every frame
    for rgb, _ in lowlight_stream[:3]:
        seg.predict(rgb[None])
        rec = ad.observe(rgb[None], None)
    assert rec["update"] == 3 and rec["moved"] > 0 and 0 < rec["selected"] <= 1
    now = _norm_state(seg.module)
    changed = {k for k in source if not torch.equal(source[k], now[k])}
    assert any(k.endswith(".weight") and k.startswith("stages.1") for k in changed)  # gamma moved
    assert not any(k.startswith(("stages.4", "head")) and k.endswith((".weight", ".bias")) for k in changed)  # frozen
    assert any(k.endswith("running_mean") for k in changed)  # EMA statistics moved too
    ad.engine.reset()
    assert all(torch.equal(source[k], v) for k, v in _norm_state(seg.module).items())
    assert ad.resets == 1
    ad.close()


def test_selection_matches_a_hand_computed_example():
    p_o = torch.tensor([0.9, 0.9, 0.2, 0.2, 0.6, 0.97])
    p_a = torch.tensor([0.95, 0.85, 0.1, 0.3, 0.99, 0.97])
    keep, fire = ostta_selection(p_a, p_o)
    # original classes: fire, fire, bg, bg, fire, fire; confidence in them fell at 1 and 3;
    # pixel 2 kept its class (0.9 >= 0.8) but is unreliable: H(0.1) = 0.325 > 0.4 ln 2 = 0.277.
    assert fire.tolist() == [True, True, False, False, True, True]
    assert keep.tolist() == [True, False, False, False, True, True]
    assert math.isclose(float(binary_entropy(torch.tensor(0.1))), 0.3251, abs_tol=1e-3)
    ent = torch.tensor([1.0, 2.0, 3.0, 4.0])
    loss = balanced_entropy(ent, torch.tensor([True, True, True, False]), torch.tensor([True, False, False, True]))
    assert math.isclose(float(loss), (1.0 + 2.5) / 2)  # fire mean 1, background mean 2.5, averaged


def test_bad_options_name_the_option(registry):
    seg = torch_segmenter(registry)
    with pytest.raises(ConfigError, match=r"adapt.options \(bnstats\): alpha: .*less than or equal to 1 \(got 3\)"):
        adapter(registry, "bnstats", seg, alpha=3)
    with pytest.raises(ConfigError, match="blend_max"):
        adapter(registry, "bnstats", seg, blend_max=2)
    with pytest.raises(ConfigError, match="unknown key 'lrr'; did you mean 'lr'"):
        adapter(registry, "ostta", seg, lrr=0.1)
    with pytest.raises(ConfigError, match=r"every: Input should be a valid integer"):
        adapter(registry, "tent", seg, every="often")


def test_a_segmenter_without_the_capability_cannot_be_adapted(registry):
    """Adapters use the segmenter's declared capability (adaptable()), never its internals: a backend that
    declares none (numpy here; tensorrt's compiled engines too) gets a clear error, not a crash mid-flight."""
    seg, _ = bind_segmenter(registry, ModelSettings(name="colorrule"))
    assert seg.adaptable() is None and not seg.frame_head
    with pytest.raises(AdaptError, match="cannot adapt a CallableSegmenter.*needs the torch or onnxruntime"):
        adapter(registry, "bnstats", seg)


def _ort_replay(tmp_path, adapt_options: str, n: int, seed: int) -> tuple[dict, Path]:
    """Replay a synthetic flight on onnxruntime with bnstats and `adapt_options`; -> (summary, output folder)."""
    config = tmp_path / "c.toml"
    config.write_text('[model]\nbackend = "onnxruntime"\nbackend_options = { threads = 1 }\n'
                      f'[adapt]\nname = "bnstats"\noptions = {{ {adapt_options} }}\n')
    out = tmp_path / "out"
    r = run_cli("replay", f"test://?frames={n}&size=128x128&seed={seed}", "--out", str(out), "-c", str(config),
                "--no-overlay", "--no-report", timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads((out / "summary.json").read_text()), out


def test_onnxruntime_replay_swaps_sessions_without_dropping_frames(tmp_path):
    n = 8
    s, out = _ort_replay(tmp_path, "push_interval_s = 0, threshold = 0, sync = true", n, seed=5)
    assert s["frames"] == s["frames_in"] == n and s["dropped"] == 0 and s["infer_errors"] == 0
    [a] = s["adapters"]
    # sync: every frame adapts the shadow and its session is swapped in before the next frame (deterministic);
    # without it the shadow samples the stream on its own thread and how many swaps land depends on timing.
    assert a["name"] == "bnstats" and a["sync"] and a["push_errors"] == 0
    assert a["shadow_frames"] == n and a["shadow_skipped"] == 0 and a["swaps"] == n
    assert sorted(json.loads(l)["seq"] for l in (out / "events.jsonl").read_text().splitlines()) == list(range(n))


def test_onnxruntime_shadow_rebuilds_no_session_while_the_flight_is_unshifted(tmp_path):
    """The detector keeps the shadow at the source state, so there is nothing to push: no session rebuilds."""
    n = 6
    [a] = _ort_replay(tmp_path, "push_interval_s = 0, sync = true", n, seed=4)[0]["adapters"]
    assert a["shadow_frames"] == n and a["swaps"] == 0, a


def test_replay_adapt_option_runs_ostta_and_reports_it(tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "c.toml"
    # input_size: the torch backend runs the fully convolutional network at 128 px, not the model's 512.
    config.write_text('[model]\nbackend_options = { threads = 1, input_size = 128 }\n'
                      '[adapt]\noptions = { threshold = 0 }\n')
    r = run_cli("replay", "test://?frames=2&size=128x128&seed=2", "--out", str(out), "--backend", "torch",
                "-c", str(config), "--adapt", "ostta", "--no-overlay", timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    [a] = s["adapters"]
    assert a["name"] == "ostta" and a["updates"] == 2 and a["max_moved"] > 0
    html = (out / "report.html").read_text()
    assert "Test-time adaptation" in html and "mean_selected" in html


def test_default_adapter_is_bnstats():
    """ostta did not beat bnstats by a point on the shifted streams (docs/adaptation.md), so "default" is bnstats."""
    from firespotter.models.adapt.engine import TTAConfig
    from firespotter.runtime.config import AdaptSettings, apply_overrides, load_settings

    assert AdaptSettings(name="default").name == "bnstats" and AdaptSettings().name is None
    assert apply_overrides(load_settings(None), {"adapt.name": "default"}).adapt.name == "bnstats"
    assert TTAConfig().method == "bnstats"


def test_unknown_adapter_is_a_clear_error(registry):
    with pytest.raises(Exception, match="tentt"):
        registry.get("adapters", "tentt")
