"""SplitQuant and the low-bit weight quantizer: exact splits, deterministic k-means, lower error, clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from firespotter.models.quant import QuantError
from firespotter.models.quant.lowbit import check_bits, fake_quantize, layer_error, pack_int4_onnx, simulate_onnx
from firespotter.models.quant.splitquant import (SplitLayer, fold_batchnorm, kmeans3_rows, max_abs_difference,
                                                 partition, split_model)

ZOO = Path(__file__).resolve().parents[1] / "firespotter" / "models" / "zoo"


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.up = nn.ConvTranspose2d(8, 4, 2, 2)
        self.head = nn.Conv2d(4, 1, 1)  # one output: never split
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        y = self.up(self.b(self.a(x)))
        return self.head(y), self.fc(y.mean(dim=(2, 3)))


def _random_net() -> nn.Module:
    torch.manual_seed(0)
    net = SmallNet()
    for m in net.modules():  # non-trivial BN statistics, so folding is really exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.fixture(scope="module")
def lite():
    from firespotter.models.checkpoint import load_checkpoint, model_from_checkpoint

    return model_from_checkpoint(load_checkpoint(ZOO / "fireseg-lite.pt")).float().eval()


def test_kmeans_is_deterministic_and_order_free():
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.normal(-2, 0.3, 50), rng.normal(0, 0.2, 80), rng.normal(3, 0.5, 20)])[None]
    a, b = kmeans3_rows(v), kmeans3_rows(v.copy())
    shuffled = kmeans3_rows(rng.permutation(v[0])[None])
    assert np.array_equal(a, b) and np.array_equal(a, shuffled)
    assert a[0, 0] < a[0, 1] < a[0, 2]
    assert abs(a[0, 0] + 2) < 0.3 and abs(a[0, 2] - 3) < 0.5
    degenerate = kmeans3_rows(np.array([[1.0, 1.0, 1.0, 2.0]]))  # fewer distinct values than k: still 3 centres
    assert degenerate.shape == (1, 3) and np.isfinite(degenerate).all()


def test_partition_is_complete_and_disjoint():
    w = torch.randn(6, 4, 3, 3)
    masks = partition(w, 0)
    total = sum(m.int() for m in masks)
    assert bool((total == 1).all())


def test_split_equals_random_network():
    net = _random_net()
    split = split_model(net)
    kinds = {type(m.lower).__name__ for m in split.modules() if isinstance(m, SplitLayer)}
    assert kinds == {"Conv2d", "ConvTranspose2d", "Linear"}
    assert not isinstance(split.head, SplitLayer)  # 1 output channel
    x = torch.randn(2, 3, 16, 16)
    assert max_abs_difference(net, split, x) <= 1e-5
    assert max_abs_difference(net, fold_batchnorm(net), x) <= 1e-5


@pytest.fixture(scope="module")
def lite_split(lite):
    folded = fold_batchnorm(lite)
    return folded, split_model(folded, fold=False)


def test_split_equals_fireseg_lite(lite, lite_split):
    _, split = lite_split
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    assert max_abs_difference(lite, split, x, prob=True) <= 1e-5
    assert max_abs_difference(lite, split, x) <= 1e-3  # logits: float32 summation order only


@pytest.mark.parametrize("bits", [4, 2])
def test_split_lowers_weight_error_per_layer(lite_split, bits):
    folded, split = lite_split
    layers = [(n, m) for n, m in split.named_modules() if isinstance(m, SplitLayer)]
    splittable = [m for m in folded.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
                  and (m.out_channels if isinstance(m, torch.nn.Conv2d) else m.out_features) >= 3]
    assert len(layers) == len(splittable) > 20
    for name, layer in layers:
        plain = layer_error(folded.get_submodule(name), bits)["mse"]
        assert layer_error(layer, bits)["mse"] < plain, name


def test_quantizer_keeps_zero_exact_and_rejects_bad_bits():
    w = np.array([[-1.0, 0.0, 0.3, 2.0]], np.float32)
    for bits in (8, 4, 2):
        assert fake_quantize(w, bits)[0, 1] == 0.0
    with pytest.raises(QuantError, match="unsupported weight bit width 3"):
        check_bits(3)
    with pytest.raises(QuantError, match="unsupported weight bit width"):
        fake_quantize(w, 16)


def test_model_without_quantizable_layer_is_refused(tmp_path):
    with pytest.raises(QuantError, match="no quantizable layer"):
        split_model(nn.Sequential(nn.ReLU(), nn.Sigmoid()))
    with pytest.raises(QuantError, match="fewer than 3 outputs"):
        split_model(nn.Sequential(nn.Conv2d(3, 1, 1)))
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    onnx.save(helper.make_model(g), str(tmp_path / "relu.onnx"))
    with pytest.raises(QuantError, match="no quantizable layer"):
        simulate_onnx(tmp_path / "relu.onnx", tmp_path / "out.onnx", 4)


def test_packed_int4_runs_and_matches_simulation(lite, tmp_path):
    import onnxruntime as ort

    from firespotter.models.quant.builders import export_fp32

    src = export_fp32(fold_batchnorm(lite), tmp_path / "plain.onnx", (64, 64))
    simulate_onnx(src, tmp_path / "sim.onnx", 2)
    info = pack_int4_onnx(src, tmp_path / "packed.onnx", 2)
    assert info["opset"] == 21
    assert (tmp_path / "packed.onnx").stat().st_size < src.stat().st_size / 4
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert np.abs(run(tmp_path / "sim.onnx") - run(tmp_path / "packed.onnx")).max() < 1e-3
