"""A CNN-sized stand-in segmenter for speed benchmarks: a small encoder-decoder ONNX graph with random weights.

Not a fire model (it has never seen a fire): it costs what a light depthwise-free CNN costs, which is what the
pipeline's overhead should be compared against when no trained model is at hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(path: Path, size: int = 256, width: int = 24, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(name, x, cin, cout, k, stride):
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{name}_w"))
        inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}_b"))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_c"], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        nodes.append(helper.make_node("Relu", [f"{name}_c"], [name]))
        return name

    x = conv("e1", "input", 3, width, 3, 2)
    x = conv("e2", x, width, width * 2, 3, 2)
    x = conv("e3", x, width * 2, width * 2, 3, 1)
    x = conv("e4", x, width * 2, width * 2, 3, 1)
    w = (rng.standard_normal((1, width * 2, 1, 1)) * 0.1).astype(np.float32)
    inits.append(numpy_helper.from_array(w, "head_w"))
    nodes.append(helper.make_node("Conv", [x, "head_w"], ["head"], kernel_shape=[1, 1]))
    inits.append(numpy_helper.from_array(np.array([1, 1, 4, 4], np.float32), "scales"))
    nodes.append(helper.make_node("Resize", ["head", "", "scales"], ["texture"], mode="linear"))
    # Random weights would paint noise everywhere and make post-processing unrealistically busy; a red-minus-blue
    # term (input is RGB in [0, 1]) makes the output look like a fire mask, with the CNN's output added to it.
    inits.append(numpy_helper.from_array(np.array([[[[12.0]], [[0.0]], [[-12.0]]]], np.float32), "colour_w"))
    inits.append(numpy_helper.from_array(np.array([-6.0], np.float32), "colour_b"))
    nodes.append(helper.make_node("Conv", ["input", "colour_w", "colour_b"], ["colour"], kernel_shape=[1, 1]))
    inits.append(numpy_helper.from_array(np.array([0.05], np.float32), "texture_gain"))
    nodes.append(helper.make_node("Mul", ["texture", "texture_gain"], ["texture_small"]))
    nodes.append(helper.make_node("Add", ["colour", "texture_small"], ["logits"]))
    graph = helper.make_graph(
        nodes, "cnn_standin",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1, size, size])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
