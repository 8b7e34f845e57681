"""Test-time adaptation adapters (issue 8): `bnstats`, `tent`, `ostta`. Registered through register_adapters.

Each method lives in its own module; `options` holds their `[adapt] options` models; `serving` holds how an
adapter reaches the served model, through the segmenter's `adaptable()` capability: in place on the torch
backend, or through a PyTorch shadow whose norm parameters are pushed into ONNX Runtime.
"""

from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import AdapterSpec, module_available

from . import bnstats, ostta, tent
from .options import options_for


@hookimpl
def register_adapters():
    return [AdapterSpec(mod.NAME, mod.make, mod.DESCRIPTION, available=module_available("torch", extra="torch"),
                        options_model=options_for(mod.NAME))
            for mod in (bnstats, tent, ostta)]
