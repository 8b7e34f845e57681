"""Test-time adaptation adapters (issue 8): `bnstats`, `tent`, `ostta`. Registered through register_adapters.

Each method lives in its own module; `serving` holds how an adapter reaches the served model: in place on
the torch backend, or through a PyTorch shadow whose norm parameters are pushed into ONNX Runtime.
"""

from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import AdapterSpec, module_available

from . import bnstats, ostta, tent


@hookimpl
def register_adapters():
    return [AdapterSpec(mod.NAME, mod.make, mod.DESCRIPTION, available=module_available("torch", extra="torch"))
            for mod in (bnstats, tent, ostta)]
