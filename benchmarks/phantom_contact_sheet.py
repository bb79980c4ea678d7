"""Contact sheets of the phantom renderer: every disease by side and severity, and every noise kind.

Run by hand: ``.venv/bin/python benchmarks/phantom_contact_sheet.py [--size 128]``.
Writes ``docs/phantoms_diseases.png`` (a row per disease: the same patient
without findings, then right/left × three severities; always-bilateral findings
show three severities) and ``docs/phantoms_noise.png`` (a row per noise kind,
six patients each). Rendering is deterministic, so the sheets are reproducible.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.constants import EVAL_DISEASES  # noqa: E402
from services.data.phantom.noise import NOISE_KINDS  # noqa: E402
from services.data.phantom.render import BILATERAL, render  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"
LABEL_WIDTH = 215
SEVERITIES = {
    "default": ("mild", "moderate", "severe"),
    "Lung Lesion": ("small", "moderate", "large"),
    "Pleural Effusion": ("small", "moderate", "large"),
    "Pneumothorax": ("small", "moderate", "large"),
}


def _sheet(rows: list[tuple[str, list[np.ndarray]]], header: list[str], size: int) -> Image.Image:
    cols = max(len(r[1]) for r in rows)
    font = ImageFont.load_default(size=14)
    sheet = Image.new("L", (LABEL_WIDTH + cols * size, 24 + len(rows) * size), 255)
    draw = ImageDraw.Draw(sheet)
    for j, text in enumerate(header):
        draw.text((LABEL_WIDTH + j * size + 4, 4), text, fill=0, font=font)
    for i, (name, tiles) in enumerate(rows):
        draw.text((6, 24 + i * size + size // 2 - 8), name, fill=0, font=font)
        for j, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile), (LABEL_WIDTH + j * size, 24 + i * size))
    return sheet


def diseases(size: int, seed: int = 11) -> Image.Image:
    rows = []
    for name in EVAL_DISEASES:
        normal, _ = render({}, None, seed=seed, size=size)
        tiles = [normal]
        severities = SEVERITIES.get(name, SEVERITIES["default"])
        sides = ["bilateral"] if name in BILATERAL else ["right", "left"]
        for side in sides:
            for severity in severities:
                image, _ = render({name: 1}, {name: {"laterality": side, "severity": severity}}, seed=seed, size=size)
                tiles.append(image)
        rows.append((name, tiles))
    header = [
        "no finding",
        "right: mild/small",
        "moderate",
        "severe/large",
        "left: mild/small",
        "moderate",
        "severe/large",
    ]
    return _sheet(rows, header, size)


def noise(size: int) -> Image.Image:
    rows = []
    for kind in NOISE_KINDS:
        rows.append((kind, [render({}, None, seed=100 + k, size=size, noise_kind=kind)[0] for k in range(6)]))
    return _sheet(rows, [f"patient {k + 1}" for k in range(6)], size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    DOCS.mkdir(exist_ok=True)
    diseases(args.size).save(DOCS / "phantoms_diseases.png", optimize=True)
    noise(args.size).save(DOCS / "phantoms_noise.png", optimize=True)
    print(f"wrote {DOCS / 'phantoms_diseases.png'} and {DOCS / 'phantoms_noise.png'}")


if __name__ == "__main__":
    main()
