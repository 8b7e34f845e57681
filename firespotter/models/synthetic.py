"""A procedural aerial fire scene: a camera flying over generated terrain with spreading fires.

Deterministic: the same seed and size give the same bytes. Masks are exact: a pixel is fire in the mask
if and only if it was painted with flame colour. Everything is drawn in "world" coordinates on a terrain
larger than the frame, and each frame is the camera's window onto it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled with bicubic interpolation."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.random((gh, gw), dtype=np.float32)
    up = cv2.resize(grid, (gw * cell, gh * cell), interpolation=cv2.INTER_CUBIC)[:h, :w]
    return np.clip(up, 0.0, 1.0)


def fractal_noise(rng: np.random.Generator, h: int, w: int, base_cell: int, octaves: int = 3) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    total = 0.0
    for o in range(octaves):
        amp = 0.5**o
        out += amp * smooth_noise(rng, h, w, max(2, base_cell >> o))
        total += amp
    return out / total


# Terrain palettes (RGB): forest canopy, bare soil, snow.
FOREST = np.array([[34, 62, 30], [58, 92, 44], [80, 110, 60]], np.float32)
SOIL = np.array([[110, 92, 70], [140, 120, 92], [96, 84, 66]], np.float32)
SNOW = np.array([[220, 224, 230], [198, 204, 214], [240, 242, 245]], np.float32)


@dataclass
class Fire:
    cx: float  # world coordinates
    cy: float
    r0: float  # initial radius, px
    growth: float  # px per frame
    aspect: float
    angle: float
    seed: int


class SyntheticScene:
    """render(i) -> (rgb uint8 H×W×3, mask uint8 H×W with 255 = fire)."""

    def __init__(self, width: int = 256, height: int = 256, frames: int = 100, seed: int = 0, n_fires: int | None = None):
        if width < 16 or height < 16:
            raise ValueError("synthetic frames must be at least 16×16")
        self.width, self.height, self.frames, self.seed = width, height, max(1, frames), seed
        rng = np.random.default_rng(seed)
        # World: the frame plus room to fly over (1.5 frame widths of travel).
        self.world_w, self.world_h = int(width * 2.5), int(height * 1.5)
        self.terrain = self._terrain(rng)
        self.path = self._flight_path(rng)
        count = int(rng.integers(1, 4)) if n_fires is None else n_fires
        self.fires = [self._fire(rng, i) for i in range(count)]
        self.texture = fractal_noise(rng, self.world_h, self.world_w, max(4, min(width, height) // 16))

    def _terrain(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.world_h, self.world_w
        biome = fractal_noise(rng, h, w, max(8, min(self.width, self.height) // 2))
        detail = fractal_noise(rng, h, w, 6, octaves=2)
        snow_cover = float(rng.uniform(0.0, 0.6))
        img = np.zeros((h, w, 3), np.float32)
        for palette, lo, hi in ((SOIL, 0.0, 0.35), (FOREST, 0.35, 1.0 - snow_cover * 0.5), (SNOW, 1.0 - snow_cover * 0.5, 1.01)):
            sel = (biome >= lo) & (biome < hi)
            shade = palette[0] + (palette[1] - palette[0]) * detail[..., None] + (palette[2] - palette[0]) * (1 - detail[..., None]) * 0.3
            img[sel] = shade[sel]
        # Tree crowns: dark speckles on forest.
        crowns = (fractal_noise(rng, h, w, 3, octaves=1) > 0.7) & (biome >= 0.35) & (biome < 1.0 - snow_cover * 0.5)
        img[crowns] *= 0.6
        light = float(rng.uniform(0.75, 1.1))  # time of day
        return np.clip(img * light, 0, 255)

    def _flight_path(self, rng: np.random.Generator) -> tuple[float, float, float, float]:
        x0 = float(rng.uniform(0, self.world_w * 0.1))
        y0 = float(rng.uniform(0, self.world_h - self.height))
        x1 = float(self.world_w - self.width - rng.uniform(0, self.world_w * 0.1))
        y1 = float(rng.uniform(0, self.world_h - self.height))
        return x0, y0, x1, y1

    def _camera(self, i: int) -> tuple[int, int]:
        x0, y0, x1, y1 = self.path
        t = i / max(1, self.frames - 1)
        return int(round(x0 + (x1 - x0) * t)), int(round(y0 + (y1 - y0) * t))

    def _fire(self, rng: np.random.Generator, i: int) -> Fire:
        # Place fires along the flight path so the camera sees them.
        t = float(rng.uniform(0.15, 0.85))
        x0, y0, x1, y1 = self.path
        cx = x0 + (x1 - x0) * t + self.width / 2 + rng.uniform(-0.3, 0.3) * self.width
        cy = y0 + (y1 - y0) * t + self.height / 2 + rng.uniform(-0.3, 0.3) * self.height
        scale = min(self.width, self.height)
        return Fire(cx, cy, float(rng.uniform(0.02, 0.06) * scale), float(rng.uniform(0.0, 0.0015) * scale),
                    float(rng.uniform(0.5, 1.0)), float(rng.uniform(0, np.pi)), int(rng.integers(1 << 30)))

    def render(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        cx, cy = self._camera(i)
        h, w = self.height, self.width
        img = self.terrain[cy : cy + h, cx : cx + w].copy()
        tex = self.texture[cy : cy + h, cx : cx + w]
        heat = np.zeros((h, w), np.float32)  # > 1 inside a fire, falls off outside
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for f in self.fires:
            r = f.r0 + f.growth * i
            dx, dy = xx - (f.cx - cx), yy - (f.cy - cy)
            ca, sa = np.cos(f.angle), np.sin(f.angle)
            u, v = (dx * ca + dy * sa), (-dx * sa + dy * ca) / f.aspect
            dist = np.sqrt(u * u + v * v) / max(r, 1e-3)
            # Ragged edge: the texture perturbs the radius, and flickers a little frame to frame.
            flicker = 0.08 * np.sin(i * 0.9 + f.seed % 7)
            heat = np.maximum(heat, 1.0 + (0.35 + flicker) * (tex - 0.5) * 2 - dist + 0.35)
        fire = heat > 1.0
        glow = np.clip((heat - 0.6) / 0.4, 0, 1) * ~fire  # warm halo outside the fire, not painted as flame
        img = img * (1 - 0.35 * glow[..., None]) + np.array([255, 120, 40], np.float32) * (0.35 * glow[..., None])
        if fire.any():
            core = np.clip((heat - 1.0) / 0.5, 0, 1)[fire]  # 0 at the edge, 1 in the core
            red = 200 + 55 * core
            green = 60 + 170 * core**1.5
            blue = 20 + 120 * core**3
            img[fire] = np.stack([red, green, blue], axis=1)
        rgb = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        mask = np.where(fire, np.uint8(255), np.uint8(0))
        return rgb, mask
