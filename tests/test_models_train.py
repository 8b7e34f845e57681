"""fireseg networks: architectures, training (loss goes down, checkpoints load, resume is exact), export parity,
both backends agree, the frame head and its gate, and bad input that gets a clear one-line error.

Everything is tiny (64x64 frames, a few steps) so the file runs in well under a minute on 2 cores."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the fireseg tests need torch (pip install 'firespotter[torch]')")

from firespotter.models.arch import ArchitectureError, build, count_flops, count_params  # noqa: E402
from firespotter.models.datasets import DatasetError  # noqa: E402
from firespotter.models.export import (ModelFormatError, check_parity, export_onnx,  # noqa: E402
                                       frames_for_parity)
from firespotter.models.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from firespotter.models.training import TrainConfig, TrainingError, train  # noqa: E402
from firespotter.models.zoo import ModelFileError  # noqa: E402
from firespotter.plugins.commands.synth import write_flight  # noqa: E402
from firespotter.runtime.assemble import bind_segmenter  # noqa: E402
from firespotter.runtime.config import ModelSettings  # noqa: E402
from firespotter.runtime.images import read_image  # noqa: E402
from firespotter.runtime.errors import FirespotterError  # noqa: E402
from firespotter.runtime.plugins import new_registry  # noqa: E402

torch.set_num_threads(1)  # tiny networks: one thread is fastest, and never oversubscribes a busy 2-core machine


def cli(capsys, *args: str):
    """The real CLI entry point, in process (no interpreter start-up): -> (exit code, stdout, stderr)."""
    from firespotter.runtime.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def tiny_cfg(data, **kw) -> TrainConfig:
    base = dict(arch="fireseg-lite", data=[str(d) for d in (data if isinstance(data, list) else [data])], epochs=2, repeat=4, batch=4, crop=64, input_size=(64, 64),
                synthetic=4, seed=1, lr=5e-3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny synthetic dataset and a model trained on it for two epochs, exported to ONNX."""
    root = tmp_path_factory.mktemp("fireseg")
    write_flight(root / "data", frames=6, width=64, height=64, seed=5, video=False)
    result = train(tiny_cfg(root / "data"), root / "run")
    ckpt = load_checkpoint(result.checkpoint)
    paths = export_onnx(ckpt, root / "run", "model")
    return {"root": root, "data": root / "data", "run": root / "run", "result": result, "ckpt": ckpt, "paths": paths}


def frames_of(folder, n=6):
    paths = sorted((folder / "images").glob("*.png"))[:n]
    return [read_image(p) for p in paths]


# --------------------------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("arch", ["fireseg-lite", "fireseg-unet"])
def test_architectures_output_a_mask_and_a_frame_logit(arch):
    torch.manual_seed(0)
    model = build(arch).eval()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # TTA and QAT need norm layers
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        mask, fire = model(x)
        fire2, skips = model.encode(x)
        mask2 = model.decode(skips)
    assert mask.shape == (2, 1, 64, 64) and fire.shape == (2, 1)
    assert torch.equal(mask, mask2) and torch.equal(fire, fire2)


def test_architecture_sizes():
    lite, unet = build("fireseg-lite"), build("fireseg-unet")
    assert 0.2e6 < count_params(lite) < 0.6e6
    assert 1.5e6 < count_params(unet) < 2.5e6  # the FLAME U-Net's 16-32-64-128-256 shape
    # Convolution FLOPs scale with the pixel count: 64x64 x 64 = 512x512.
    assert 0.6e9 < count_flops(lite, (64, 64)) * 64 < 1.0e9  # 0.78 GFLOP at 512x512
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in lite.modules())  # ORT quantizes no ConvTranspose


def test_unknown_architecture():
    with pytest.raises(ArchitectureError, match="unknown architecture 'fireseg-lit'.*did you mean 'fireseg-lite'"):
        build("fireseg-lit")


# --------------------------------------------------------------------------------------------- training


