"""bnstats: batch-norm statistics follow the stream by EMA from the source statistics; no gradient at all.

The cheapest adapter and the one that ships to ONNX Runtime as state. Options: `alpha` (EMA weight of a
frame, default 0.05), `layers` (BN layer prefixes whose statistics move; default all), `push_interval_s`.
"""

NAME = "bnstats"
DESCRIPTION = "BN statistics re-estimated per frame as an EMA from the source statistics (no gradient)"


def make(segmenter, options):
    """options: this method's AdaptOptions (plugins/adapters/options.py)."""
    from .serving import make_adapter  # torch loads only when an adapter is used, not with the plugin list

    return make_adapter(NAME, segmenter, options)
