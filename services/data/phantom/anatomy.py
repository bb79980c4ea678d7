"""Seeded anatomy of a frontal (PA) chest radiograph phantom, as attenuation layers.

Coordinates are fractions of the image side: ``u`` left→right, ``v`` top→bottom.
Radiological convention: the patient's right is on the image *left*, so
"right lung" means small ``u``. Everything is drawn as attenuation (higher =
whiter on the film) and turned into film intensity at the end (``render.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

SUPERSAMPLE = 2  # line layers are drawn at 2x and downsampled: anti-aliasing for free


@dataclass
class Anatomy:
    """Per-seed body parameters (all in image fractions)."""

    cx: float  # midline
    half_width: float  # thorax half-width at its widest
    apex: float  # lung apex height
    dome_right: float  # top of the right (image-left) hemidiaphragm dome
    dome_left: float
    ctr: float  # cardiothoracic ratio
    heart_height: float
    mediastinum: float  # width of the upper mediastinum
    rib_spacing: float
    gain: float
    gamma: float
    film_noise: float
    rotation: float  # degrees
    shift_heart: float = 0.0  # mediastinal shift (atelectasis pulls it toward the collapsed side)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Anatomy:
        dome = rng.uniform(0.66, 0.74)
        return cls(
            cx=0.5 + rng.normal(0, 0.008),
            half_width=rng.uniform(0.35, 0.41),
            apex=rng.uniform(0.12, 0.17),
            dome_right=dome,
            dome_left=dome + rng.uniform(0.01, 0.035),
            ctr=rng.uniform(0.38, 0.47),
            heart_height=rng.uniform(0.2, 0.24),
            mediastinum=rng.uniform(0.12, 0.15),
            rib_spacing=rng.uniform(0.052, 0.062),
            gain=rng.uniform(0.9, 1.1),
            gamma=rng.uniform(0.85, 1.15),
            film_noise=rng.uniform(0.008, 0.02),
            rotation=rng.normal(0, 1.5),
        )

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


class Canvas:
    """Grids and drawing helpers at one image size."""

    def __init__(self, size: int) -> None:
        self.size = size
        axis = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.u, self.v = np.meshgrid(axis, axis)

    def blur(self, layer: np.ndarray, sigma_frac: float) -> np.ndarray:
        """Gaussian blur with sigma given as a fraction of the image side."""
        sigma = sigma_frac * self.size
        return layer if sigma < 0.3 else gaussian_filter(layer, sigma, mode="nearest")

    def lines(self, polylines: list[tuple[list[tuple[float, float]], float, float]]) -> np.ndarray:
        """Draw (points, width_frac, value) polylines; returns a float layer."""
        big = self.size * SUPERSAMPLE
        img = Image.new("F", (big, big), 0.0)
        draw = ImageDraw.Draw(img)
        for points, width, value in polylines:
            pts = [(x * big, y * big) for x, y in points]
            draw.line(pts, fill=float(value), width=max(1, round(width * big)), joint="curve")
        return np.asarray(img.resize((self.size, self.size), Image.BILINEAR), dtype=np.float32)

    def ellipse(self, cu: float, cv: float, ru: float, rv: float, angle: float = 0.0) -> np.ndarray:
        """Soft-edged filled ellipse (1 inside, 0 outside)."""
        c, s = math.cos(angle), math.sin(angle)
        du, dv = self.u - cu, self.v - cv
        r = ((du * c + dv * s) / ru) ** 2 + ((-du * s + dv * c) / rv) ** 2
        edge = 1.5 / (self.size * min(ru, rv))
        return np.clip((1.0 - r) / max(edge, 1e-6), 0.0, 1.0)


def thorax_mask(cv: Canvas, a: Anatomy) -> np.ndarray:
    """Body silhouette: neck, shoulders, chest wall, upper abdomen; outside is air."""
    u, v = cv.u, cv.v
    half = a.half_width + 0.06 + 0.06 * np.exp(-(((v - 0.13) / 0.07) ** 2)) * (v > 0.07)
    neck = (np.abs(u - a.cx) < 0.085) & (v < 0.12)
    body = ((np.abs(u - a.cx) < half) & (v > 0.07)) | neck
    return cv.blur(body.astype(np.float32), 0.008)


def lung_masks(cv: Canvas, a: Anatomy, heart: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right lung on the image left, left lung on the image right), soft masks.

    Each lung: a rounded apex, a lateral wall that bows outwards, a medial border along the
    mediastinum, and a domed base ending in a sharp, deep costophrenic angle.
    """
    u, v = cv.u, cv.v
    masks = []
    for sign, dome in ((-1, a.dome_right), (1, a.dome_left)):
        d = sign * (u - a.cx)  # distance from the midline towards this lung's side
        t = np.clip((v - a.apex) / (dome - a.apex), 0, 1.2)
        apex_d = 0.1 + a.mediastinum / 2
        lateral = apex_d + (a.half_width - apex_d) * np.sin(np.clip(t / 0.6, 0, 1) * math.pi / 2) ** 0.55
        medial = apex_d - (apex_d - a.mediastinum / 2) * np.sin(np.clip(t / 0.3, 0, 1) * math.pi / 2) ** 0.6
        centre = (a.mediastinum / 2 + a.half_width) / 2
        span = (a.half_width - a.mediastinum / 2) / 2
        floor = dome + 0.07 * ((d - centre) / span) ** 2 + 0.03 * np.clip((d - centre) / span, 0, 1) ** 4
        inside = (d > medial) & (d < lateral) & (v > a.apex) & (v < floor)
        mask = cv.blur(inside.astype(np.float32), 0.004)
        masks.append(np.clip(mask - heart * 1.2, 0, 1))
    return masks[0], masks[1]


