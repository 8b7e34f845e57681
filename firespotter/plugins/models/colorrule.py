"""colorrule: the classic colour-space fire-pixel rule. No weights, runs anywhere: the baseline.

A fuzzy AND of the rules of Chen et al. (2004) and Celik & Demirel (2009): flame pixels have a bright red
channel, R >= G > B, and far more red than blue. Each rule becomes a soft margin; the smallest margin,
through a sigmoid, is the fire probability, so the threshold is meaningful and the output is smooth.
"""

from __future__ import annotations

import numpy as np

from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import ModelSpec
from firespotter.runtime.types import InputSpec

# (offset, scale) per rule on 0..255 values: margin = (value - offset) / scale
RED_MIN = (150.0, 30.0)  # R bright
RED_OVER_BLUE = (60.0, 25.0)  # R - B large
GREEN_OVER_BLUE = (-10.0, 20.0)  # G >= B (rejects magenta and blue-ish highlights)
RED_OVER_GREEN = (-5.0, 20.0)  # R >= G (rejects foliage and sky)
SHARPNESS = 4.0


def colorrule_prob(batch: np.ndarray) -> np.ndarray:
    """N×H×W×3 uint8 RGB -> N×H×W float32 fire probability."""
    x = batch.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    m = (r - RED_MIN[0]) / RED_MIN[1]
    np.minimum(m, (r - b - RED_OVER_BLUE[0]) / RED_OVER_BLUE[1], out=m)
    np.minimum(m, (g - b - GREEN_OVER_BLUE[0]) / GREEN_OVER_BLUE[1], out=m)
    np.minimum(m, (r - g - RED_OVER_GREEN[0]) / RED_OVER_GREEN[1], out=m)
    m *= -SHARPNESS
    np.exp(m, out=m)
    m += 1.0
    np.reciprocal(m, out=m)
    return m


class ColorRuleModel:
    model_id = "colorrule-1"
    input_spec = InputSpec(size=None)

    def formats(self) -> tuple[str, ...]:
        return ("numpy",)

    def artifact(self, fmt: str):
        if fmt != "numpy":
            raise KeyError(fmt)
        return colorrule_prob


def make_colorrule(options=None):
    """options: none (the spec has no options model)."""
    return ColorRuleModel()


@hookimpl
def register_models():
    return [ModelSpec("colorrule", make_colorrule, "colour-space fire-pixel rule, no weights (baseline)", ("fp32",))]
