"""INT8 PTQ and QAT graphs run in ONNX Runtime, the tensorrt profile is symmetric int8, the gate refuses a
broken artifact, and bad calibration input gets a clear message. Small (128 px) graphs, few real frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from firespotter.models.quant import QuantError
from firespotter.models.quant.calibration import check_frames, to_inputs
from firespotter.models.quant.gate import GateError, check_at_load, enforce, measure, onnx_predictor
from firespotter.models.quant.ptq import qdq_zero_points
from firespotter.models.variants import BuildRequest, get_variant, variants
from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.images import read_image

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "firespotter" / "models" / "zoo"
DEV = ROOT.parent / "shared" / "data" / "fire-real" / "dev"
SIZE = (128, 128)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """fireseg-lite's zoo weights exported at 128x128 (the nets are fully convolutional)."""
    from firespotter.models.quant.builders import export_fp32
    from firespotter.models.checkpoint import load_checkpoint, model_from_checkpoint

    out = tmp_path_factory.mktemp("src") / "lite128.onnx"
    model = model_from_checkpoint(load_checkpoint(ZOO / "fireseg-lite.pt")).float().eval()
    return export_fp32(model, out, SIZE, ZOO / "fireseg-lite.onnx")


@pytest.fixture(scope="module")
def frames():
    if not (DEV / "images").is_dir():
        pytest.skip(f"real calibration frames not found at {DEV} (a fresh clone has no ../shared)")
    return [read_image(p)
            for p in sorted((DEV / "images").glob("flame1_t00*.png"))[::8][:3]]  # training split only


def _build(precision, source, frames, out, options=None):
    out.mkdir()
    req = BuildRequest(source, ZOO / "fireseg-lite.pt", out, frames, SIZE, MEAN, STD, dict(options or {}),
                       lambda line: None)
    return get_variant(precision).build(req)


def _run(path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})


def _prob(logits):
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def test_variants_registered_with_labels():
    v = variants()
    for name in ("int8", "int8-qat", "sq-w8", "w8", "w4", "sq-w4", "w2", "sq-w2"):
        assert name in v
    assert v["int8"].labels.as_dict() == {"precision_exec": "int8", "weight_bits": 8, "simulated": False}
    assert v["sq-w4"].labels.simulated and v["sq-w4"].labels.weight_bits == 4
    assert v["w2"].labels.simulated and v["w2"].labels.precision_exec == "fp32"


@pytest.mark.parametrize("profile", ["cpu", "tensorrt"])
def test_ptq_runs_and_tensorrt_profile_is_symmetric_int8(source, frames, tmp_path, profile):
    res = _build("int8", source, frames, tmp_path / profile, {"profile": profile})
    x = to_inputs(frames[:1], SIZE, MEAN, STD)
    ref, out = _run(source, x)[0], _run(res.files["onnx"], x)[0]
    assert out.shape == ref.shape and np.isfinite(out).all()
    assert np.mean((_prob(out) > 0.5) == (_prob(ref) > 0.5)) > 0.99
    zps = qdq_zero_points(res.files["onnx"])
    assert zps and res.info["weights_int8"] > 30
    if profile == "tensorrt":
        assert all(dtype == "int8" and set(v) == {0} for _, dtype, v in zps)
    else:
        assert any(dtype == "uint8" for _, dtype, _ in zps)


def test_qat_one_step_exports_symmetric_qdq(source, frames, tmp_path):
    res = _build("int8-qat", source, frames, tmp_path / "qat",
                 {"qat_steps": 1, "qat_batch": 2, "qat_crop": 64, "qat_synthetic": 0, "profile": "tensorrt"})
    assert res.info["qat"]["steps"] == 1 and "fake-quantize" in res.info["qat"]["route"]
    x = to_inputs(frames[:1], SIZE, MEAN, STD)
    out = _run(res.files["onnx"], x)[0]
    assert np.isfinite(out).all()
    assert all(dtype == "int8" and set(v) == {0} for _, dtype, v in qdq_zero_points(res.files["onnx"]))


def _pairs(tmp_path, n=3):
    from firespotter.models.datasets import find_pairs
    from firespotter.models.synthetic import SyntheticScene

    (tmp_path / "images").mkdir(parents=True)
    (tmp_path / "masks").mkdir()
    scene = SyntheticScene(128, 128, frames=n * 3, seed=77, n_fires=2)
    for i in range(n):
        rgb, mask = scene.render(i * 3)
        cv2.imwrite(str(tmp_path / "images" / f"s{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(tmp_path / "masks" / f"s{i}.png"), mask)
    return find_pairs(tmp_path)[0]


def test_gate_refuses_a_broken_artifact(source, tmp_path):
    import onnx
    from onnx import numpy_helper

    broken = onnx.load(str(source))  # the mask logit conv zeroed: a quantizer that destroyed the last layer
    logit = next(n for n in broken.graph.node if n.op_type == "Conv" and "logit" in n.name)
    for init in broken.graph.initializer:
        if init.name in logit.input[1:]:
            init.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(init), -0.0), init.name))
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    pairs = _pairs(tmp_path / "data")
    ref = onnx_predictor(source, SIZE, MEAN, STD)
    same = measure(pairs, ref, ref, 0.01225, "synthetic")
    assert same["passed"] and same["relative_drop"] == 0
    bad = measure(pairs, ref, onnx_predictor(tmp_path / "broken.onnx", SIZE, MEAN, STD), 0.01225, "synthetic")
    assert not bad["passed"] and bad["relative_drop"] > 0.5
    with pytest.raises(GateError, match="accuracy gate FAILED for int8"):
        enforce(bad, "int8")
    with pytest.raises(GateError, match="refused at build time"):
        check_at_load({"accuracy": bad}, "int8")
    assert "passed" in check_at_load({"accuracy": same}, "int8")
    with pytest.raises(QuantError, match="budget"):
        measure(pairs, ref, ref, 1.5)


def test_bad_calibration_input(tmp_path):
    from firespotter.models.calibration import load_calibration

    (tmp_path / "empty").mkdir()
    with pytest.raises(FirespotterError, match="no images"):
        load_calibration(tmp_path / "empty", 8, SIZE)
    with pytest.raises(QuantError, match="needs calibration frames"):
        check_frames([])
    with pytest.raises(QuantError, match="expected H×W×3 uint8"):
        check_frames([np.zeros((8, 8), np.float32)])
    said = []
    x = to_inputs([np.zeros((60, 90, 3), np.uint8)] * 2, SIZE, MEAN, STD, said.append)
    assert x.shape == (2, 3, 128, 128)
    assert said and "90x60" in said[0] and "resized" in said[0]
    (tmp_path / "odd").mkdir()
    cv2.imwrite(str(tmp_path / "odd" / "a.png"), np.zeros((60, 90, 3), np.uint8))
    cs = load_calibration(tmp_path / "odd", 4, SIZE)
    assert cs.frames[0].shape == (128, 128, 3) and "resized" in cs.description
