"""Report-conditioned frontal chest radiograph phantoms: (labels, details, seed, size) → image.

The same (labels, details, seed, size, noise kind) always gives the same
pixels. What was drawn — each finding with the side and severity actually used
(details the report left open are chosen from the seed) and the anatomy — is
returned as ``PhantomSpec``, the ground truth the manifest records.

Input rules (logged, never an exception):
* only positive (1) findings are drawn; uncertain (-1) ones are not;
* unknown observation names are ignored;
* "No Finding" together with a positive finding is contradictory: the positive
  findings win and No Finding is dropped from the ground truth;
* Support Devices and Pleural Other are drawn too (a pacemaker or line;
  pleural thickening), though they are not among the 11 evaluated diseases.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from diffcxr.constants import CHEXPERT_LABELS, EVAL_DISEASES
from diffcxr.errors import ConfigError
from services.data.phantom import findings as fx
from services.data.phantom.anatomy import (
    Anatomy,
    Canvas,
    heart_mask,
    lung_masks,
    mediastinum_mask,
    rib_polylines,
    thorax_mask,
    trachea_polylines,
    vessel_polylines,
)
from services.data.phantom.noise import NOISE_KINDS

log = logging.getLogger(__name__)

RENDERER_VERSION = "phantom-v1"
SIZES: tuple[int, ...] = (64, 128, 256)
DRAWN = (*EVAL_DISEASES, "Support Devices", "Pleural Other")
#: Findings that are always bilateral; the rest default to one side chosen from the seed.
BILATERAL = {"Edema", "Cardiomegaly", "Enlarged Cardiomediastinum", "Support Devices"}
SIDES = {"right": (-1,), "left": (1,), "bilateral": (-1, 1)}


@dataclass
class PhantomSpec:
    """Ground truth of one phantom."""

    seed: int
    size: int
    findings: dict[str, dict[str, str]]
    anatomy: dict[str, float]
    noise_kind: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "renderer": RENDERER_VERSION,
            "seed": self.seed,
            "size": self.size,
            "findings": self.findings,
            "anatomy": self.anatomy,
            "noise_kind": self.noise_kind,
            "notes": self.notes,
        }


def resolve_findings(
    labels: Mapping[str, int | None],
    details: Mapping[str, Mapping[str, str | None]] | None,
    rng: np.random.Generator,
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Which findings to draw, each with a side and a severity word; plus notes on what was ignored."""
    notes = []
    details = details or {}
    unknown = sorted(set(labels) - set(CHEXPERT_LABELS))
    if unknown:
        notes.append(f"ignored unknown observation(s): {', '.join(unknown)}")
    positives = [name for name in DRAWN if labels.get(name) == 1]
    if labels.get("No Finding") == 1 and any(p in EVAL_DISEASES or p == "Pleural Other" for p in positives):
        notes.append("No Finding contradicts positive findings: findings drawn, No Finding dropped")
    chosen: dict[str, dict[str, str]] = {}
    for name in positives:
        given = details.get(name) or {}
        side = given.get("laterality")
        if name in BILATERAL:
            side = "bilateral"
        elif side not in SIDES:
            side = str(
                rng.choice(["right", "left", "bilateral"], p=[0.4, 0.4, 0.2])
                if name == "Pleural Effusion"
                else rng.choice(["right", "left"])
            )
        severity = given.get("severity")
        if severity not in fx.SEVERITY_SCALE:
            severity = str(
                rng.choice(["mild", "moderate", "large"] if name != "Lung Lesion" else ["small", "moderate", "large"])
            )
        chosen[name] = {"laterality": side, "severity": severity}
    for note in notes:
        log.info("phantom: %s", note)
    return chosen, notes


