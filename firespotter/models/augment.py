"""Augmentation for aerial fire imagery: geometry (scale, rotation, flips, crop) and photometry (colour
jitter, blur, haze, noise, JPEG), on uint8 RGB frames and their 0/255 masks, driven by a numpy Generator.

A drone sees the ground from above at any heading and many altitudes, so rotation is unrestricted and scale
varies widely; weather and optics change colour, contrast and sharpness, never the mask. One affine warp does
scale, rotation, flips and crop at once (one resampling, cheap at training sizes). Crops can be centred near a
fire pixel on purpose: aerial fires often cover under 1 % of a frame and random crops would rarely see one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from firespotter.runtime.images import decode_image


@dataclass(frozen=True)
class AugmentParams:
    scale: tuple[float, float] = (0.6, 1.6)  # zoom factor range (log-uniform) relative to the canonical frame
    rotate: bool = True  # a multiple of 90 degrees, half the time plus up to ±20 degrees
    flip: bool = True
    fire_centred: float = 0.6  # probability to centre the crop near a fire pixel (when the mask has one)
    # Probability (when not centred on fire) to centre the crop on a lure: a bright, warm pixel that is not fire
    # (a lamp, a sunset, an orange wall). A random crop of a 512-px negative mostly misses the one lamp in it.
    lure_centred: float = 0.0
    # Probability to dim the flames in a crop (darker, redder, the label unchanged): flames seen through a window,
    # smoke or a poor camera are dull red glows, while most labelled frames show the bright yellow-white core.
    flame_dim: float = 0.0
    color: float = 1.0  # strength of brightness/contrast/saturation/hue/gamma jitter (0 = off)
    blur: float = 0.25  # probability of a Gaussian or motion blur
    haze: float = 0.2  # probability of haze (airlight blended in)
    noise: float = 0.3  # probability of sensor noise
    jpeg: float = 0.2  # probability of JPEG re-compression
    osd: float = 0.15  # probability of on-screen-display text (timestamps, telemetry) burnt into the frame
    jitter: bool = True  # rotations: right angles plus, half the time, up to ±20 degrees

    @classmethod
    def light(cls) -> "AugmentParams":
        """For the last epochs: exact geometry (flips and right angles only, no resampling of the masks), mild
        colour; the network settles on the training frames' own scale and look."""
        return cls(scale=(1.0, 1.0), rotate=True, flip=True, fire_centred=0.6, color=0.3, blur=0.0, haze=0.0,
                   noise=0.0, jpeg=0.0, osd=0.0, jitter=False)

    def settled(self) -> "AugmentParams":
        """light(), keeping the lure-centred crops and dimmed flames (they choose what is seen, not how it is
        distorted)."""
        return replace(self.light(), lure_centred=self.lure_centred, flame_dim=self.flame_dim)

    @classmethod
    def none(cls) -> "AugmentParams":
        return cls(scale=(1.0, 1.0), rotate=False, flip=False, fire_centred=0.0, color=0.0, blur=0.0, haze=0.0,
                   noise=0.0, jpeg=0.0, osd=0.0)


def resize_to(rgb: np.ndarray, mask: np.ndarray | None, size: tuple[int, int]):
    """The canonical frame: resized to the model's (height, width) exactly as the backends do (INTER_AREA);
    the mask with nearest neighbour."""
    h, w = size
    if rgb.shape[:2] != (h, w):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    if mask is not None and mask.shape[:2] != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return rgb, mask


