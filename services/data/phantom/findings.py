"""Radiographic signatures of the 11 evaluated diseases (plus devices and pleural thickening).

Each finding is placed by laterality (sign -1 = patient right = image left,
+1 = patient left = image right) and scaled by a severity in (0, 1]. Functions
that change the anatomy itself (heart size, mediastinum, volume loss) run
before the masks are built; the others add attenuation to ``scene.att``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.special import expit

from services.data.phantom.anatomy import Anatomy, Canvas

#: Severity words (from the labeler's details) → scale in (0, 1].
SEVERITY_SCALE: dict[str, float] = {
    "tiny": 0.2,
    "small": 0.35,
    "mild": 0.4,
    "moderate": 0.65,
    "large": 0.9,
    "severe": 0.95,
}


@dataclass
class Scene:
    """What findings draw into: the canvas, anatomy, attenuation and per-side masks."""

    cv: Canvas
    a: Anatomy
    rng: np.random.Generator
    att: np.ndarray
    lungs: dict[int, np.ndarray]
    hila: dict[int, tuple[float, float]]
    vessel_mask: dict[int, np.ndarray]
    vessel_blur: float = 0.0
    broken_ribs: list[tuple[int, int, float]] = field(default_factory=list)  # (side, rib index, break point)


# ------------------------------------------------------------------ anatomy-level (before masks)
def enlarge_heart(a: Anatomy, s: float) -> None:
    """Cardiomegaly: cardiothoracic ratio 0.55 (mild) to 0.71 (severe)."""
    a.ctr = 0.52 + 0.2 * s


def widen_mediastinum(s: float) -> float:
    """Enlarged cardiomediastinum: upper mediastinal width × 1.6–2.4."""
    return 1.55 + 0.9 * s


def volume_loss(a: Anatomy, sign: int, s: float) -> None:
    """Atelectasis: the hemidiaphragm rises and the mediastinum shifts towards the collapsed side."""
    if sign < 0:
        a.dome_right -= 0.02 + 0.04 * s
    else:
        a.dome_left -= 0.02 + 0.04 * s
    a.shift_heart += sign * 0.012 * s


def break_ribs(scene: Scene, sign: int, s: float) -> None:
    """Fracture: 2–3 posterior ribs on the side get a cortical break with a step-off and a callus."""
    count = 2 + int(s > 0.6)
    first = int(scene.rng.integers(2, 9 - count))
    t = float(scene.rng.uniform(0.55, 0.8))  # consecutive ribs broken along one line, as in a fall
    for rib in range(first, first + count):
        scene.broken_ribs.append((sign, rib, t + float(scene.rng.uniform(-0.04, 0.04))))


# ------------------------------------------------------------------ lung-field findings
def _side(scene: Scene, sign: int) -> np.ndarray:
    return (np.sign(scene.cv.u - scene.a.cx) == sign).astype(np.float32)


def _point_in(scene: Scene, mask: np.ndarray, v_lo: float, v_hi: float) -> tuple[float, float]:
    """A random point where ``mask`` is solid, between heights v_lo and v_hi."""
    cv = scene.cv
    ok = np.argwhere((mask > 0.95) & (cv.v > v_lo) & (cv.v < v_hi))
    if len(ok) == 0:
        ok = np.argwhere(mask > 0.5)
    y, x = ok[scene.rng.integers(len(ok))]
    return (x + 0.5) / cv.size, (y + 0.5) / cv.size


def effusion(scene: Scene, sign: int, s: float) -> None:
    """Basal homogeneous opacity with a meniscus (higher laterally) that blunts the costophrenic angle."""
    cv, a = scene.cv, scene.a
    dome = a.dome_right if sign < 0 else a.dome_left
    angle_v = dome + 0.085
    height = 0.02 + 0.33 * s**1.5
    lateral = np.clip(sign * (cv.u - a.cx) / a.half_width, 0, 1)
    level = angle_v - height - 0.1 * s * lateral**2
    fluid = expit((cv.v - level) / 0.008)
    lung = scene.lungs[sign]
    pleural_space = np.clip(cv.blur(lung, 0.012) * 3, 0, 1) * (cv.v < angle_v + 0.05)
    region = fluid * pleural_space
    scene.att += region * (0.34 * lung + 0.08 * (1 - lung))
    scene.vessel_mask[sign] = scene.vessel_mask[sign] * (1 - region)


def pneumothorax(scene: Scene, sign: int, s: float) -> None:
    """Lucent apical/lateral rim without lung markings, bounded by a thin visceral pleural line."""
    cv = scene.cv
    lung = scene.lungs[sign]
    hu, hv = scene.hila[sign]
    f = 1 - (0.1 + 0.32 * s)
    rows = (hv + (cv.v - hv) / f) * cv.size - 0.5
    cols = (hu + (cv.u - hu) / f) * cv.size - 0.5
    inner = map_coordinates(lung, [rows, cols], order=1, mode="constant", cval=0.0)
    rim = np.clip(lung - inner, 0, 1)
    line = np.clip(np.abs(inner - cv.blur(inner, 0.006)) * 3.0, 0, 1) * (lung > 0.5)
    scene.att += -0.07 * rim + 0.16 * line
    scene.vessel_mask[sign] = scene.vessel_mask[sign] * inner


def edema(scene: Scene, s: float) -> None:
    """Bilateral perihilar (bat-wing) haze, Kerley B septal lines at the bases, indistinct vessels."""
    cv, a = scene.cv, scene.a
    lines = []
    for sign in (-1, 1):
        hu, hv = scene.hila[sign]
        haze = cv.ellipse(hu + sign * 0.03, hv, 0.1 + 0.05 * s, 0.12 + 0.05 * s)
        scene.att += cv.blur(haze, 0.03) * scene.lungs[sign] * (0.1 + 0.16 * s)
        dome = a.dome_right if sign < 0 else a.dome_left
        edge = a.cx + sign * (a.half_width - 0.015)
        for k in range(4 + int(5 * s)):
            y = dome + 0.06 - k * 0.014
            lines.append(([(edge, y), (edge - sign * (0.025 + 0.01 * s), y)], 0.003, 0.12 + 0.08 * s))
    scene.att += cv.lines(lines) * (scene.lungs[-1] + scene.lungs[1])
    scene.vessel_blur = 0.004 + 0.006 * s


def _air_bronchograms(scene: Scene, cu: float, cv_: float, reach: float) -> np.ndarray:
    rng = scene.rng
    lines = []
    for _ in range(4):
        angle = rng.uniform(0, 2 * math.pi)
        pts = [(cu, cv_)]
        for _step in range(4):
            angle += rng.normal(0, 0.3)
            pts.append((pts[-1][0] + math.cos(angle) * reach / 4, pts[-1][1] + math.sin(angle) * reach / 4))
        lines.append((pts, 0.005, 1.0))
    return scene.cv.lines(lines)


def consolidation(scene: Scene, sign: int, s: float) -> None:
    """Dense lobar opacity, sharply bounded by a fissure, with branching air bronchograms."""
    cv, a, rng = scene.cv, scene.a, scene.rng
    lung = scene.lungs[sign]
    upper = rng.random() < 0.4
    dome = a.dome_right if sign < 0 else a.dome_left
    fissure = a.apex + 0.16 + rng.uniform(0, 0.04) if upper else dome - 0.12 - 0.08 * s
    lobe = (cv.v < fissure) if upper else (cv.v > fissure - 0.04 * np.abs(cv.u - a.cx) / a.half_width)
    cu, cv_ = _point_in(scene, lung * lobe, a.apex, 1.0)
    blob = cv.blur(cv.ellipse(cu, cv_, 0.06 + 0.08 * s, 0.05 + 0.05 * s, rng.uniform(0, math.pi)), 0.006)
    region = blob * lobe * lung
    texture = 0.9 + 0.2 * cv.blur(rng.standard_normal(lung.shape).astype(np.float32), 0.01)
    scene.att += region * 0.36 * texture
    scene.att -= region * 0.26 * _air_bronchograms(scene, cu, cv_, 0.05 + 0.04 * s)
    scene.vessel_mask[sign] = scene.vessel_mask[sign] * (1 - region)


def pneumonia(scene: Scene, sign: int, s: float) -> None:
    """Multifocal, ill-defined patchy ("cotton-wool") opacities in the mid and lower zone."""
    cv, a, rng = scene.cv, scene.a, scene.rng
    lung = scene.lungs[sign]
    dome = a.dome_right if sign < 0 else a.dome_left
    patches = np.zeros_like(lung)
    for _ in range(6 + int(8 * s)):
        cu, cv_ = _point_in(scene, lung, a.apex + 0.12, dome)
        r = rng.uniform(0.016, 0.034)
        patches = np.maximum(patches, cv.ellipse(cu, cv_, r, r * rng.uniform(0.7, 1.3)))
    mottle = np.clip(0.7 + 0.8 * cv.blur(rng.standard_normal(lung.shape).astype(np.float32), 0.012), 0, 1.3)
    scene.att += cv.blur(patches * mottle, 0.006) * lung * (0.2 + 0.1 * s)


def atelectasis(scene: Scene, sign: int, s: float) -> None:
    """Linear (plate-like) basal bands; severe: a dense wedge at the base. Volume loss is in ``volume_loss``."""
    cv, a, rng = scene.cv, scene.a, scene.rng
    dome = a.dome_right if sign < 0 else a.dome_left
    lines = []
    for _ in range(1 + int(s > 0.45) + int(s > 0.8)):
        y = dome - rng.uniform(0.03, 0.11)
        x0 = a.cx + sign * rng.uniform(0.1, 0.15)
        x1 = a.cx + sign * rng.uniform(0.3, 0.36)
        lines.append(([(x0, y + rng.uniform(0.0, 0.02)), (x1, y - rng.uniform(0.0, 0.025))], 0.01 + 0.008 * s, 0.3))
    layer = cv.lines(lines)
    if s > 0.8:
        wedge = cv.ellipse(a.cx + sign * 0.11, dome - 0.03, 0.07, 0.05, sign * 0.6)
        layer = np.maximum(layer, 0.3 * cv.blur(wedge, 0.004))
    scene.att += layer * scene.lungs[sign]


def lung_lesion(scene: Scene, sign: int, s: float) -> None:
    """Round, well-defined nodule (small) or mass (large)."""
    cv, a, rng = scene.cv, scene.a, scene.rng
    lung = scene.lungs[sign]
    r = 0.02 + 0.05 * s**1.3
    cu, cv_ = _point_in(scene, lung, a.apex + 0.06, a.dome_right - 0.12)
    blob = cv.ellipse(cu, cv_, r * rng.uniform(0.9, 1.1), r * rng.uniform(0.9, 1.1), rng.uniform(0, math.pi))
    scene.att += blob * 0.36 * np.clip(lung + 0.3, 0, 1)


def lung_opacity(scene: Scene, sign: int, s: float) -> None:
    """Hazy, ill-defined region of increased density (ground glass) in one zone."""
    cv, a, rng = scene.cv, scene.a, scene.rng
    lung = scene.lungs[sign]
    cu, cv_ = _point_in(scene, lung, a.apex + 0.05, a.dome_right - 0.05)
    sigma = 0.06 + 0.05 * s
    haze = np.exp(-(((cv.u - cu) ** 2) + ((cv.v - cv_) / rng.uniform(0.8, 1.3)) ** 2) / (2 * sigma**2))
    scene.att += haze.astype(np.float32) * lung * (0.1 + 0.1 * s)


def pleural_thickening(scene: Scene, sign: int, s: float) -> None:
    """Pleural Other: a smooth band along the upper lateral chest wall."""
    cv, a = scene.cv, scene.a
    lung = scene.lungs[sign]
    k = max(1, round((0.012 + 0.015 * s) * cv.size))
    outside = np.roll(lung, sign * -k, axis=1)  # the lung value k pixels further out
    band = np.clip(lung - outside, 0, 1) * (cv.v < a.apex + 0.3)
    scene.att += cv.blur(band, 0.003) * 0.22


def support_device(scene: Scene) -> None:
    """A pacemaker with its lead, or a central venous line."""
    cv, a, rng = scene.cv, scene.a, scene.rng
    if rng.random() < 0.5:
        gu, gv = a.cx + a.half_width * 0.7, a.apex + 0.04
        box = cv.ellipse(gu, gv, 0.035, 0.025)
        lead = cv.lines([([(gu, gv), (a.cx + 0.08, a.apex + 0.12), (a.cx + 0.03, a.dome_right - 0.1)], 0.005, 1.0)])
        scene.att += np.clip(box * 0.6 + lead * 0.35, 0, 0.6)
    else:
        pts = [(a.cx - 0.16, 0.05), (a.cx - 0.08, a.apex + 0.02), (a.cx - 0.02, a.apex + 0.16)]
        scene.att += cv.lines([(pts, 0.005, 0.3)])