def _to_film(att: np.ndarray, a: Anatomy, cv: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Attenuation → film intensity: exposure, gamma, film grain, slight unsharpness, patient rotation."""
    img = np.clip(att, 0, 1) * a.gain
    img = np.clip(img, 0, 1) ** a.gamma
    img = cv.blur(img, 0.0025) + rng.normal(0, a.film_noise, img.shape).astype(np.float32)
    img = np.clip(img, 0, 1).astype(np.float32)
    rotated = Image.fromarray(img, mode="F").rotate(a.rotation, resample=Image.BILINEAR, fillcolor=0.0)
    return np.asarray(rotated, dtype=np.float32)


def render(
    labels: Mapping[str, int | None],
    details: Mapping[str, Mapping[str, str | None]] | None = None,
    seed: int = 0,
    size: int = 128,
    noise_kind: str | None = None,
) -> tuple[np.ndarray, PhantomSpec]:
    """Render one phantom: a (size, size) uint8 image and its ground truth."""
    if size not in SIZES:
        raise ConfigError(f"phantom size {size} is not supported; choose one of {', '.join(map(str, SIZES))}")
    if noise_kind is not None and noise_kind not in NOISE_KINDS:
        raise ConfigError(f"unknown noise kind '{noise_kind}'; choose one of {', '.join(NOISE_KINDS)}")
    # one stream per purpose: the same seed is the same patient (anatomy, vessels, grain) whatever the findings
    streams = ("anatomy", "findings", "ribs", "vessels", "film", "noise")
    rng = {name: np.random.default_rng([seed, i]) for i, name in enumerate(streams)}
    a = Anatomy.sample(rng["anatomy"])
    chosen, notes = resolve_findings(labels, details, rng["findings"])
    scale = {name: fx.SEVERITY_SCALE[f["severity"]] for name, f in chosen.items()}
    sides = {name: SIDES[f["laterality"]] for name, f in chosen.items()}

    widen = 1.0
    if "Cardiomegaly" in chosen:
        fx.enlarge_heart(a, scale["Cardiomegaly"])
    if "Enlarged Cardiomediastinum" in chosen:
        widen = fx.widen_mediastinum(scale["Enlarged Cardiomediastinum"])
    if "Atelectasis" in chosen:
        for sign in sides["Atelectasis"]:
            fx.volume_loss(a, sign, scale["Atelectasis"])

    cv = Canvas(size)
    heart, hu, hv = heart_mask(cv, a)
    med = mediastinum_mask(cv, a, widen)
    right, left = lung_masks(cv, a, np.clip(heart + med, 0, 1))
    body = thorax_mask(cv, a)
    hila = {-1: (a.cx - a.mediastinum / 2 - 0.04, hv - 0.1), 1: (a.cx + a.mediastinum / 2 + 0.04, hv - 0.1)}
    lungs = {-1: right, 1: left}
    scene = fx.Scene(cv, a, rng["findings"], np.zeros((size, size), np.float32), lungs, hila, dict(lungs))

    if "Fracture" in chosen:
        for sign in sides["Fracture"]:
            fx.break_ribs(scene, sign, scale["Fracture"])
    rib_lines: list = []
    calluses: list[tuple[tuple[float, float], float]] = []  # fracture sites: a bony callus marks each break
    for index, (sign, pts) in enumerate(rib_polylines(a, rng["ribs"])):
        broken = [b for b in scene.broken_ribs if b[0] == sign and b[1] == index % 10]
        pieces = [pts]
        if broken:
            cut = max(2, round(broken[0][2] * (len(pts) - 1)))
            calluses.append((pts[cut], math.atan2(pts[cut][1] - pts[cut - 1][1], pts[cut][0] - pts[cut - 1][0])))
            gap = 0.025
            distal = [(x + sign * gap, y + 0.028 + 0.08 * (x - pts[cut][0]) * sign) for x, y in pts[cut:]]
            pieces = [pts[:cut], distal]
        for piece in pieces:
            rib_lines += [(piece, 0.03, 0.17), (piece, 0.014, -0.05)]
    clavicles = [
        ([(a.cx + sign * 0.04, a.apex + 0.03), (a.cx + sign * (a.half_width + 0.05), a.apex - 0.05)], 0.022, 0.18)
        for sign in (-1, 1)
    ]

    # base anatomy
    att = 0.52 * body - 0.36 * (right + left) + 0.05 * heart
    spine = (np.abs(cv.u - a.cx) < 0.028).astype(np.float32) * body
    endplates = (np.cos((cv.v - a.apex) / 0.045 * 2 * np.pi) > 0.93).astype(np.float32)
    att += 0.1 * cv.blur(spine, 0.004) + 0.03 * spine * endplates
    att += (cv.lines(rib_lines) + cv.lines(clavicles)) * body + cv.lines(trachea_polylines(a))
    for (cu, cv_), angle in calluses:
        att += 0.26 * cv.ellipse(cu, cv_ + 0.01, 0.03, 0.014, angle)
    for sign in (-1, 1):
        att += 0.06 * cv.ellipse(*hila[sign], 0.03, 0.045) * body
    dome_l = a.dome_left
    att -= 0.14 * cv.ellipse(a.cx + 0.17, dome_l + 0.06, 0.045, 0.03) * body  # gastric bubble
    scene.att = att.astype(np.float32)

    # lung-field findings, in a fixed order
    for name, fn in (
        ("Pleural Effusion", fx.effusion),
        ("Pneumothorax", fx.pneumothorax),
        ("Consolidation", fx.consolidation),
        ("Pneumonia", fx.pneumonia),
        ("Atelectasis", fx.atelectasis),
        ("Lung Lesion", fx.lung_lesion),
        ("Lung Opacity", fx.lung_opacity),
        ("Pleural Other", fx.pleural_thickening),
    ):
        if name in chosen:
            for sign in sides[name]:
                fn(scene, sign, scale[name])
    if "Edema" in chosen:
        fx.edema(scene, scale["Edema"])

    vessels = cv.lines(vessel_polylines(a, (hila[-1], hila[1]), rng["vessels"]))
    vessels = cv.blur(vessels, scene.vessel_blur)
    scene.att += vessels * (scene.vessel_mask[-1] + scene.vessel_mask[1])
    if "Support Devices" in chosen:
        fx.support_device(scene)

    img = _to_film(scene.att, a, cv, rng["film"])
    if noise_kind is not None:
        img = np.clip(NOISE_KINDS[noise_kind](img, rng["noise"]), 0, 1)
    spec = PhantomSpec(seed, size, chosen, a.as_dict(), noise_kind, notes)
    return (img * 255 + 0.5).astype(np.uint8), spec


def encode_png(image: np.ndarray, spec: PhantomSpec) -> bytes:
    """PNG bytes marked as synthetic (text chunks) with the phantom's ground truth."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"diffcxr {RENDERER_VERSION}")
    info.add_text("diffcxr.synthetic", "true")
    info.add_text("diffcxr.kind", "phantom")
    info.add_text("diffcxr.seed", str(spec.seed))
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG", pnginfo=info, optimize=False)
    return buf.getvalue()