def lure_mask(rgb: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Bright, warm pixels that are not fire: what a colour rule would call fire (red high, red over green over
    blue), outside the fire mask and a few pixels away from it (a flame's own glow is not a lure)."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    lure = (r >= LURE_MIN_RED) & (r >= g) & (r - b >= LURE_RED_OVER_BLUE)
    if mask is not None and mask.any():
        lure &= cv2.dilate((mask > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    return lure


LURE_MIN_RED = 150
LURE_RED_OVER_BLUE = 50


def _crop_centre(mask: np.ndarray | None, rng: np.random.Generator, fire_centred: float, margin: float,
                 shape: tuple[int, int], rgb: np.ndarray | None = None, lure_centred: float = 0.0
                 ) -> tuple[float, float]:
    """Near a fire, near a lure, or anywhere. Near a fire means: a fire blob picked uniformly (so that small,
    faint fires are seen as often as the big one next to them), then a pixel of it, then a random offset. Near a
    lure: a lure pixel (lure_mask) picked uniformly, then a random offset."""
    h, w = shape

    def near(pixels: np.ndarray) -> tuple[float, float]:
        ys, xs = np.nonzero(pixels)
        k = int(rng.integers(len(ys)))
        jitter = rng.uniform(-margin, margin, 2)
        return float(xs[k] + jitter[0]), float(ys[k] + jitter[1])

    if mask is not None and fire_centred > 0 and rng.random() < fire_centred:
        n, labels = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=8)
        if n > 1:
            return near(labels == int(rng.integers(1, n)))
    if rgb is not None and lure_centred > 0 and rng.random() < lure_centred:
        lures = lure_mask(rgb, mask)
        if lures.any():
            return near(lures)
    return float(rng.uniform(0, w)), float(rng.uniform(0, h))


def geometric(rgb: np.ndarray, mask: np.ndarray | None, crop: int, rng: np.random.Generator, p: AugmentParams):
    """Scale, rotate, flip and crop `crop`×`crop` in one warp. Outside the frame: reflected pixels (mask too)."""
    h, w = rgb.shape[:2]
    lo, hi = p.scale
    s = math.exp(rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
    angle = 0.0
    if p.rotate:  # right angles keep the pixel grid (small fires stay sharp); the jitter covers the rest
        angle = int(rng.integers(4)) * math.pi / 2
        if rng.random() < 0.5 and p.jitter:
            angle += math.radians(rng.uniform(-20.0, 20.0))
    fx = -1.0 if (p.flip and rng.random() < 0.5) else 1.0
    cx, cy = _crop_centre(mask, rng, p.fire_centred, 0.35 * crop / s, (h, w), rgb, p.lure_centred)
    if s < 0.95:  # zooming out: average pixels first (warpAffine would alias), then warp at the remaining scale
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        if mask is not None:
            mask = np.where(cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_AREA) >= 128, 255, 0).astype(np.uint8)
        cx, cy, s = cx * nw / w, cy * nh / h, s * w / nw
    # Output pixel (u, v) -> source: centre + R(angle) · diag(fx, 1) · ((u, v) - crop/2) / s
    c, sn = math.cos(angle) / s, math.sin(angle) / s
    if s == 1.0 and abs(angle / (math.pi / 2) - round(angle / (math.pi / 2))) < 1e-9:
        c, sn = round(c), round(sn)  # right angles exactly: the warp then copies pixels, resampling nothing
    a = np.array([[c * fx, -sn, 0.0], [sn * fx, c, 0.0]], np.float64)
    half = (crop - 1) / 2.0
    cx, cy = round(cx - half) + half, round(cy - half) + half  # on the pixel grid: whole-pixel shifts stay exact
    a[0, 2] = cx - (a[0, 0] * half + a[0, 1] * half)
    a[1, 2] = cy - (a[1, 0] * half + a[1, 1] * half)
    flags = cv2.WARP_INVERSE_MAP
    out = cv2.warpAffine(rgb, a, (crop, crop), flags=flags | cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    out_mask = None
    if mask is not None:
        m = cv2.warpAffine(mask, a, (crop, crop), flags=flags | cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        out_mask = np.where(m >= 128, 255, 0).astype(np.uint8)
    return out, out_mask


def photometric(rgb: np.ndarray, rng: np.random.Generator, p: AugmentParams) -> np.ndarray:
    """Colour jitter, then optionally haze, blur, noise and JPEG. The mask never changes."""
    x = rgb.astype(np.float32) / 255.0
    if p.color > 0:
        k = p.color
        # Hue shift small (fire stays fire-coloured), saturation and value larger.
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-8, 8) * k) % 360.0
        hsv[..., 1] *= float(np.clip(1.0 + rng.uniform(-0.35, 0.35) * k, 0.2, 2.0))
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        contrast = 1.0 + rng.uniform(-0.3, 0.3) * k
        bright = rng.uniform(-0.12, 0.12) * k
        mean = x.mean()
        x = (x - mean) * contrast + mean + bright
        x *= (1.0 + rng.uniform(-0.06, 0.06, 3) * k).astype(np.float32)  # white balance
        np.clip(x, 0.0, 1.0, out=x)
        x **= float(math.exp(rng.uniform(-0.3, 0.3) * k))  # gamma
    if p.haze and rng.random() < p.haze:
        t = rng.uniform(0.55, 0.9)  # transmission
        air = np.float32(rng.uniform(0.75, 0.95)) * (1.0 + rng.uniform(-0.04, 0.04, 3)).astype(np.float32)
        x = x * t + air * (1.0 - t)
    if p.blur and rng.random() < p.blur:
        if rng.random() < 0.6:
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.6))
        else:
            length = int(rng.integers(3, 8))
            kernel = np.zeros((length, length), np.float32)
            kernel[length // 2, :] = 1.0 / length
            rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1.0)
            kernel = cv2.warpAffine(kernel, rot, (length, length))
            kernel /= max(kernel.sum(), 1e-6)
            x = cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    if p.noise and rng.random() < p.noise:
        x = x + rng.normal(0.0, rng.uniform(0.005, 0.03), x.shape).astype(np.float32)
    out = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if p.osd and rng.random() < p.osd:
        out = osd_text(out, rng)
    if p.jpeg and rng.random() < p.jpeg:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY,
                                                                            int(rng.integers(35, 90))])
        if ok:
            out = decode_image(buf)
    return out


