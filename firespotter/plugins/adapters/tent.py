"""tent: entropy minimisation on the BN affine parameters, one SGD step per adapted frame (Wang et al. 2021).

Adapted for a one-frame stream: EMA statistics instead of the frame's own, only reliable pixels
(entropy below 0.4 ln 2), the last encoder stage and the heads frozen, `every` N-th frame, resets every
`reset_every` updates and on fire-fraction drift. Options: those of bnstats plus `lr`, `momentum`, `every`,
`reset_every`, `max_entropy`, `guard`, `guard_low`, `guard_high`, `scale`.
"""

NAME = "tent"
DESCRIPTION = "TENT: pixel-entropy steps on BN affine (reliable pixels, EMA statistics, resets, collapse guard)"


def make(segmenter, options):
    """options: this method's AdaptOptions (plugins/adapters/options.py)."""
    from .serving import make_adapter  # torch loads only when an adapter is used, not with the plugin list

    return make_adapter(NAME, segmenter, options)
