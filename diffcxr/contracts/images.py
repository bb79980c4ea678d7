"""The one image decoder every stage uses: bytes of any common image file → a square grayscale uint8 array,
or a reason it cannot be. Filter, text, diffusion and eval read images through it, so an image is the same
array in training and in evaluation.

Radiographs arrive as 8-bit or 16-bit grayscale, RGB, palette or with alpha;
each is converted by its mode (16-bit is rescaled by its own range, not
clipped), so nothing usable is thrown away and nothing unusable gets through.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from diffcxr import storage

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


def read_and_decode(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Ray Data task: URIs → (B, size, size) uint8 images and an error per row ('' when fine)."""
    images = np.zeros((len(batch["sample_id"]), size, size), dtype=np.uint8)
    errors = []
    for i, uri in enumerate(batch["image_uri"]):
        try:
            images[i] = decode_image(storage.read_bytes(str(uri)), size)
            errors.append("")
        except UnreadableImage as exc:
            errors.append(str(exc))
        except Exception as exc:  # a missing/unreadable file is that row's problem, never the job's
            errors.append(f"cannot read image: {exc}")
    return {"sample_id": batch["sample_id"], "image": images, "error": np.array(errors, dtype=object)}