def osd_text(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera/telemetry text burnt into the picture (drone OSDs, fixed cameras' timestamps): white or yellow,
    sometimes outlined. Never fire, whatever its colour, so the mask stays as it is."""
    out = rgb.copy()
    h, w = out.shape[:2]
    scale = rng.uniform(0.25, 0.6) * w / 256
    thick = max(1, int(round(scale * 2)))
    colour = [(255, 255, 255), (255, 255, 210), (255, 230, 40), (250, 250, 250)][int(rng.integers(4))]
    for _ in range(int(rng.integers(1, 3))):
        text = "".join(str(int(d)) for d in rng.integers(0, 10, int(rng.integers(6, 14))))
        text = f"{text[:4]}-{text[4:6]} {text[6:]}" if rng.random() < 0.5 else f"ALT {text[:3]}m H{text[3:]}"
        org = (int(rng.uniform(0, 0.5 * w)), int(rng.uniform(0.05 * h, h)))
        if rng.random() < 0.5:
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    return out


def augment(rgb: np.ndarray, mask: np.ndarray | None, crop: int, rng: np.random.Generator,
            p: AugmentParams = AugmentParams()):
    """(rgb crop×crop×3 uint8, mask crop×crop uint8 0/255 or None)."""
    out, out_mask = geometric(rgb, mask, crop, rng, p)
    if p.flame_dim > 0 and out_mask is not None and out_mask.any() and rng.random() < p.flame_dim:
        out = dim_flames(out, out_mask, rng)
    return photometric(out, rng, p), out_mask


def dim_flames(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The fire pixels (with a soft edge) darkened to 35-75 % and shifted to red: a glow behind glass or smoke."""
    alpha = cv2.GaussianBlur((mask > 0).astype(np.float32), (0, 0), 1.5)[..., None]
    gain = np.float32(rng.uniform(0.35, 0.75)) * np.array([1.0, rng.uniform(0.6, 0.9), rng.uniform(0.5, 0.9)],
                                                          np.float32)
    x = rgb.astype(np.float32)
    return np.clip(x * (1.0 - alpha) + x * gain * alpha + 0.5, 0, 255).astype(np.uint8)


def paste_flame(rgb: np.ndarray, mask: np.ndarray | None, donor_rgb: np.ndarray, donor_mask: np.ndarray,
                rng: np.random.Generator, size: tuple[float, float] = (0.03, 0.7)):
    """Cut one flame (a connected component of donor_mask, with a margin) out of a donor frame and blend it into
    rgb at a random place and size (its longer side a log-uniform fraction `size` of the frame's shorter side).

    Real flames on aerial and negative backgrounds teach "flame-shaped and flame-coloured is fire wherever it is"
    at every scale, from a FLAME-size blob to a frame-filling front. The edge is feathered so that the network
    cannot learn the paste seam. Returns (rgb, mask) new arrays; the mask gains the pasted flame."""
    import cv2 as _cv2

    h, w = rgb.shape[:2]
    out_mask = np.zeros((h, w), np.uint8) if mask is None else mask.copy()
    n, labels, stats, _ = _cv2.connectedComponentsWithStats((donor_mask > 0).astype(np.uint8), connectivity=8)
    if n <= 1:
        return rgb.copy(), out_mask
    areas = stats[1:, _cv2.CC_STAT_AREA].astype(np.float64)
    k = 1 + int(rng.choice(n - 1, p=areas / areas.sum()))
    x, y, bw, bh = (int(v) for v in stats[k, :4])
    pad = max(2, int(0.15 * max(bw, bh)))
    dh, dw = donor_mask.shape[:2]
    x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(dw, x + bw + pad), min(dh, y + bh + pad)
    piece = donor_rgb[y0:y1, x0:x1]
    piece_mask = (donor_mask[y0:y1, x0:x1] > 0).astype(np.float32)
    side = math.exp(rng.uniform(math.log(size[0]), math.log(size[1]))) * min(h, w)
    scale = side / max(piece.shape[:2])
    pw, ph = max(2, int(round(piece.shape[1] * scale))), max(2, int(round(piece.shape[0] * scale)))
    if pw > w or ph > h:
        shrink = min(w / pw, h / ph)
        pw, ph = max(2, int(pw * shrink)), max(2, int(ph * shrink))
    interp = _cv2.INTER_AREA if scale < 1 else _cv2.INTER_LINEAR
    piece = _cv2.resize(piece, (pw, ph), interpolation=interp).astype(np.float32)
    piece_mask = _cv2.resize(piece_mask, (pw, ph), interpolation=_cv2.INTER_LINEAR)
    alpha = _cv2.GaussianBlur(piece_mask, (0, 0), max(0.6, 0.02 * max(pw, ph)))
    alpha = np.clip(np.maximum(alpha, piece_mask) * 1.0, 0.0, 1.0)[..., None]
    px, py = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
    out = rgb.copy()
    region = out[py:py + ph, px:px + pw].astype(np.float32)
    out[py:py + ph, px:px + pw] = np.clip(region * (1.0 - alpha) + piece * alpha + 0.5, 0, 255).astype(np.uint8)
    out_mask[py:py + ph, px:px + pw] |= np.where(piece_mask >= 0.5, 255, 0).astype(np.uint8)
    return out, out_mask
