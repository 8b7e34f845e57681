"""Test-time adaptation maths for batch-norm fire networks (issue 8; docs/adaptation.md).

- `norm`: which batch-norm layers, the frozen copy of their parameters, EMA-blended statistics (RBN).
- `objective`: pixel entropy, the reliability filter, the open-set (OSTTA) selection and its balanced loss.
- `engine`: one adaptation step per adapted frame on a PyTorch module, resets and the collapse guard.
- `onnx_sync`: pushes adapted norm parameters into an exported ONNX graph (BN folded into the convs).

The runtime never imports this package; the adapter plugins (`firespotter.plugins.adapters`) do.
"""

from .engine import METHODS, TTAConfig, TTAEngine
from .objective import RELIABLE_ENTROPY, binary_entropy, ostta_selection

__all__ = ["METHODS", "RELIABLE_ENTROPY", "TTAConfig", "TTAEngine", "binary_entropy", "ostta_selection"]
