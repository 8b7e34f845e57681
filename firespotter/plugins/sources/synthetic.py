"""test://[?frames=N&size=WxH&seed=S&fps=F&shift=KIND&shift_strength=X&stall_after=N]: a rendered aerial fire scene with exact masks.

Each frame's ground-truth mask travels in frame.meta["truth_mask"], so tests and evaluation can score
the run against it. shift= applies a domain shift (haze, lowlight, colorcast, blur, noise, jpeg) to the
images; the masks stay exact.
"""

from __future__ import annotations

import time

from firespotter.models.shifts import check_shift
from firespotter.models.synthetic import SyntheticScene
from firespotter.runtime.errors import SourceError
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.source_base import FrameSource
from firespotter.runtime.sources import SourceURI, float_param, int_param, size_param
from firespotter.runtime.specs import SourceSpec


class SyntheticSource(FrameSource):
    def __init__(self, scene: SyntheticScene, source_id: str, *, live: bool, fps: float, loop: bool,
                 stall_after: int | None = None):
        super().__init__(source_id, live=live)
        self.scene = scene
        self.fps = fps
        self.loop = loop
        self.stall_after = stall_after
        self.expected_frames = None if loop else scene.frames

    def _images(self):
        i = 0
        while self.loop or i < self.scene.frames:
            if self.stall_after is not None and i >= self.stall_after:
                # A camera whose driver hung: no more frames, no end, no error. For watchdog tests.
                while not self._closed:
                    time.sleep(0.05)
                return
            rgb, mask = self.scene.render(i % self.scene.frames)
            yield rgb, {"name": f"synth_{i:06d}", "truth_mask": mask}
            i += 1


def shift_param(uri: SourceURI) -> str | None:
    raw = uri.params.get("shift")
    if not raw:
        return None
    try:
        return check_shift(raw)
    except ValueError as exc:
        raise SourceError(f"{uri.raw}: parameter shift: {exc}") from None


def open_test(uri: SourceURI, *, source_id: str, live: bool = False, options: dict | None = None):
    width, height = size_param(uri, "size", (256, 256))
    shift = shift_param(uri)
    strength = float_param(uri, "shift_strength", 1.0)
    if strength < 0:
        raise SourceError(f"{uri.raw}: parameter shift_strength={strength} must be >= 0")
    scene = SyntheticScene(
        width=width,
        height=height,
        frames=int_param(uri, "frames", 100, minimum=1),
        seed=int_param(uri, "seed", 0),
        shift=shift,
        shift_strength=strength,
    )
    fps = float_param(uri, "fps", 30.0, gt=0)
    stall_after = int_param(uri, "stall_after", -1, minimum=-1)
    return SyntheticSource(scene, source_id, live=live, fps=fps, loop=uri.params.get("loop", "0") in ("1", "true"),
                           stall_after=None if stall_after < 0 else stall_after)


@hookimpl
def register_sources():
    return [SourceSpec("test", open_test,
                       "synthetic aerial fire scene with exact masks "
                       "(?frames=&size=WxH&seed=&fps=&loop=1&shift=&shift_strength=&stall_after=N)")]
