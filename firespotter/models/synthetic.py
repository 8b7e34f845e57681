"""A procedural aerial fire scene: a camera flying over generated terrain with spreading fires.

The world (terrain, trees, roads, roofs, vehicles, lighting) is painted once in `__init__`, on a canvas
larger than the frame; each frame is the camera's window onto it, with the fires, their glow, burn scars,
smoke and sun glints animated inside their bounding boxes only. Each seed picks a different mix: forest,
meadow, bare soil, snow, water, roads and villages; fire fronts and pile burns; smoke; distractors that fool
colour rules (red roofs, autumn crowns, sunlit orange soil, sun glint, red cars); dawn, noon or dusk light.

Deterministic: no global RNG; the world comes from the seed and each frame's randomness from (seed, frame),
so the same seed and size give the same bytes.

Masks are exact: a pixel is 255 in the mask if and only if flame colour was painted there and is visible.
Smoke at least HIDE_OPACITY opaque hides the flame under it (not painted, not in the mask); thinner smoke
is blended over the painted flame, which stays in the mask. Glow, burn scars and distractors never are.
`render(i, paint_flames=False)` renders the identical frame without the flames, which proves it:
the two renders differ exactly on the mask (see `mask_is_exact`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from firespotter.models.shifts import apply_shift, check_shift

HIDE_OPACITY = 0.5  # smoke at least this opaque hides a flame: not painted, not in the mask
MIN_FLAME_CONTRAST = 8.0  # a painted flame differs from what it covers by this much, so it survives smoke and rounding

# Time of day: (brightness, RGB tint, lift of the shadows, shadow length per unit of height).
LIGHTS = {
    "dawn": (0.74, (1.06, 0.93, 0.92), 6.0, 2.2),
    "noon": (1.0, (1.0, 1.0, 1.02), 0.0, 0.7),
    "dusk": (0.8, (1.1, 0.94, 0.82), 4.0, 2.0),
}

# Ground palettes (RGB, before lighting).
MEADOW, DRY_GRASS = (88, 110, 56), (132, 126, 78)
SOIL, ORANGE_SOIL = (122, 100, 78), (192, 122, 70)
WATER, SHALLOWS = (26, 50, 68), (52, 80, 86)
FOREST_FLOOR = (40, 50, 31)
SNOW, SNOW_SHADE = (230, 234, 242), (196, 204, 220)
CONIFER, DECIDUOUS = (28, 58, 36), (58, 92, 44)
AUTUMN = ((208, 112, 34), (182, 46, 30), (210, 170, 52), (196, 84, 36))
ROOFS = ((176, 66, 46), (192, 42, 36), (122, 122, 128), (72, 66, 66), (112, 82, 62), (150, 152, 158))
RED_ROOFS, METAL_ROOFS = (0, 1), (2, 5)
CARS = ((206, 30, 28), (232, 232, 230), (30, 30, 34), (162, 166, 172), (40, 62, 150))
ASPHALT, DIRT_ROAD, VERGE, ROAD_PAINT = (84, 84, 88), (150, 130, 100), (118, 112, 92), (216, 200, 120)
CHAR, ASH = (34, 31, 29), (120, 116, 110)
# Ground labels: meadow, soil, orange soil, forest floor, water, snow, snow under trees.
GROUND = np.array([MEADOW, SOIL, ORANGE_SOIL, FOREST_FLOOR, WATER, SNOW, SNOW_SHADE], np.float32)
GLOW_RGB = np.array([255, 118, 36], np.float32)
GLINT_RGB = np.array([255, 251, 228], np.float32)
SMOKE_GREY, SMOKE_BROWN = (182, 182, 178), (138, 120, 98)
SMOKE_FIRELIT = np.array([90, 38, 0], np.float32)  # smoke lit from below by the fire

# Flame colour from the cool edge (0) to the hot core (1): deep red, orange, yellow, white-yellow.
FLAME_STOPS = ((0.0, (150, 16, 4)), (0.22, (214, 52, 8)), (0.48, (250, 122, 18)), (0.72, (255, 194, 58)),
               (0.88, (255, 234, 138)), (1.0, (255, 250, 214)))


def _flame_palette() -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    pos = [p for p, _ in FLAME_STOPS]
    return np.stack([np.interp(x, pos, [c[k] for _, c in FLAME_STOPS]) for k in range(3)], axis=1).astype(np.float32)


FLAME_LUT = _flame_palette()


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int, tileable: bool = False) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled with bicubic interpolation.

    tileable=True wraps the grid, so the noise repeats seamlessly every (h, w) when h and w are multiples
    of `cell`; smoke drifts over such a texture by modular indexing.
    """
    cell = max(2, cell)
    gh, gw = max(2, -(-h // cell)), max(2, -(-w // cell))
    grid = rng.random((gh, gw), dtype=np.float32)
    if tileable:
        pad = 2
        grid = np.pad(grid, pad, mode="wrap")
        up = cv2.resize(grid, ((gw + 2 * pad) * cell, (gh + 2 * pad) * cell), interpolation=cv2.INTER_CUBIC)
        up = up[pad * cell : pad * cell + h, pad * cell : pad * cell + w]
    else:
        up = cv2.resize(grid, (gw * cell + cell, gh * cell + cell), interpolation=cv2.INTER_CUBIC)[:h, :w]
    return np.clip(up, 0.0, 1.0)


def fractal_noise(rng: np.random.Generator, h: int, w: int, base_cell: int, octaves: int = 3,
                  tileable: bool = False) -> np.ndarray:
    """Octaves of value noise, rescaled to span [0, 1] (so thresholds mean the same at every scale)."""
    out = np.zeros((h, w), np.float32)
    for o in range(octaves):
        out += 0.5**o * smooth_noise(rng, h, w, max(2, base_cell >> o), tileable)
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _wrapped_window(tex: np.ndarray, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """tex[y0:y0+h, x0:x0+w] on a texture that repeats in both directions."""
    th, tw = tex.shape
    return tex.take(np.arange(y0, y0 + h) % th, axis=0).take(np.arange(x0, x0 + w) % tw, axis=1)


def _clip_box(box, view) -> tuple[int, int, int, int] | None:
    """Intersection of two (x0, y0, x1, y1) boxes, in integers; None when empty."""
    x0, y0 = max(int(math.floor(box[0])), view[0]), max(int(math.floor(box[1])), view[1])
    x1, y1 = min(int(math.ceil(box[2])) + 1, view[2]), min(int(math.ceil(box[3])) + 1, view[3])
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _union(boxes) -> tuple[int, int, int, int] | None:
    if not boxes:
        return None
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def _intersect(a, b) -> tuple[int, int, int, int] | None:
    if a is None or b is None:
        return None
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _box_slices(box) -> tuple[slice, slice]:
    return slice(box[1], box[3]), slice(box[0], box[2])


def _rotated_box(cx: float, cy: float, ex: tuple[float, float], ey: tuple[float, float],
                 a: tuple[float, float], b: tuple[float, float]):
    """World bounding box of the points c + s*ex + r*ey for s in a, r in b."""
    xs = [cx + s * ex[0] + r * ey[0] for s in a for r in b]
    ys = [cy + s * ex[1] + r * ey[1] for s in a for r in b]
    return min(xs), min(ys), max(xs), max(ys)


# --------------------------------------------------------------------------------------------- fires


@dataclass
class FireField:
    """One fire's contribution to a window of the frame."""

    sd: np.ndarray  # signed distance to the flame edge, px: < 0 burning
    level: np.ndarray  # flame heat 0 (edge) .. 1 (core), meaningful where sd < 0
    scar: np.ndarray  # bool: burnt ground (charred) outside the flames
    glow_px: float
    glow_strength: float


@dataclass
class Front:
    """An elongated fire line that runs with the wind: head ahead, flanks lagging, burnt ground behind."""

    x: float  # centre of the ignition line, world px
    y: float
    heading: float  # direction of spread, radians
    length0: float  # front length at the start of the flight, px
    length1: float  # ... and at the end
    advance: float  # how far the head runs over the flight, px
    depth: float  # flame band depth, px
    bulge: float  # how far the flanks lag behind the head, as a fraction of the advance
    wobble: np.ndarray  # offsets of the front line along its length (1 px steps), px

    def length(self, t: float) -> float:
        return self.length0 + (self.length1 - self.length0) * t

    def axes(self):
        c, s = math.cos(self.heading), math.sin(self.heading)
        return (c, s), (-s, c)  # along the spread (v), along the front (u)

    def extent(self, t: float, margin: float):
        ev, eu = self.axes()
        half = self.length(t) / 2 + margin
        wob = float(np.abs(self.wobble).max())
        behind, ahead = -2 * self.depth - margin, self.advance * t + wob + margin
        return _rotated_box(self.x, self.y, ev, eu, (behind, ahead), (-half, half))

    def field(self, X: np.ndarray, Y: np.ndarray, t: float, n: np.ndarray, unit: float) -> FireField:
        (c, s), _ = self.axes()
        dx, dy = X - self.x, Y - self.y
        v = dx * c + dy * s
        u = -dx * s + dy * c
        half = self.length(t) / 2
        k = np.clip(u / half, -1.5, 1.5)
        wob_idx = np.clip((u + len(self.wobble) // 2).astype(np.int32), 0, len(self.wobble) - 1)
        front_line = self.advance * t * (1.0 - self.bulge * k * k) + self.wobble[wob_idx]
        half_depth = self.depth / 2 * (1.0 + 0.55 * n)
        across = np.abs(v - (front_line - self.depth / 2)) - half_depth
        along = np.abs(u) - half * (1.0 + 0.06 * n)
        sd = np.maximum(across, along)
        level = np.clip(-across / np.maximum(half_depth, 0.5) * 1.15 + 0.22 * n, 0.0, 1.0)
        level *= np.clip(-along / (3.0 * unit + 1.0), 0.0, 1.0)  # the flanks' tips burn cooler
        ignition_line = -self.depth * (1.2 + 0.8 * n) - 2 * unit
        scar = (sd >= 0) & (v < front_line - self.depth * 0.5) & (v > ignition_line) & (along < 0)
        return FireField(sd, level, scar, glow_px=3.0 * unit + 1.5, glow_strength=0.55)

    def smoke_source(self, t: float, wind: float) -> tuple[float, float, float]:
        """Where the plume starts: (x, y) and its half width across the wind."""
        (c, s), _ = self.axes()
        reach = self.advance * t - self.depth / 2
        half_cross = self.length(t) / 2 * abs(math.cos(self.heading - wind)) + self.depth
        return self.x + c * reach, self.y + s * reach, half_cross

    def upwind_reach(self, t: float) -> float:
        return self.depth + self.bulge * self.advance * t


@dataclass
class PileGroup:
    """Slash piles burning in a row or a clearing: small round fires that grow and flicker."""

    xs: np.ndarray  # pile centres, world px
    ys: np.ndarray
    r0: np.ndarray  # radii at the start, px
    growth: np.ndarray  # relative growth over the flight
    phase: np.ndarray  # flicker phases

    def radii(self, t: float, i: int) -> np.ndarray:
        flicker = 1.0 + 0.1 * np.sin(1.7 * i + self.phase) + 0.05 * np.sin(0.63 * i + 2.0 * self.phase)
        return self.r0 * (1.0 + self.growth * t) * flicker

    def extent(self, t: float, margin: float):
        r = float(self.r0.max() * (1.0 + self.growth.max()) * 1.2) + margin
        return self.xs.min() - r, self.ys.min() - r, self.xs.max() + r, self.ys.max() + r

    def field(self, X: np.ndarray, Y: np.ndarray, t: float, n: np.ndarray, unit: float, i: int) -> FireField:
        sd = level = scar = None
        for x, y, r in zip(self.xs, self.ys, self.radii(t, i)):
            d = np.sqrt((X - x) ** 2 + (Y - y) ** 2)
            pile_sd = d - r * (1.0 + 0.35 * n)
            pile_level = np.clip(-pile_sd / (0.75 * r) + 0.2 * n, 0.0, 1.0)
            pile_scar = d < r * 1.35 + unit  # an ash ring around the pile
            if sd is None:
                sd, level, scar = pile_sd, pile_level, pile_scar
            else:
                sd, level, scar = np.minimum(sd, pile_sd), np.maximum(level, pile_level), scar | pile_scar
        scar &= sd >= 0
        return FireField(sd, level, scar, glow_px=float(self.r0.mean()) * 0.9 + unit, glow_strength=0.5)

    def smoke_source(self, t: float, wind: float) -> tuple[float, float, float]:
        spread = 0.5 * math.hypot(float(np.ptp(self.xs)), float(np.ptp(self.ys)))
        return float(self.xs.mean()), float(self.ys.mean()), spread + float(self.r0.mean())

    def upwind_reach(self, t: float) -> float:
        return float(self.r0.max()) * 2.0


@dataclass
class Plume:
    """Smoke from one fire, drifting downwind, widening and thinning; patchy, so it hides flames in places."""

    fire: Front | PileGroup
    peak: float  # opacity near the source, before the patchiness
    length: float  # e-folding distance of the opacity downwind, px
    spread: float  # widening per px downwind
    width0: float  # half width at the source, px

    def extent(self, t: float, wind: float, unit: float):
        x, y, half = self.fire.smoke_source(t, wind)
        far = 2.5 * self.length
        reach = self.fire.upwind_reach(t) + 3 * unit
        ew, ec = (math.cos(wind), math.sin(wind)), (-math.sin(wind), math.cos(wind))
        side = half + 1.6 * (self.width0 + self.spread * far)
        return _rotated_box(x, y, ew, ec, (-reach, far), (-side, side))

    def opacity(self, X: np.ndarray, Y: np.ndarray, t: float, wind: float, n: np.ndarray, unit: float) -> np.ndarray:
        x, y, half = self.fire.smoke_source(t, wind)
        c, s = math.cos(wind), math.sin(wind)
        dx, dy = X - x, Y - y
        a = dx * c + dy * s  # downwind
        q = np.maximum(np.abs(-dx * s + dy * c) - half, 0.0)  # beyond the source's width, across the wind
        down = np.maximum(a, 0.0)
        width = self.width0 + self.spread * down
        onset = np.clip(1.0 + a / (self.fire.upwind_reach(t) + 3 * unit), 0.0, 1.0)
        body = self.peak * onset * np.exp(-down / self.length - (q / width) ** 2)
        return body * np.clip((n - 0.18) / 0.5, 0.0, 1.0)


# --------------------------------------------------------------------------------------------- frames


@dataclass
class FrameLayers:
    """Everything one frame is composed of; render() composes it, tests inspect it."""

    base: np.ndarray  # float32 H×W×3 in [0, 255]: terrain, distractors, glints, burn scars and glow
    flame: np.ndarray  # bool H×W: where flames burn, visible or not
    flame_rgb: np.ndarray  # float32 H×W×3: flame colour where `flame`
    smoke_alpha: np.ndarray  # float32 H×W in [0, 1]
    smoke_rgb: np.ndarray  # float32 h×w×3 in [0, 255]: smoke colour over smoke_box only
    smoke_box: tuple[int, int, int, int] | None  # (x0, y0, x1, y1) in the frame holding all its smoke
    fire_box: tuple[int, int, int, int] | None  # (x0, y0, x1, y1) in the frame holding all flames and glow

    @property
    def visible_flame(self) -> np.ndarray:
        return self.flame & (self.smoke_alpha < HIDE_OPACITY)

    @property
    def hidden_flame(self) -> np.ndarray:
        return self.flame & (self.smoke_alpha >= HIDE_OPACITY)


_STREAMS = ("mix", "path", "terrain", "trees", "roads", "villages", "light", "glints", "fires", "plumes", "textures",
            "twinkle", "shift", "sensor")


def _int_seed(seed: int) -> int:
    return int(seed) % (1 << 64)  # SeedSequence refuses negative seeds


class SyntheticScene:
    """render(i) -> (rgb uint8 H×W×3, mask uint8 H×W with 255 = visible flame).

    Each keyword left at None is drawn from the seed: `n_fires` (fires in all), `fronts` and `piles`
    (fire fronts and pile-burn groups; give either to fix the mix), `smoke` (plume density 0..1),
    `distractors` (red roofs, autumn crowns, orange soil, glints, red cars), `light` ("dawn", "noon", "dusk"),
    `snow`. hover=True holds the camera over the middle of the flight (a drone watching one fire).
    `shift` names a domain shift (see firespotter.models.shifts) applied after rendering; masks never change.
    `zoom` > 1 flies lower: everything on the ground (fires, trees, roads, roofs) is drawn that many times larger,
    so a fire front fills much of the frame, as it does to a drone close to the front.
    """

    def __init__(self, width: int = 256, height: int = 256, frames: int = 100, seed: int = 0,
                 n_fires: int | None = None, *, fronts: int | None = None, piles: int | None = None,
                 smoke: float | None = None, distractors: bool | None = None, light: str | None = None,
                 snow: bool | None = None, hover: bool = False, shift: str | None = None,
                 shift_strength: float = 1.0, zoom: float = 1.0):
        if width < 16 or height < 16:
            raise ValueError("synthetic frames must be at least 16×16")
        if not 0.5 <= zoom <= 8.0:  # also rejects nan
            raise ValueError(f"zoom {zoom} must be between 0.5 and 8 (1 = the usual survey altitude)")
        if light is not None and light not in LIGHTS:
            raise ValueError(f"unknown light {light!r}; known: {', '.join(LIGHTS)}")
        self.width, self.height, self.frames, self.seed = width, height, max(1, frames), seed
        self.shift = check_shift(shift) if shift else None
        self.shift_strength = float(shift_strength)
        self.hover = hover
        self._key = _int_seed(seed)
        self.zoom = float(zoom)
        # scene scale: px per "unit" (a unit is ~ 0.5 m on the ground at zoom 1)
        self.unit = min(width, height) / 256.0 * self.zoom
        # World: the frame plus room to fly over (1.5 frame widths of travel).
        self.world_w, self.world_h = int(width * 2.5), int(height * 1.5)
        self._every_fire_smokes = smoke is not None and smoke > 0  # a forced density is not left to chance
        self.mix = self._pick_mix(self._stream("mix"), n_fires, fronts, piles, smoke, distractors, light, snow)
        self.path = self._flight_path(self._stream("path"))
        self.world, self.burnable, self.glints = self._paint_world()
        self.fires = self._place_fires(self._stream("fires"))
        self.plumes = self._make_plumes(self._stream("plumes"))
        rng = self._stream("textures")
        cell = max(2, int(round(3 * self.unit)))
        self.flame_noise = (fractal_noise(rng, self.world_h, self.world_w, cell, 2),
                            fractal_noise(rng, self.world_h, self.world_w, cell, 2))
        # Smoke is soft: it is evaluated on a grid `smoke_step` times coarser than the frame, then upsampled.
        self.smoke_step = max(1, min(4, int(round(4 * self.unit))))
        # A cell that is a multiple of 4 keeps every octave tileable.
        smoke_cell = 4 * max(1, int(round(24 * self.unit / self.smoke_step / 4)))
        sh = -(-self.world_h // (self.smoke_step * smoke_cell)) * smoke_cell
        sw = -(-self.world_w // (self.smoke_step * smoke_cell)) * smoke_cell
        self.smoke_noise = (fractal_noise(rng, sh, sw, smoke_cell, 3, tileable=True),
                            fractal_noise(rng, sh, sw, smoke_cell, 3, tileable=True))
        self.scar_texture = fractal_noise(rng, self.world_h, self.world_w, max(2, int(4 * self.unit)), 2)
        self._glint_spot = self._spot_kernel(max(1.0, 1.2 * self.unit))

    def _stream(self, name: str, frame: int | None = None) -> np.random.Generator:
        """An independent random stream per part of the scene (and per frame), so that changing how one
        part draws (a bigger frame, a forced option) leaves the others as the seed had them."""
        salt = 1000 + _STREAMS.index(name)
        return np.random.default_rng([self._key, salt] if frame is None else [self._key, salt, int(frame) % (1 << 64)])

    # ---------------------------------------------------------------- the scene's mix

    def _pick_mix(self, rng, n_fires, fronts, piles, smoke, distractors, light, snow) -> dict:
        # Draw every choice even when the caller fixes it, so fixing one leaves the others as the seed had them.
        drawn = {
            "light": ("dawn", "noon", "noon", "dusk")[int(rng.integers(4))],
            "snow": bool(rng.random() < 0.25),
            "water": bool(rng.random() < 0.45),
            "autumn": bool(rng.random() < 0.5),
            "distractors": bool(rng.random() < 0.75),
            "roads": int(rng.integers(1, 3)),
            "clouds": bool(rng.random() < 0.35),
            "smoke": float(0.0 if rng.random() < 0.2 else rng.uniform(0.45, 1.0)),
            "wind": float(rng.uniform(0, 2 * np.pi)),
            "forest": float(rng.uniform(0.3, 0.65)),
            "sun": float(rng.uniform(0, 2 * np.pi)),
        }
        count = int(rng.integers(1, 4))
        front_draws = rng.random(8) < 0.5
        if fronts is None and piles is None:
            count = count if n_fires is None else max(0, int(n_fires))
            fronts = int(front_draws[:count].sum()) if count <= 8 else count // 2
            piles = count - fronts
        mix = dict(drawn, fronts=int(fronts or 0), piles=int(piles or 0))
        for key, value in (("light", light), ("snow", snow), ("distractors", distractors)):
            if value is not None:
                mix[key] = value
        if smoke is not None:
            mix["smoke"] = float(np.clip(smoke, 0.0, 1.0))
        if mix["snow"]:
            mix["autumn"] = False  # leaves are down by then
        return mix

    # ---------------------------------------------------------------- camera

    def _flight_path(self, rng: np.random.Generator) -> tuple[float, float, float, float]:
        x0 = float(rng.uniform(0, self.world_w * 0.1))
        y0 = float(rng.uniform(0, self.world_h - self.height))
        x1 = float(self.world_w - self.width - rng.uniform(0, self.world_w * 0.1))
        y1 = float(rng.uniform(0, self.world_h - self.height))
        return x0, y0, x1, y1

    def progress(self, i: int) -> float:
        """How far through the flight frame i is, 0..1: what the fires have done by then."""
        return float(np.clip(i / max(1, self.frames - 1), 0.0, 1.0))

    def _camera_at(self, t: float) -> tuple[float, float]:
        x0, y0, x1, y1 = self.path
        return x0 + (x1 - x0) * t, y0 + (y1 - y0) * t

    def camera(self, i: int) -> tuple[int, int]:
        """Top-left corner of frame i in world px."""
        x, y = self._camera_at(0.5 if self.hover else self.progress(i))
        return int(round(x)), int(round(y))

    # ---------------------------------------------------------------- the static world

    def _paint_world(self):
        h, w, u, mix = self.world_h, self.world_w, self.unit, self.mix
        rng = self._stream("terrain")
        cover = fractal_noise(rng, h, w, max(8, int(90 * u)), 4)
        detail = fractal_noise(rng, h, w, max(2, int(8 * u)), 3)
        # Ragged edges between soil, meadow and autumn stands: the fine texture perturbs the coarse patches.
        patches = fractal_noise(rng, h, w, max(6, int(45 * u)), 3) + 0.12 * (detail - 0.5)
        stands = fractal_noise(rng, h, w, max(6, int(30 * u)), 2) + 0.1 * (detail - 0.5)
        grain = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 0.7)
        water_frac = 0.1 if mix["water"] else 0.0
        q_water, q_forest = np.quantile(cover[::4, ::4], [water_frac, 1.0 - mix["forest"]])
        water = cover < q_water if mix["water"] else np.zeros((h, w), bool)
        forest = cover >= q_forest
        open_land = ~water & ~forest

        img = self._ground(open_land, water, forest, patches, detail, grain)
        crowns = self._draw_trees(self._stream("trees"), img, forest, open_land, stands)
        roads = self._draw_roads(self._stream("roads"), img)
        roofs, cars = self._draw_villages(self._stream("villages"), img, roads)
        img = self._light(self._stream("light"), img)
        glints = self._glint_candidates(self._stream("glints"), water, roofs, cars)
        self.layout = {"roads": roads, "roofs": roofs, "cars": cars, "crowns": crowns}
        return img, ~water & ~self._road_mask(roads), glints

    def _road_mask(self, roads) -> np.ndarray:
        """Where roads run: they are firebreaks, nothing burns on them."""
        mask = np.zeros((self.world_h, self.world_w), np.uint8)
        for pts, half in roads:
            cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 1, max(1, int(round(2 * half))))
        return mask.astype(bool)

    def _ground(self, open_land, water, forest, patches, detail, grain) -> np.ndarray:
        mix = self.mix
        labels = np.zeros(water.shape, np.uint8)  # indexes GROUND below
        labels[open_land & (patches > 0.55)] = 1
        if mix["distractors"] and not mix["snow"]:
            labels[open_land & (patches > 0.8)] = 2  # sunlit laterite: R high, R > G > B
        labels[forest] = 3
        labels[water] = 4
        if mix["snow"]:
            labels[open_land & (detail > 0.28)] = 5
            labels[forest] = 6
        img = np.take(GROUND, labels, axis=0)
        dryness = np.where(labels == 0, np.clip(1.6 * patches + 0.5 * detail - 0.7, 0, 1), 0.0).astype(np.float32)
        shallow = np.where(labels == 4, np.clip(2 * detail - 0.6, 0, 1), 0.0).astype(np.float32)
        img += dryness[..., None] * (np.float32(DRY_GRASS) - np.float32(MEADOW))
        img += shallow[..., None] * (np.float32(SHALLOWS) - np.float32(WATER))
        img = cv2.GaussianBlur(img, (0, 0), max(0.5, 1.2 * self.unit))  # land cover blends at its edges
        img *= ((0.8 + 0.4 * detail) * (0.9 + 0.2 * grain))[..., None]
        return img

    def _draw_trees(self, rng, img, forest, open_land, stands) -> int:
        """Tree crowns: a label map drawn with one cv2.circle per tree, shaded like spheres lit by the sun."""
        u, mix = self.unit, self.mix
        h, w = forest.shape
        r_mean = max(1.2, 3.6 * u)
        # Enough crowns to close the canopy (2.2 crowns per crown area leaves ~10% of the floor showing).
        n = int(min(60000 if r_mean >= 2 else 6000, 2.2 * h * w / (math.pi * r_mean**2)))  # tiny crowns: texture
        xs, ys = rng.integers(0, w, n), rng.integers(0, h, n)
        keep = forest[ys, xs] | (open_land[ys, xs] & (rng.random(n) < 0.025))
        xs, ys = xs[keep], ys[keep]
        m = len(xs)
        radii = np.maximum(1, np.round(r_mean * rng.uniform(0.7, 1.35, m))).astype(np.int32)
        conifer = rng.random(m) < (0.75 if mix["snow"] else 0.45)
        colours = np.where(conifer[:, None], np.float32(CONIFER), np.float32(DECIDUOUS)) * rng.uniform(0.8, 1.2, (m, 1))
        picks = np.float32(AUTUMN)[rng.integers(len(AUTUMN), size=m)] * rng.uniform(0.85, 1.05, (m, 1))
        if mix["autumn"] and mix["distractors"]:
            turned = ~conifer & (stands[ys, xs] > 0.55)
            colours = np.where(turned[:, None], picks, colours)
        sx, sy = self._shadow_vector()
        shadow = np.zeros((h, w), np.uint8)
        crown_id = np.zeros((h, w), np.int32)
        for k, (x, y, r) in enumerate(zip(xs.tolist(), ys.tolist(), radii.tolist())):
            cv2.circle(shadow, (int(x + sx * r), int(y + sy * r)), r, 1, -1)
            cv2.circle(crown_id, (x, y), r, k + 1, -1)
        img *= (1.0 - 0.5 * cv2.GaussianBlur(shadow.astype(np.float32), (0, 0), max(0.6, 0.8 * u)))[..., None]
        yy, xx = np.nonzero(crown_id)
        k = crown_id[yy, xx] - 1
        norm = max(1e-3, math.hypot(sx, sy))
        towards_sun = ((xx - xs[k]) * -sx + (yy - ys[k]) * -sy) / (norm * radii[k])
        leaves = fractal_noise(rng, h, w, max(2, int(round(1.5 * u))), 2)[yy, xx]
        shade = (0.95 + 0.35 * np.clip(towards_sun, -1.0, 1.0)) * (0.75 + 0.5 * leaves)
        img[yy, xx] = colours[k] * shade[:, None].astype(np.float32)
        return m

    def _shadow_vector(self) -> tuple[float, float]:
        length = LIGHTS[self.mix["light"]][3]
        return -math.cos(self.mix["sun"]) * length, -math.sin(self.mix["sun"]) * length

    def _road_polyline(self, rng) -> np.ndarray:
        h, w = self.world_h, self.world_w
        s = np.linspace(0, 1, 48)
        if rng.random() < 0.65:  # across the flight
            x = s * (w + 40) - 20
            y = rng.uniform(0.15, 0.85) * h + (rng.uniform(-0.3, 0.3) * h) * s
            y = y + rng.uniform(0.03, 0.1) * h * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * s + rng.uniform(0, 6.3))
        else:
            y = s * (h + 40) - 20
            x = rng.uniform(0.1, 0.9) * w + rng.uniform(-0.15, 0.15) * w * s
            x = x + rng.uniform(0.02, 0.06) * w * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * s + rng.uniform(0, 6.3))
        return np.stack([x, y], axis=1).astype(np.float32)

    def _draw_roads(self, rng, img) -> list[tuple[np.ndarray, float]]:
        u = self.unit
        roads = []
        for _ in range(self.mix["roads"]):
            pts = self._road_polyline(rng)
            paved = rng.random() < 0.6
            half = max(1.0, (3.0 if paved else 2.2) * u)
            ipts = [np.round(pts).astype(np.int32)]
            surface = ASPHALT if paved else DIRT_ROAD
            cv2.polylines(img, ipts, False, VERGE, max(1, int(round(2 * half + 3 * u))), lineType=cv2.LINE_AA)
            cv2.polylines(img, ipts, False, surface, max(1, int(round(2 * half))), lineType=cv2.LINE_AA)
            if paved and u >= 0.6:
                self._dash(img, pts, max(3.0, 5 * u))
            roads.append((pts, half))
        return roads

    @staticmethod
    def _dash(img, pts, step) -> None:
        seg = np.diff(pts, axis=0)
        lengths = np.hypot(seg[:, 0], seg[:, 1])
        for (x, y), (dx, dy), L in zip(pts[:-1], seg, lengths):
            for k in range(int(L // (2 * step))):
                a, b = (2 * k * step) / L, (2 * k + 1) * step / L
                cv2.line(img, (int(x + dx * a), int(y + dy * a)), (int(x + dx * b), int(y + dy * b)), ROAD_PAINT, 1)

    @staticmethod
    def _point_on(pts: np.ndarray, s: float):
        """Point and unit direction at fraction s of a polyline's vertices."""
        k = int(np.clip(s * (len(pts) - 1), 0, len(pts) - 2))
        d = pts[k + 1] - pts[k]
        d = d / max(1e-6, float(np.hypot(*d)))
        return pts[k] + (pts[k + 1] - pts[k]) * (s * (len(pts) - 1) - k), d

    def _draw_villages(self, rng, img, roads):
        u, mix = self.unit, self.mix
        roofs, cars = [], []
        shadow = np.zeros(img.shape[:2], np.float32)
        sx, sy = self._shadow_vector()
        polys = []
        for pts, half in roads:
            for _ in range(int(rng.integers(1, 3))):
                s0 = rng.uniform(0.1, 0.9)
                for _ in range(int(rng.integers(3, 9))):
                    (px, py), (dx, dy) = self._point_on(pts, float(np.clip(s0 + rng.normal(0, 0.04), 0, 1)))
                    side = rng.choice((-1.0, 1.0))
                    long_, short = rng.uniform(9, 16) * u, rng.uniform(6, 10) * u
                    off = side * (half + 4 * u + short / 2 + rng.uniform(0, 10) * u)
                    cx, cy = px - dy * off, py + dx * off
                    ex, ey = np.array([dx, dy]) * long_ / 2, np.array([-dy, dx]) * short / 2
                    corners = np.array([[cx, cy]]) + np.array([-ex - ey, ex - ey, ex + ey, -ex + ey])
                    red, red_kind = rng.random() < 0.45, int(rng.choice(RED_ROOFS))
                    other_kind = int(rng.choice([2, 3, 4, 5]))
                    kind = red_kind if red and mix["distractors"] else other_kind
                    polys.append((corners, kind, ex, ey))
                    roofs.append((cx, cy, kind))
                    cv2.fillConvexPoly(shadow, np.round(corners + [sx * 3 * u, sy * 3 * u]).astype(np.int32), 1.0)
            for _ in range(int(rng.integers(2, 7))):
                (px, py), (dx, dy) = self._point_on(pts, rng.uniform(0.05, 0.95))
                lane = rng.choice((-1.0, 1.0)) * half * 0.45
                red, other = rng.random() < 0.4, CARS[int(rng.integers(1, len(CARS)))]
                colour = CARS[0] if red and mix["distractors"] else other
                cars.append((px - dy * lane, py + dx * lane, dx, dy, colour))
        img *= (1.0 - 0.55 * shadow)[..., None]
        for corners, kind, ex, ey in polys:  # pitched roofs: two halves, one in the sun
            colour = np.float32(ROOFS[kind])
            centre = corners.mean(axis=0)
            for sign, shade in ((-1, 1.0), (1, 0.78)):
                half_poly = np.array([centre - ex, centre + ex, centre + ex + sign * ey, centre - ex + sign * ey])
                cv2.fillConvexPoly(img, np.round(half_poly).astype(np.int32), (colour * shade).tolist(),
                                   lineType=cv2.LINE_AA)
        for x, y, dx, dy, colour in cars:
            self._draw_car(img, x, y, dx, dy, colour)
        return roofs, cars

    def _draw_car(self, img, x, y, dx, dy, colour) -> None:
        u = self.unit
        L, W = max(2.5, 4.6 * u), max(1.5, 2.0 * u)
        ex, ey = np.array([dx, dy]) * L / 2, np.array([-dy, dx]) * W / 2
        c = np.array([x, y])
        body = np.array([c - ex - ey, c + ex - ey, c + ex + ey, c - ex + ey])
        cv2.fillConvexPoly(img, np.round(body).astype(np.int32), colour, lineType=cv2.LINE_AA)
        if u >= 0.75:  # a dark windscreen
            front, back, side = c + ex * 0.7, c + ex * 0.35, ey * 0.8
            screen = np.array([back - side, front - side, front + side, back + side])
            cv2.fillConvexPoly(img, np.round(screen).astype(np.int32), (40, 44, 52), lineType=cv2.LINE_AA)

    def _light(self, rng, img) -> np.ndarray:
        gain, tint, lift, _ = LIGHTS[self.mix["light"]]
        if self.mix["clouds"]:
            cloud = fractal_noise(rng, self.world_h, self.world_w, max(8, int(70 * self.unit)), 3)
            img *= (1.0 - 0.35 * np.clip((cloud - 0.55) / 0.15, 0, 1))[..., None]
        img = cv2.GaussianBlur(img, (0, 0), max(0.4, 0.5 * self.unit))  # optics: nothing is pixel-sharp
        img = img * (gain * np.float32(tint)) + lift * np.float32(tint)
        return np.clip(img, 0, 255).astype(np.float32)

    def _glint_candidates(self, rng, water, roofs, cars) -> np.ndarray:
        """(x, y) of places the sun can glint on: water ripples, metal roofs, windscreens."""
        pts = []
        if self.mix["distractors"]:
            wy, wx = np.nonzero(water[::3, ::3])
            if len(wx):
                pick = rng.choice(len(wx), size=min(len(wx), 40), replace=False)
                pts += [(wx[k] * 3.0, wy[k] * 3.0) for k in pick]
            pts += [(x, y) for x, y, kind in roofs if kind in METAL_ROOFS]
            pts += [(x, y) for x, y, *_ in cars]
        return np.array(pts, np.float32).reshape(-1, 2)

    @staticmethod
    def _spot_kernel(radius: float) -> np.ndarray:
        r = int(math.ceil(radius * 2.5))
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
        return np.minimum(1.0, 1.6 * np.exp(-(xx * xx + yy * yy) / (2 * radius * radius)))

    # ---------------------------------------------------------------- fires

    def _place_fires(self, rng: np.random.Generator) -> list:
        mix = self.mix
        fires = []
        kinds = ["front"] * mix["fronts"] + ["piles"] * mix["piles"]
        order = rng.permutation(len(kinds))
        for j, k in enumerate(order):
            # Spread along the flight path (or near the hover point) so that the camera sees each fire.
            t = 0.5 + rng.uniform(-0.06, 0.06) if self.hover else (j + rng.uniform(0.3, 0.7)) / len(kinds) * 0.7 + 0.15
            x, y = self._camera_at(t)
            x += self.width / 2 + rng.uniform(-0.22, 0.22) * self.width
            y += self.height / 2 + rng.uniform(-0.22, 0.22) * self.height
            fires.append(self._front(rng, x, y) if kinds[k] == "front" else self._piles(rng, x, y))
        return fires

    def _front(self, rng, x, y) -> Front:
        u = self.unit
        heading = self.mix["wind"] + rng.uniform(-0.45, 0.45)  # fronts run with the wind
        advance = rng.uniform(22, 48) * u
        x -= math.cos(heading) * advance / 2  # centred on where the camera looks mid-fire
        y -= math.sin(heading) * advance / 2
        length0 = rng.uniform(40, 80) * u
        length1 = length0 * rng.uniform(1.3, 1.8)
        n = int(2 * length1 + 8)
        wobble = (smooth_noise(rng, 1, n, max(2, int(12 * u)))[0] - 0.5) * 2 * (3.0 * u)
        return Front(x, y, heading, length0, length1, advance, max(2.0, rng.uniform(3.0, 6.0) * u),
                     rng.uniform(0.25, 0.6), wobble.astype(np.float32))

    def _piles(self, rng, x, y) -> PileGroup:
        u = self.unit
        k = int(rng.integers(1, 6))
        angle = rng.uniform(0, np.pi)
        spacing = rng.uniform(10, 18) * u
        offs = (np.arange(k) - (k - 1) / 2) * spacing
        xs = x + offs * math.cos(angle) + rng.normal(0, 2 * u, k)
        ys = y + offs * math.sin(angle) + rng.normal(0, 2 * u, k)
        r0 = np.maximum(1.5, rng.uniform(2.0, 4.5, k) * u)
        growth, phase = rng.uniform(0.2, 0.8, k), rng.uniform(0, 2 * np.pi, k)
        iy = np.clip(ys.astype(int), 0, self.world_h - 1)
        ix = np.clip(xs.astype(int), 0, self.world_w - 1)
        on_fuel = self.burnable[iy, ix]  # nobody burns slash on a road or a lake
        keep = on_fuel if on_fuel.any() else np.ones(k, bool)
        return PileGroup(xs[keep], ys[keep], r0[keep], growth[keep], phase[keep])

    def _make_plumes(self, rng: np.random.Generator) -> list[Plume]:
        plumes = []
        size = min(self.width, self.height)
        for fire in self.fires:
            draws = rng.uniform(0.75, 1.0), rng.uniform(0.3, 0.6) * size, rng.uniform(0.18, 0.35), rng.random()
            if self.mix["smoke"] <= 0 or (draws[3] < 0.15 and not self._every_fire_smokes):
                continue  # this one burns clean
            width0 = (4.0 if isinstance(fire, Front) else 2.5) * self.unit + 1
            plumes.append(Plume(fire, self.mix["smoke"] * draws[0], draws[1], draws[2], width0))
        return plumes

    # ---------------------------------------------------------------- one frame

    def _flame_noise(self, i: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Flicker: two world-fixed textures cross-faded frame to frame, in [-1, 1]."""
        a = math.cos(0.9 * i) ** 2
        n1, n2 = self.flame_noise
        mixed = n1[y0:y1, x0:x1] * a + n2[y0:y1, x0:x1] * (1 - a) - 0.5
        return np.clip(mixed * (2.0 / math.sqrt(a * a + (1 - a) ** 2)), -1.0, 1.0)

    def _draw_glints(self, base: np.ndarray, i: int, cx: int, cy: int) -> None:
        if not len(self.glints):
            return
        # Specular highlights come and go as the drone moves: a per-frame draw decides which show.
        on = self._stream("twinkle", i).random(len(self.glints)) < 0.35
        k = self._glint_spot
        r = k.shape[0] // 2
        h, w = self.height, self.width
        tint = np.float32(LIGHTS[self.mix["light"]][1])
        colour = np.minimum(255.0, GLINT_RGB * tint / tint.max())
        for gx, gy in self.glints[on]:
            x, y = int(gx) - cx, int(gy) - cy
            if -r <= x < w + r and -r <= y < h + r:
                ya, yb, xa, xb = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
                g = k[ya - y + r : yb - y + r, xa - x + r : xb - x + r, None]
                win = base[ya:yb, xa:xb]
                win += (colour - win) * g

    def _fires(self, i: int, t: float, cx: int, cy: int, base: np.ndarray):
        """Burn scars into `base`; returns (flame level or -1, glow strength, frame box holding both or None)."""
        h, w = self.height, self.width
        view = (cx, cy, cx + w, cy + h)
        level = np.full((h, w), -1.0, np.float32)
        glow = np.zeros((h, w), np.float32)
        boxes = []
        for fire in self.fires:
            margin = 5 * (3.0 * self.unit + 1.5) + (6 * float(fire.r0.max()) if isinstance(fire, PileGroup) else 0)
            box = _clip_box(fire.extent(t, margin), view)
            if box is None:
                continue
            x0, y0, x1, y1 = box
            boxes.append((x0 - cx, y0 - cy, x1 - cx, y1 - cy))
            X = np.arange(x0, x1, dtype=np.float32)[None, :]
            Y = np.arange(y0, y1, dtype=np.float32)[:, None]
            n = self._flame_noise(i, x0, y0, x1, y1)
            f = fire.field(X, Y, t, n, self.unit) if isinstance(fire, Front) else fire.field(X, Y, t, n, self.unit, i)
            fuel = self.burnable[y0:y1, x0:x1]
            burning = (f.sd < 0) & fuel
            sl = (slice(y0 - cy, y1 - cy), slice(x0 - cx, x1 - cx))
            scar = f.scar & fuel
            if scar.any():
                ash = self.scar_texture[y0:y1, x0:x1][scar][:, None]
                char = np.float32(CHAR) * (1 - ash * 0.6) + np.float32(ASH) * (ash * 0.6)
                win = base[sl]
                win[scar] = win[scar] * 0.15 + char * 0.85
            g = f.glow_strength * np.exp(-np.maximum(f.sd, 0.0) / f.glow_px)
            np.maximum(glow[sl], g, out=glow[sl])
            np.maximum(level[sl], np.where(burning, f.level, -1.0), out=level[sl])
        return level, glow, _union(boxes)

    def _smoke(self, i: int, t: float, cx: int, cy: int, glow: np.ndarray, fire_box):
        """(alpha H×W, smoke colour over the box, box (x0, y0, x1, y1) in the frame holding all smoke, or None)."""
        h, w = self.height, self.width
        alpha = np.zeros((h, w), np.float32)
        view = (cx, cy, cx + w, cy + h)
        wind = self.mix["wind"]
        boxes = [_clip_box(p.extent(t, wind, self.unit), view) for p in self.plumes]
        plumes = [p for p, b in zip(self.plumes, boxes) if b is not None]
        if not plumes:
            return alpha, np.zeros((0, 0, 3), np.float32), None
        x0, y0, x1, y1 = _union([b for b in boxes if b is not None])
        # The coarse grid: cell (J, I) covers world [J*f, J*f+f) × [I*f, I*f+f), sampled at its centre.
        f = self.smoke_step
        I0, J0, I1, J1 = x0 // f, y0 // f, -(-x1 // f) + 1, -(-y1 // f) + 1
        X = (np.arange(I0, I1, dtype=np.float32) * f + (f - 1) / 2)[None, :]
        Y = (np.arange(J0, J1, dtype=np.float32) * f + (f - 1) / 2)[:, None]
        # The texture drifts downwind; a second layer drifts slower, so the plume churns as it goes.
        drift = 1.3 * self.unit * i / f
        dx, dy = math.cos(wind) * drift, math.sin(wind) * drift
        s1, s2 = self.smoke_noise
        n1 = _wrapped_window(s1, J0 - int(dy), I0 - int(dx), J1 - J0, I1 - I0)
        n2 = _wrapped_window(s2, J0 - int(0.6 * dy), I0 - int(0.6 * dx), J1 - J0, I1 - I0)
        n = 0.65 * n1 + 0.35 * n2
        clear = np.ones(n.shape, np.float32)
        for plume in plumes:
            clear *= 1.0 - plume.opacity(X, Y, t, wind, n, self.unit)
        colour = (0.8 + 0.4 * n2)[..., None] * self._smoke_colour()
        # Upsample onto the fine grid, then keep the part inside the frame's smoke box.
        size, crop = ((I1 - I0) * f, (J1 - J0) * f), (slice(y0 - J0 * f, y1 - J0 * f), slice(x0 - I0 * f, x1 - I0 * f))
        box = (x0 - cx, y0 - cy, x1 - cx, y1 - cy)
        alpha[_box_slices(box)] = cv2.resize(1.0 - clear, size, interpolation=cv2.INTER_LINEAR)[crop]
        smoke_rgb = np.ascontiguousarray(cv2.resize(colour, size, interpolation=cv2.INTER_LINEAR)[crop])
        lit = _intersect(fire_box, box)
        if lit is not None:  # smoke over a fire glows: lit from below
            sl = (slice(lit[1] - box[1], lit[3] - box[1]), slice(lit[0] - box[0], lit[2] - box[0]))
            win = smoke_rgb[sl]
            win += glow[_box_slices(lit)][..., None] * SMOKE_FIRELIT
            np.clip(win, 0, 255, out=win)
        return alpha, smoke_rgb, box

    def _smoke_colour(self) -> np.ndarray:
        gain, tint, lift, _ = LIGHTS[self.mix["light"]]
        brown = (self._key % 97) / 96.0 * 0.7  # a fixed blend per scene: some fires smoke browner
        colour = np.float32(SMOKE_GREY) * (1 - brown) + np.float32(SMOKE_BROWN) * brown
        return colour * (gain * np.float32(tint)) + lift

    def layers(self, i: int) -> FrameLayers:
        """The parts frame i is composed of (before any shift)."""
        h, w = self.height, self.width
        t = self.progress(i)
        cx, cy = self.camera(i)
        base = self.world[cy : cy + h, cx : cx + w].copy()
        self._draw_glints(base, i, cx, cy)
        level, glow, fire_box = self._fires(i, t, cx, cy, base)
        flame = level >= 0
        flame_rgb = np.zeros((h, w, 3), np.float32)
        if fire_box is not None:
            sl = _box_slices(fire_box)
            win = base[sl]
            win += glow[sl][..., None] * GLOW_RGB
            np.clip(win, 0, 255, out=win)
            if flame[sl].any():
                self._paint_flame_colours(flame_rgb[sl], win, flame[sl], level[sl])
        alpha, smoke_rgb, smoke_box = self._smoke(i, t, cx, cy, glow, fire_box)
        return FrameLayers(base, flame, flame_rgb, alpha, smoke_rgb, smoke_box, fire_box)

    @staticmethod
    def _paint_flame_colours(flame_rgb: np.ndarray, base: np.ndarray, flame: np.ndarray, level: np.ndarray) -> None:
        """Flame colours from the palette. Where a flame happens to match the glow it covers, push its red
        channel away, so every visible flame pixel changes the output byte (after thin smoke and rounding)."""
        f = FLAME_LUT[(level[flame] * 255).astype(np.int32)]
        b = base[flame]
        close = np.abs(f - b).max(axis=1) < MIN_FLAME_CONTRAST
        if close.any():
            red = b[close, 0]
            f[close, 0] = np.where(red < 128, red + MIN_FLAME_CONTRAST, red - MIN_FLAME_CONTRAST)
        flame_rgb[flame] = f

    def compose(self, layers: FrameLayers, paint_flames: bool = True, *, reuse_base: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
        """(rgb, mask) from the layers; reuse_base=True paints into layers.base (faster, spends the layers)."""
        visible = layers.visible_flame
        out = layers.base if reuse_base else layers.base.copy()
        if paint_flames and layers.fire_box is not None:
            sl = _box_slices(layers.fire_box)
            np.copyto(out[sl], layers.flame_rgb[sl], where=visible[sl][..., None])
        if layers.smoke_box is not None:
            sl = _box_slices(layers.smoke_box)
            a = np.ascontiguousarray(layers.smoke_alpha[sl])
            out[sl] = cv2.blendLinear(np.ascontiguousarray(out[sl]), layers.smoke_rgb, 1.0 - a, a)
        # Every input is within [0, 255], so rounding needs no clipping (convertScaleAbs rounds to nearest).
        return cv2.convertScaleAbs(out), visible.view(np.uint8) * np.uint8(255)

    def render(self, i: int, paint_flames: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(rgb uint8 H×W×3, mask uint8 H×W with 255 = visible flame) for frame i.

        paint_flames=False renders the identical frame without flames (same mask): the proof that
        masks are exact. With a shift, the shifted frame comes back; the mask never changes.
        """
        rgb, mask = self.compose(self.layers(i), paint_flames, reuse_base=True)
        if self.shift:
            rgb = self.shifted(rgb, i)
        return rgb, mask

    def shifted(self, rgb: np.ndarray, i: int) -> np.ndarray:
        """This scene's shift on frame i: the same weather all flight, fresh sensor noise each frame."""
        return apply_shift(rgb, self.shift, self._stream("shift"), self.shift_strength,
                           noise_rng=self._stream("sensor", i))


def mask_is_exact(scene: SyntheticScene, i: int) -> bool:
    """True when frame i's mask marks exactly the pixels the flames changed (before any shift)."""
    layers = scene.layers(i)
    rgb, mask = scene.compose(layers)
    bare, bare_mask = scene.compose(layers, paint_flames=False)
    changed = (rgb != bare).any(axis=2)
    return bool(np.array_equal(changed, mask > 0) and np.array_equal(mask, bare_mask)
                and set(np.unique(mask).tolist()) <= {0, 255})