def heart_mask(cv: Canvas, a: Anatomy) -> tuple[np.ndarray, float, float]:
    """Soft heart silhouette sitting on the left hemidiaphragm, and its centre (u, v).

    Its width is ``ctr`` × the thoracic width; two thirds of it lie left of the midline.
    """
    width = a.ctr * 2 * a.half_width
    cu = a.cx + 0.17 * width + a.shift_heart
    cv_ = a.dome_left - a.heart_height * 0.25
    heart = cv.ellipse(cu, cv_, width / 2, a.heart_height / 2, angle=-0.3)
    return cv.blur(heart, 0.004), cu, cv_


def mediastinum_mask(cv: Canvas, a: Anatomy, widen: float = 1.0) -> np.ndarray:
    """Upper mediastinum (great vessels, aortic knob) above the heart; ``widen`` > 1 widens it."""
    u, v = cv.u, cv.v
    width = a.mediastinum * widen
    band = (np.abs(u - a.cx - a.shift_heart * 0.5) < width / 2) & (v > 0.05) & (v < a.dome_left - 0.05)
    knob = cv.ellipse(a.cx + width / 2 + 0.004, a.apex + 0.12, 0.032 * widen**0.5, 0.028)
    return np.clip(cv.blur(band.astype(np.float32), 0.006) + knob, 0, 1)


def trachea_polylines(a: Anatomy) -> list[tuple[list[tuple[float, float]], float, float]]:
    """Air column of the trachea and the two main bronchi (negative attenuation)."""
    carina = (a.cx + 0.005, a.apex + 0.15)
    return [
        ([(a.cx, 0.02), carina], 0.03, -0.12),
        ([carina, (a.cx - 0.07, a.apex + 0.21)], 0.016, -0.09),
        ([carina, (a.cx + 0.07, a.apex + 0.23)], 0.016, -0.09),
    ]


def rib_polylines(a: Anatomy, rng: np.random.Generator) -> list[tuple[int, list[tuple[float, float]]]]:
    """Posterior ribs as (side, points), side -1 = image left (patient right), +1 = image right."""
    ribs = []
    for sign in (-1, 1):
        for i in range(10):
            v0 = a.apex - 0.025 + i * a.rib_spacing
            pts = []
            for k in range(13):
                t = k / 12
                x = a.cx + sign * (0.03 + t * (a.half_width + 0.03))
                y = v0 - 0.035 * math.sin(math.pi * min(t * 1.6, 1.0)) + 0.16 * t**2
                pts.append((x, y + rng.normal(0, 0.0008)))
            ribs.append((sign, pts))
    return ribs


def vessel_polylines(
    a: Anatomy, hila: tuple[tuple[float, float], tuple[float, float]], rng: np.random.Generator
) -> list[tuple[list[tuple[float, float]], float, float]]:
    """Branching pulmonary vessels radiating from each hilum, thinning towards the periphery."""
    out = []
    for sign, (hu, hv) in zip((-1, 1), hila, strict=True):
        for _ in range(22):
            angle = rng.uniform(-1.25, 1.35) * math.pi / 2  # from up (-) to down (+), outward
            length = rng.uniform(0.12, 0.3)
            x, y, width = hu, hv, 0.009
            pts = [(x, y)]
            for _step in range(6):
                angle += rng.normal(0, 0.2)
                x += sign * math.cos(angle) * length / 6
                y += math.sin(angle) * length / 6
                pts.append((x, y))
            out.append((pts, width, 0.1))
            for j in range(2, len(pts) - 1, 2):  # side branches
                bx, by = pts[j]
                b_angle = angle + rng.choice([-1, 1]) * rng.uniform(0.4, 0.9)
                end = (bx + sign * math.cos(b_angle) * 0.05, by + math.sin(b_angle) * 0.05)
                out.append(([(bx, by), end], 0.004, 0.05))
    return out
