"""Push a PyTorch network's adapted batch-norm state into its exported ONNX graph.

The exporter folds every BN into the convolution before it (W' = W g/sqrt(v+eps), b' = beta - m g/sqrt(v+eps)),
so the graph has no BN initializers to overwrite. Instead each Conv+BN pair of the module is matched once to
the Conv node whose weight equals the pair folded with the *source* values; later pushes rewrite those
weights and biases from the adapted values. Matching by value works on any graph the exporter wrote,
whatever it named its tensors. A BN the exporter could not fold (its convolution feeds two BN nodes, as the
frame head of a gated fireseg-lite does) stays a BatchNormalization node; it is matched by its source
statistics and its four initializers are rewritten instead.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .engine import AdaptError


def conv_bn_pairs(module: nn.Module) -> list[tuple[str, nn.Conv2d, nn.modules.batchnorm._BatchNorm]]:
    pairs = []
    for name, seq in module.named_modules():
        if isinstance(seq, nn.Sequential):
            kids = list(seq.children())
            for i in range(len(kids) - 1):
                if isinstance(kids[i], nn.Conv2d) and isinstance(kids[i + 1], nn.modules.batchnorm._BatchNorm):
                    pairs.append((f"{name}.{i}", kids[i], kids[i + 1]))
    return pairs


@torch.no_grad()
def folded(conv: nn.Conv2d, bn) -> tuple[np.ndarray, np.ndarray]:
    scale = bn.weight.float() / torch.sqrt(bn.running_var.float() + bn.eps)
    w = conv.weight.float() * scale.reshape(-1, 1, 1, 1)
    b = bn.bias.float() - bn.running_mean.float() * scale
    if conv.bias is not None:
        b = b + conv.bias.float() * scale
    return w.contiguous().cpu().numpy(), b.cpu().numpy()


class OnnxNormSync:
    """Built from the served ONNX model (a ModelProto) and the shadow module holding the *source* weights."""

    def __init__(self, proto, module: nn.Module, where: str = "ONNX model"):
        from onnx import numpy_helper

        self.proto = proto
        inits = {t.name: t for t in proto.graph.initializer}
        convs = [n for n in proto.graph.node if n.op_type == "Conv" and len(n.input) >= 3
                 and n.input[1] in inits and n.input[2] in inits]
        arrays = {name: numpy_helper.to_array(inits[name]) for n in convs for name in n.input[1:3]}
        self.targets: list[tuple[nn.Conv2d, nn.Module, str, str]] = []
        self.bn_targets: list[tuple[nn.Module, tuple[str, str, str, str]]] = []
        bn_nodes = {tuple(n.input[1:5]) for n in proto.graph.node if n.op_type == "BatchNormalization"
                    and len(n.input) >= 5 and all(i in inits for i in n.input[1:5])}
        unmatched = []
        for name, conv, bn in conv_bn_pairs(module):
            w, _ = folded(conv, bn)
            hit = next((n for n in convs if arrays[n.input[1]].shape == w.shape
                        and np.allclose(arrays[n.input[1]], w, rtol=1e-4, atol=1e-6)), None)
            if hit is None:
                names = next((ns for ns in bn_nodes if _same_bn(ns, bn, inits)), None)
                if names is None:
                    unmatched.append(name)
                else:
                    bn_nodes.discard(names)
                    self.bn_targets.append((bn, names))
                continue
            convs.remove(hit)
            self.targets.append((conv, bn, hit.input[1], hit.input[2]))
        if unmatched:
            raise AdaptError(f"{where}: {len(unmatched)} conv+BN pairs of the checkpoint have no matching folded "
                             f"convolution in the graph (e.g. {unmatched[0]}); the ONNX file and the checkpoint "
                             "are not the same weights",
                             "re-export both with `firespotter export`, or set [adapt] options.checkpoint")
        self._inits = inits

    def build(self) -> bytes:
        """The graph with the module's current norm state folded in, serialised for a new session."""
        from onnx import numpy_helper

        for conv, bn, w_name, b_name in self.targets:
            w, b = folded(conv, bn)
            self._inits[w_name].CopyFrom(numpy_helper.from_array(w.astype(np.float32), w_name))
            self._inits[b_name].CopyFrom(numpy_helper.from_array(b.astype(np.float32), b_name))
        for bn, names in self.bn_targets:
            for tensor, init_name in zip((bn.weight, bn.bias, bn.running_mean, bn.running_var), names):
                value = tensor.detach().float().cpu().numpy()
                self._inits[init_name].CopyFrom(numpy_helper.from_array(value, init_name))
        return self.proto.SerializeToString()


def _same_bn(names: tuple[str, ...], bn, inits) -> bool:
    """An unfolded BatchNormalization node (scale, bias, mean, var initializers) holding bn's source values."""
    from onnx import numpy_helper

    values = [numpy_helper.to_array(inits[n]) for n in names]
    source = [t.detach().float().cpu().numpy() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)]
    return all(v.shape == s.shape and np.allclose(v, s, rtol=1e-5, atol=1e-7) for v, s in zip(values, source))
