"""ostta: TENT with the open-set "wisdom of crowds" selection (Lee et al., ICCV 2023), per pixel.

A pixel teaches the model only when the adapted model's probability of the class the frozen model predicts
is at least the frozen model's, and it is reliable; the loss is balanced between fire and background and
normalised over the kept pixels, with no 50/50 diversity term (fire covers under 1% of many frames).
Options as for tent.
"""

NAME = "ostta"
DESCRIPTION = "open-set TTA: TENT on the pixels whose confidence in the frozen model's class did not fall"


def make(segmenter, options):
    """options: this method's AdaptOptions (plugins/adapters/options.py)."""
    from .serving import make_adapter  # torch loads only when an adapter is used, not with the plugin list

    return make_adapter(NAME, segmenter, options)
