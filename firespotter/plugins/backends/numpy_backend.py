"""numpy: runs models that are plain Python/numpy callables (batch -> probability), in process, FP32."""

from __future__ import annotations

from firespotter.runtime.errors import PluginError
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.protocols import SegmenterBase
from firespotter.runtime.specs import BackendSpec
from firespotter.runtime.types import PrecisionLabel


class CallableSegmenter(SegmenterBase):
    """No frame head, nothing to adapt (SegmenterBase's defaults)."""

    def __init__(self, model, fn, device: str):
        self.model_id = model.model_id
        self.input_spec = model.input_spec
        self.precision = PrecisionLabel("fp32", 32, False)
        self.predict = fn  # no wrapper: the hot path calls the model directly
        self.device = device

    def info(self) -> dict:
        return {"backend": "numpy", "model_id": self.model_id, "device": self.device, **self.precision.as_dict()}


def load(model, precision: str = "fp32", device: str = "cpu", options=None):
    """options: none (the spec has no options model)."""
    if precision != "fp32":
        raise PluginError(f"backend 'numpy' runs fp32 only, not {precision!r}", "use --precision fp32")
    if device != "cpu":
        raise PluginError(f"backend 'numpy' runs on the CPU only, not {device!r}", "use device = \"cpu\"")
    return CallableSegmenter(model, model.artifact("numpy"), device)


@hookimpl
def register_backends():
    return [BackendSpec("numpy", load, formats=("numpy",), description="in-process numpy callables (fp32, CPU)", priority=0)]
