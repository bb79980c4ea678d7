"""Noise injection for the filter benchmark: images a data-cleaning step should drop.

Each kind imitates a real failure of a chest X-ray dataset. The kind is recorded
in the manifest's ``noise_kind`` (for evaluation only; the filter never reads it).
All functions take and return a float image in [0, 1] and draw randomness only
from the given generator, so a (seed, kind) pair always gives the same image.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import gaussian_filter, map_coordinates

from services.data.phantom.anatomy import Canvas


def heavy_blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return gaussian_filter(img, rng.uniform(0.025, 0.045) * img.shape[0])


def low_snr(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = img + rng.normal(0, rng.uniform(0.18, 0.3), img.shape)
    return np.clip(noisy, 0, 1)


def geometric_distortion(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = img.shape[0]
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    amp = rng.uniform(0.04, 0.07) * n
    fy, fx = rng.uniform(1.0, 2.5, size=2) * 2 * math.pi / n
    shear = rng.uniform(-0.35, 0.35)
    src_x = x + amp * np.sin(fy * y + rng.uniform(0, 6)) + shear * (y - n / 2)
    src_y = y + amp * np.sin(fx * x + rng.uniform(0, 6))
    return map_coordinates(img, [src_y, src_x], order=1, mode="constant", cval=0.0)


def lateral_view(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A lateral chest view instead of a frontal one: spine posterior, one lung field, heart anterior."""
    cv = Canvas(img.shape[0])
    body = cv.ellipse(0.5, 0.55, 0.34, 0.5)
    lung = cv.ellipse(0.52, 0.45, 0.22, 0.28) * (cv.v < 0.7)
    heart = cv.ellipse(0.4, 0.58, 0.13, 0.13)
    spine = ((cv.u > 0.72) & (cv.u < 0.8) & (cv.v > 0.05)).astype(np.float32)
    sternum = ((cv.u > 0.2) & (cv.u < 0.23) & (cv.v > 0.25) & (cv.v < 0.6)).astype(np.float32)
    att = 0.5 * body - 0.33 * np.clip(lung - heart, 0, 1) + 0.2 * spine * body + 0.15 * sternum
    att += 0.05 * cv.blur(rng.standard_normal(att.shape).astype(np.float32), 0.01)
    return np.clip(cv.blur(att, 0.004) * rng.uniform(1.0, 1.3), 0, 1)


def non_chest(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An abdominal/pelvic film instead of a chest: pelvic ring, lumbar spine, bowel gas."""
    cv = Canvas(img.shape[0])
    body = (np.abs(cv.u - 0.5) < 0.42).astype(np.float32)
    spine = ((np.abs(cv.u - 0.5) < 0.04) & (cv.v < 0.7)).astype(np.float32)
    pelvis = np.clip(cv.ellipse(0.5, 0.8, 0.3, 0.16) - cv.ellipse(0.5, 0.8, 0.24, 0.11), 0, 1)
    att = 0.55 * body + 0.25 * spine + 0.3 * pelvis
    for _ in range(rng.integers(6, 12)):
        att -= 0.25 * cv.ellipse(rng.uniform(0.25, 0.75), rng.uniform(0.2, 0.6), rng.uniform(0.03, 0.07), 0.03)
    return np.clip(cv.blur(att, 0.005), 0, 1)


def inverted(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 1.0 - img


def burned_in_text(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = img.shape[0]
    pil = Image.fromarray((img * 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default(size=max(8, n // 9))
    words = ["PORTABLE", "AP SUPINE", "L", "R", "UPRIGHT", "12/03", "STAT", "ER", "CXR"]
    for _ in range(rng.integers(3, 6)):
        x, y = rng.uniform(0.02, 0.7) * n, rng.uniform(0.02, 0.9) * n
        draw.text((x, y), str(rng.choice(words)), fill=255, font=font)
    for _ in range(rng.integers(1, 3)):  # lead markers
        x, y, w = rng.uniform(0.05, 0.85) * n, rng.uniform(0.05, 0.85) * n, n * 0.08
        draw.rectangle([x, y, x + w, y + w], fill=255)
    return np.asarray(pil, dtype=np.float32) / 255.0


def underexposed(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(img ** rng.uniform(2.2, 3.2) * rng.uniform(0.25, 0.4), 0, 1)


def overexposed(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(1.0 - (1.0 - img) ** rng.uniform(3.0, 5.0) * rng.uniform(0.3, 0.5), 0, 1)


def collimated(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tight collimation / wrong field: most of the chest cut off by black borders, or a zoomed corner."""
    n = img.shape[0]
    out = img.copy()
    if rng.random() < 0.5:
        top, left = rng.uniform(0.2, 0.35, size=2)
        bottom, right = rng.uniform(0.2, 0.35, size=2)
        mask = np.zeros_like(img)
        mask[int(top * n) : n - int(bottom * n), int(left * n) : n - int(right * n)] = 1
        return out * mask
    side = int(n * rng.uniform(0.35, 0.5))
    y0, x0 = rng.integers(0, n - side, size=2)
    crop = Image.fromarray(img[y0 : y0 + side, x0 : x0 + side].astype(np.float32), mode="F")
    return np.asarray(crop.resize((n, n), Image.BILINEAR), dtype=np.float32)


NOISE_KINDS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "heavy_blur": heavy_blur,
    "low_snr": low_snr,
    "geometric_distortion": geometric_distortion,
    "lateral_view": lateral_view,
    "non_chest": non_chest,
    "inverted": inverted,
    "burned_in_text": burned_in_text,
    "underexposed": underexposed,
    "overexposed": overexposed,
    "collimated": collimated,
}
