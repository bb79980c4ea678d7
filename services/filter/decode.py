"""Bytes of any common image file → a square grayscale uint8 array, or a reason it cannot be.

Radiographs arrive as 8-bit or 16-bit grayscale, RGB, palette or with alpha;
each is converted by its mode (16-bit is rescaled by its own range, not
clipped), so nothing usable is thrown away and nothing unusable gets through.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

MIN_SIDE = 16


class UnreadableImage(ValueError):
    """The bytes are not a usable image; the message says why (it becomes the quarantine reason)."""


def to_gray(img: Image.Image) -> np.ndarray:
    """Any PIL mode → float32 grayscale in [0, 1]."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if img.mode in ("P", "PA", "RGBA", "LA", "1", "CMYK", "YCbCr", "RGB") or img.mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.float32) / 255.0


def decode_image(data: bytes, size: int) -> np.ndarray:
    """(size, size) uint8; raises UnreadableImage with the reason."""
    if not data:
        raise UnreadableImage("empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if min(img.size) < MIN_SIDE:
                raise UnreadableImage(f"image too small ({img.size[0]}x{img.size[1]})")
            gray = to_gray(img)
    except UnreadableImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"not a readable image: {exc}") from None
    resized = Image.fromarray((gray * 255 + 0.5).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)