def test_two_epochs_lower_the_loss_and_write_a_loadable_checkpoint(tiny):
    history = tiny["result"].history
    assert len(history) == 2 and history[1]["loss"] < history[0]["loss"]
    ckpt = tiny["ckpt"]
    assert ckpt["arch"] == "fireseg-lite" and ckpt["input_size"] == [64, 64] and ckpt["seed"] == 1
    model = model_from_checkpoint(ckpt)
    with torch.no_grad():
        mask, fire = model(torch.zeros(1, 3, 64, 64))
    assert mask.shape == (1, 1, 64, 64)
    record = json.loads((tiny["run"] / "train.json").read_text())
    assert record["data"]["real_frames"] == 6 and len(record["data"]["files"]) == 6
    assert all(f["image"].startswith("images/") and len(f["sha256"]) == 64 for f in record["data"]["files"])
    assert record["data"]["synthetic"]["frames_per_epoch"] == 4


def test_resume_continues_exactly(tiny, tmp_path):
    cfg = tiny_cfg(tiny["data"])

    class Stop(Exception):
        pass

    def stop_after_first_epoch(ev):
        if ev.get("end_of_epoch") and ev["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tmp_path, on_progress=stop_after_first_epoch)
    assert not (tmp_path / "model.pt").exists() and (tmp_path / "last.pt").exists()
    resumed = train(cfg, tmp_path, resume=True)
    assert resumed.resumed_from_epoch == 0
    a = load_checkpoint(tiny["run"] / "model.pt")["model"]
    b = load_checkpoint(tmp_path / "model.pt")["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    with pytest.raises(TrainingError, match="other settings"):
        train(tiny_cfg(tiny["data"], lr=1e-3), tmp_path, resume=True)


def test_amp_training_is_recorded(tiny, tmp_path):
    result = train(tiny_cfg(tiny["data"], epochs=1, repeat=1, synthetic=0, amp=True), tmp_path)
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["amp"] == "bf16" and ckpt["config"]["amp"] is True
    assert np.isfinite(result.history[0]["loss"])


# --------------------------------------------------------------------------------------------- export + backends


def test_export_matches_pytorch_on_frames(tiny):
    frames, desc = frames_for_parity(tiny["ckpt"])
    assert "real frames (training images)" in desc  # the checkpoint knows what it was trained on
    parity = check_parity(tiny["ckpt"], tiny["paths"], frames)
    assert parity["max_abs_diff_prob"] < 1e-4 and parity["max_abs_diff_score"] < 1e-4


def bind(weights, backend="auto", **backend_options):
    return bind_segmenter(new_registry(), ModelSettings(name="fireseg-lite", backend=backend,
                                                        options={"weights": str(weights)},
                                                        backend_options={"threads": 1, **backend_options}))


def test_onnxruntime_and_torch_backends_agree(tiny):
    ort_seg, ort_name = bind(tiny["run"])
    torch_seg, torch_name = bind(tiny["run"], backend="torch")
    assert (ort_name, torch_name) == ("onnxruntime", "torch")  # auto picks ONNX Runtime
    batch = np.stack(frames_of(tiny["data"]))
    p1, s1 = ort_seg.predict_scored(batch)
    p2, s2 = torch_seg.predict_scored(batch)
    assert p1.shape == p2.shape == (6, 64, 64) and s1.shape == s2.shape == (6,)
    assert np.abs(p1 - p2).max() < 1e-4 and np.abs(s1 - s2).max() < 1e-4
    assert ort_seg.info()["frame_head"] and torch_seg.info()["device"] == "cpu"


def weights_config(tiny, name="cfg.toml"):
    cfg = tiny["root"] / name
    cfg.write_text(f'[model]\noptions = {{weights = "{tiny["run"]}"}}\nbackend_options = {{threads = 1}}\n')
    return cfg


def test_eval_on_both_backends_agrees_within_half_an_iou_point(tiny, capsys):
    cfg = weights_config(tiny)
    reports = []
    for backend in ("onnxruntime", "torch"):
        out = tiny["root"] / f"eval-{backend}.json"
        code, _, err = cli(capsys, "eval", str(tiny["data"]), "--model", "fireseg-lite", "--backend", backend,
                           "-c", str(cfg), "--threshold", "0.3", "--json", str(out))
        assert code == 0, err
        reports.append(json.loads(out.read_text()))
    a, b = reports
    assert (a["backend"], b["backend"]) == ("onnxruntime", "torch")
    assert abs((a["iou"] or 0.0) - (b["iou"] or 0.0)) <= 0.005
    assert a["counts"]["tp"] + a["counts"]["fp"] > 0  # something was called fire: the agreement is not 0 == 0
    assert a["frame_head"]["n_frames"] == 6


def test_gate_skips_the_decoder_on_fire_free_frames(tiny):
    batch = np.stack(frames_of(tiny["data"]))
    plain, scores = bind(tiny["run"])[0].predict_scored(batch)
    for backend in ("onnxruntime", "torch"):
        never = bind(tiny["run"], backend=backend, gate=True, gate_threshold=0.0)[0]
        p, s = never.predict_scored(batch)
        assert np.abs(p - plain).max() < 1e-4 and never.info()["decoder_skipped"] == 0
        always = bind(tiny["run"], backend=backend, gate=True, gate_threshold=1.01)[0]
        p, s = always.predict_scored(batch)
        assert not p.any() and always.info()["decoder_skipped"] == 6
        assert np.abs(s - scores).max() < 1e-4  # the score is still reported
        middle = float(np.median(scores))
        some = bind(tiny["run"], backend=backend, gate=True, gate_threshold=middle)[0]
        p, _ = some.predict_scored(batch)
        kept = scores >= middle
        assert np.abs(p[kept] - plain[kept]).max() < 1e-4 and not p[~kept].any()


def test_torch_backend_amp(tiny):
    seg, _ = bind(tiny["run"], backend="torch", amp=True)
    assert seg.precision.precision_exec == "bf16"
    batch = np.stack(frames_of(tiny["data"], 2))
    p = seg.predict(batch)
    ref = bind(tiny["run"], backend="torch")[0].predict(batch)
    assert p.dtype == np.float32 and np.abs(p - ref).max() < 0.1


def test_tampered_model_file_is_refused(tiny, tmp_path, capsys):
    code, out, err = cli(capsys, "export", str(tiny["run"] / "model.pt"), "--out", str(tmp_path), "--name",
                         "fireseg-lite")
    assert code == 0, err
    assert "max |dp|" in out
    manifest = json.loads((tmp_path / "fireseg-lite.json").read_text())
    assert set(manifest["files"]) == {"onnx", "encoder", "decoder", "torch"}
    assert manifest["training"]["seed"] == 1 and manifest["training"]["epochs"] == 2
    assert manifest["export"]["parity"]["max_abs_diff_prob"] < 1e-4
    seg, _ = bind(tmp_path / "fireseg-lite.json")
    assert seg.model_id == manifest["model_id"]
    data = bytearray((tmp_path / "fireseg-lite.onnx").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "fireseg-lite.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match its manifest"):
        bind(tmp_path / "fireseg-lite.json")


# --------------------------------------------------------------------------------------------- bad input


def test_training_folder_without_masks(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((64, 64, 3), np.uint8))
    code, _, err = cli(capsys, "train", "--arch", "fireseg-lite", "--data", str(tmp_path), "--epochs", "1", "--out",
                       str(tmp_path / "out"))
    assert code == 2 and "has images/ but no masks/" in err and "--negatives" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_training_masks_of_the_wrong_size(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((64, 64, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "masks" / "a.png"), np.zeros((32, 48), np.uint8))
    with pytest.raises(DatasetError, match=r"mask .*a.png is 48x32 but its image a.png is 64x64"):
        train(tiny_cfg(tmp_path, synthetic=0), tmp_path / "out")


def test_unknown_architecture_on_the_command_line(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--arch", "fireseg-huge", "--synthetic", "4", "--epochs", "1", "--out",
                       str(tmp_path))
    assert code == 2 and err.startswith("error: unknown architecture 'fireseg-huge'") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_augment_override_names_the_setting(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--arch", "fireseg-lite", "--synthetic", "4", "--epochs", "1",
                       "--augment", "hazy=0", "--out", str(tmp_path))
    assert code == 2 and "--augment 'hazy=0'" in err and "haze" in err and "Traceback" not in err
    code, _, err = cli(capsys, "train", "--arch", "fireseg-lite", "--synthetic", "4", "--epochs", "1",
                       "--augment", "scale=2", "--out", str(tmp_path))
    assert code == 2 and "LOW,HIGH" in err
    code, _, err = cli(capsys, "train", "--arch", "fireseg-lite", "--synthetic", "4", "--epochs", "1",
                       "--synthetic-shifts", "1.5", "--out", str(tmp_path))
    assert code == 2 and "--synthetic-shifts 1.5" in err


def test_augment_overrides_reach_the_training_config():
    from firespotter.plugins.commands.train import _augment_overrides

    assert _augment_overrides(["haze=0", "blur=0.1", "flip=false", "scale=0.8,1.25"]) == {
        "haze": 0.0, "blur": 0.1, "flip": False, "scale": (0.8, 1.25)}


def _onnx_file(path, in_shape, out_shape):
    import onnx
    from onnx import TensorProto, helper

    if len(out_shape) == 2:  # a classifier: mean over the image
        node = helper.make_node("ReduceMean", ["x"], ["y"], keepdims=0, axes=[2, 3])
    else:
        node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_file_that_is_not_a_fire_model(tmp_path, capsys):
    classifier = _onnx_file(tmp_path / "classifier.onnx", [1, 3, 64, 64], [1, 3])  # N×classes, not a map
    with pytest.raises(ModelFormatError, match=r"not a fire segmentation model: its output 'y' is \[1, 3\]"):
        bind(classifier)
    grey = _onnx_file(tmp_path / "grey.onnx", [1, 1, 64, 64], [1, 1, 64, 64])  # one-channel input
    with pytest.raises(ModelFormatError, match=r"its input 'x' is \[1, 1, 64, 64\]; expected N×3×H×W"):
        bind(grey)
    code, _, err = cli(capsys, "eval", str(tmp_path), "--model", "fireseg-lite", "--negatives", "-c",
                       str(_cfg(tmp_path, classifier)))
    assert code == 2 and "not a fire segmentation model" in err and len(err.strip().splitlines()) == 1


def _cfg(tmp_path, weights):
    cv2.imwrite(str(tmp_path / "frame.png"), np.zeros((64, 64, 3), np.uint8))
    path = tmp_path / "cfg.toml"
    path.write_text(f'[model]\noptions = {{weights = "{weights}"}}\n')
    return path


def test_missing_weights_and_errors_are_firespotter_errors(tmp_path):
    with pytest.raises(ModelFileError, match="do not exist"):
        bind(tmp_path / "nope.onnx")
    with pytest.raises(ModelFileError, match="holds no model"):
        bind(tmp_path)
    assert issubclass(ModelFileError, FirespotterError) and issubclass(ModelFormatError, FirespotterError)
    with pytest.raises(ModelFileError, match="no shipped weights"):
        bind_segmenter(new_registry(), ModelSettings(name="fireseg-unet"))


def test_eval_reports_frame_accuracy_on_classification_folders(tiny, tmp_path, capsys):
    frames = frames_of(tiny["data"])
    for split in ("Training", "Test"):
        for cls, imgs in (("Fire", frames[:2]), ("No_Fire", frames[2:4])):
            (tmp_path / split / cls).mkdir(parents=True)
            for i, im in enumerate(imgs):
                cv2.imwrite(str(tmp_path / split / cls / f"{cls}_{i}.jpg"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    out = tmp_path / "cls.json"
    code, stdout, err = cli(capsys, "eval", str(tmp_path), "--model", "fireseg-lite", "-c",
                            str(weights_config(tiny, "cfg-cls.toml")), "--json", str(out))
    assert code == 0, err
    report = json.loads(out.read_text())["classification"]
    assert report["n_frames"] == 8 and report["n_fire"] == 4 and report["score_source"] == "frame head"
    assert 0.0 <= report["accuracy"] <= 1.0 and "frame accuracy" in stdout


def test_training_with_flame_classification_folders(tiny, tmp_path):
    """FLAME-layout classification folders train the frame head (and, for No_Fire, the mask: no fire anywhere)."""
    from firespotter.models.training import collect, find_classified

    frames = frames_of(tiny["data"], 4)
    for split in ("Training", "Test"):
        for cls, imgs in (("Fire", frames[:2]), ("No_Fire", frames[2:])):
            (tmp_path / "cls" / split / cls).mkdir(parents=True)
            for i, im in enumerate(imgs):
                cv2.imwrite(str(tmp_path / "cls" / split / cls / f"{split}{cls}{i}.png"), im[..., ::-1])
    (tmp_path / "cls" / "Test" / "No_Fire" / "smoke_masks").mkdir()  # mask folders are not images to classify
    cv2.imwrite(str(tmp_path / "cls" / "Test" / "No_Fire" / "smoke_masks" / "m.png"), frames[0][..., 0])
    found = find_classified(tmp_path / "cls")
    assert len(found) == 8 and sum(label for _, label in found) == 4
    items = collect([tiny["data"], tmp_path / "cls"], exclude=["Test*"])
    assert {it.kind for it in items} == {"pair", "fire-frame", "no-fire-frame"} and len(items) == 10
    result = train(tiny_cfg([tiny["data"], tmp_path / "cls"], exclude=["Test*"], epochs=1, repeat=1, synthetic=0),
                   tmp_path / "run")
    record = json.loads((tmp_path / "run" / "train.json").read_text())
    assert record["data"]["by_kind"] == {"pair": 6, "fire-frame": 2, "no-fire-frame": 2}
    assert np.isfinite(result.history[0]["loss"])


def test_fine_tuning_into_a_grown_network_records_what_was_added(tiny, tmp_path):
    cfg = tiny_cfg(tiny["data"], epochs=1, repeat=1, synthetic=0, init=str(tiny["run"] / "model.pt"),
                   arch_kwargs={"context": True})
    ckpt = load_checkpoint(train(cfg, tmp_path).checkpoint)
    assert ckpt["arch_kwargs"] == {"context": True}
    assert ckpt["data"]["init"]["added"] == ["context"]
    # The plain layout cannot be fine-tuned from the grown one: that would drop a learnt module.
    with pytest.raises(Exception, match="do not fit"):
        train(tiny_cfg(tiny["data"], epochs=1, repeat=1, synthetic=0, init=str(tmp_path / "model.pt")),
              tmp_path / "back")


def test_head_refit_after_training_and_on_resuming_a_finished_run(tiny, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny["run"], run)
    # The finished run, resumed with head_refit: the epochs are not run again, only what comes after them.
    result = train(tiny_cfg(tiny["data"], head_refit=True), run, resume=True)
    assert result.resumed_from_epoch == 1
    ckpt = load_checkpoint(result.checkpoint)
    refit = ckpt["head_refit"]
    assert refit["frames"] == 2 * 6 + 80  # every training frame and its mirror image, plus synthetic frames
    assert refit["accuracy_after"] >= refit["accuracy_before"]
    before = tiny["ckpt"]["model"]
    assert all(torch.equal(before[k], v) for k, v in ckpt["model"].items() if not k.startswith("head.fc."))
    with pytest.raises(TrainingError, match="other settings"):  # what the epochs compute still may not change
        train(tiny_cfg(tiny["data"], head_refit=True, lr=1e-3), run, resume=True)


def test_resuming_a_checkpoint_older_than_a_setting_reads_the_setting_as_its_default(tiny, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny["run"], run)
    last = torch.load(run / "last.pt", weights_only=True)
    for key in ("synthetic_close", "head_refit", "val_sets"):  # written before these settings existed
        last["config"].pop(key)
    torch.save(last, run / "last.pt")
    assert train(tiny_cfg(tiny["data"]), run, resume=True).resumed_from_epoch == 1
    with pytest.raises(TrainingError, match="synthetic_close"):  # not the default: the epochs would differ
        train(tiny_cfg(tiny["data"], synthetic_close=0.5), run, resume=True)
