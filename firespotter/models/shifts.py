"""Domain shifts for adaptation tests: pure functions on a rendered RGB frame.

A shift changes how the camera sees the scene, never the scene itself, so the ground-truth mask stays
valid. Everything is deterministic given the seed. Two random streams are kept apart on purpose: the
shift's *parameters* (how strong the haze, which way the colour cast leans) come from `rng_or_seed`, the
per-pixel *noise* from `noise_rng`. A flight passes one parameter seed for every frame and a per-frame noise
seed, so the weather stays put while the sensor noise changes frame to frame.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from firespotter.runtime.images import decode_image

SHIFTS = ("haze", "lowlight", "colorcast", "blur", "noise", "jpeg")

def check_shift(kind: str) -> str:
    """The canonical name of a shift, or ValueError naming the known ones."""
    name = str(kind).strip().lower()
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {kind!r}; known shifts: {', '.join(SHIFTS)}")
    return name


def as_rng(rng_or_seed) -> np.random.Generator:
    """A Generator from a Generator, an int or a sequence of ints (negative ints allowed)."""
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if rng_or_seed is None:
        raise ValueError("shifts need a seed or a Generator: they must be deterministic")
    if isinstance(rng_or_seed, (int, np.integer)):
        rng_or_seed = [rng_or_seed]
    # SeedSequence refuses negative entries; fold them into the unsigned 64-bit range.
    return np.random.default_rng([int(v) % (1 << 64) for v in rng_or_seed])


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _low_frequency_field(rng: np.random.Generator, h: int, w: int, cells: int = 4) -> np.ndarray:
    """A smooth [0, 1] field across the frame: uneven haze, uneven light."""
    grid = rng.random((cells, cells), dtype=np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def haze(rgb: np.ndarray, rng: np.random.Generator, noise_rng: np.random.Generator, strength: float) -> np.ndarray:
    """Atmospheric scattering (Koschmieder): I = J t + A (1 - t), thicker in patches.

    The airlight is grey-white for haze, or brownish grey for a smoke veil from a fire out of view.
    """
    h, w = rgb.shape[:2]
    smoke_veil = rng.random() < 0.35
    airlight = np.array([190, 178, 160] if smoke_veil else [222, 226, 232], np.float32)
    airlight *= rng.uniform(0.92, 1.05)
    depth = 0.55 + 0.9 * _low_frequency_field(rng, h, w)  # optical depth varies across the view
    beta = strength * rng.uniform(0.8, 1.3)
    t = np.exp(-beta * depth)[..., None]
    return _to_uint8(rgb.astype(np.float32) * t + airlight * (1.0 - t))


def lowlight(rgb: np.ndarray, rng: np.random.Generator, noise_rng: np.random.Generator, strength: float) -> np.ndarray:
    """Dim light: less exposure, a steeper tone curve, and the noise a sensor adds when it pushes gain."""
    gain = rng.uniform(0.3, 0.5) ** strength
    gamma = 1.0 + strength * rng.uniform(0.4, 0.8)
    x = 255.0 * gain * (rgb.astype(np.float32) / 255.0) ** gamma
    x *= np.array([0.96, 1.0, 1.06], np.float32) ** strength  # high-ISO footage leans blue
    sigma = strength * (1.5 + 4.0 * np.sqrt(x / 255.0))  # shot noise grows with the signal
    return _to_uint8(x + sigma * noise_rng.standard_normal(x.shape, dtype=np.float32))


# Directions a wrong white balance leans (per-channel log gains): warm, cool, green, magenta.
_CASTS = np.array([[1.0, 0.1, -1.0], [-1.0, -0.1, 1.0], [-0.5, 1.0, -0.5], [0.6, -1.0, 0.6]], np.float32)


def colorcast(rgb: np.ndarray, rng: np.random.Generator, noise_rng: np.random.Generator, strength: float) -> np.ndarray:
    """A white-balance error: each channel scaled, along one of the usual directions with some jitter."""
    direction = _CASTS[rng.integers(len(_CASTS))] + rng.normal(0.0, 0.2, 3).astype(np.float32)
    log_gain = strength * rng.uniform(0.15, 0.25) * direction
    log_gain -= log_gain.mean()  # a cast, not an exposure change
    return _to_uint8(rgb.astype(np.float32) * np.exp(log_gain))


def _disk_kernel(radius: float) -> np.ndarray:
    r = max(1, int(np.ceil(radius)))
    k = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    cv2.circle(k, (r, r), r, 1.0, -1, lineType=cv2.LINE_AA)
    return k / k.sum()


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    r = max(1, int(np.ceil(length / 2)))
    k = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    dx, dy = r * np.cos(angle), r * np.sin(angle)
    cv2.line(k, (int(round(r - dx)), int(round(r - dy))), (int(round(r + dx)), int(round(r + dy))), 1.0, 1,
             lineType=cv2.LINE_AA)
    return k / k.sum()


def blur(rgb: np.ndarray, rng: np.random.Generator, noise_rng: np.random.Generator, strength: float) -> np.ndarray:
    """Defocus (a disk) or motion blur (a line along the flight or across it), sized to the frame."""
    size = max(1.0, strength * min(rgb.shape[:2]) / 128.0 * rng.uniform(0.9, 1.6))
    if rng.random() < 0.5:
        kernel = _disk_kernel(size)
    else:
        kernel = _motion_kernel(2.5 * size, rng.uniform(0, np.pi))
    return cv2.filter2D(rgb, -1, kernel, borderType=cv2.BORDER_REFLECT)


def noise(rgb: np.ndarray, rng: np.random.Generator, noise_rng: np.random.Generator, strength: float) -> np.ndarray:
    """Sensor noise: read noise plus shot noise, with a touch of per-row banding from the readout."""
    h, w = rgb.shape[:2]
    x = rgb.astype(np.float32)
    read, shot = strength * rng.uniform(4.0, 8.0), strength * rng.uniform(0.3, 0.6)
    sigma = np.sqrt(read * read + shot * shot * x)
    grain = noise_rng.standard_normal(x.shape, dtype=np.float32)
    rows = noise_rng.standard_normal((h, 1, 1), dtype=np.float32) * (0.25 * read)
    return _to_uint8(x + sigma * grain + rows)


def jpeg(rgb: np.ndarray, rng: np.random.Generator, noise_rng: np.random.Generator, strength: float) -> np.ndarray:
    """Blocking and ringing from a heavily compressed downlink (libjpeg is deterministic)."""
    quality = int(round(np.interp(strength, [0.0, 1.0, 2.0], [60.0, 12.0, 4.0]))) + int(rng.integers(-2, 3))
    quality = int(np.clip(quality, 2, 95))
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - libjpeg ships with every OpenCV wheel
        raise RuntimeError("OpenCV could not encode JPEG")
    return decode_image(buf)


_SHIFT_FUNCS: dict[str, Callable] = {
    "haze": haze, "lowlight": lowlight, "colorcast": colorcast, "blur": blur, "noise": noise, "jpeg": jpeg,
}
assert tuple(_SHIFT_FUNCS) == SHIFTS


def apply_shift(rgb: np.ndarray, kind: str, rng_or_seed, strength: float = 1.0, *, noise_rng=None) -> np.ndarray:
    """The frame as a shifted camera would see it: uint8 H×W×3 in, a new uint8 H×W×3 out.

    `rng_or_seed` (a Generator, an int or a sequence of ints) draws the shift's parameters; `noise_rng`
    (default: the same stream) draws per-pixel noise. strength 0 leaves the frame as it is; 1 is a
    clearly visible shift; 2 is harsh.
    """
    func = _SHIFT_FUNCS[check_shift(kind)]
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"apply_shift takes uint8 H×W×3 RGB, got {rgb.dtype} {rgb.shape}")
    if strength <= 0:
        return rgb.copy()
    rng = as_rng(rng_or_seed)
    return np.ascontiguousarray(func(rgb, rng, rng if noise_rng is None else as_rng(noise_rng), float(strength)))
