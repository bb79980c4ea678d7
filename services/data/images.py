"""Check that image files exist and decode, so bad ones are quarantined up front.

The filter stage decodes images again anyway; checking here means a broken
dataset is reported once, in the manifest, with a reason per file, instead of
failing a training job hours later.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, UnidentifiedImageError

from diffcxr import storage
from diffcxr.errors import StorageError


def image_problem(uri: str, decode: bool = True) -> str | None:
    """None when the image at ``uri`` is usable, else the reason it is not."""
    try:
        data = storage.read_bytes(uri)
    except StorageError as exc:
        return "image file not found" if not storage.exists(uri) else f"unreadable image file: {exc}"
    if not data:
        return "image file is empty"
    try:
        with Image.open(io.BytesIO(data)) as img:
            if decode:
                img.load()
            else:
                img.verify()
            if img.width < 8 or img.height < 8:
                return f"image too small ({img.width}x{img.height})"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"corrupt image: {exc}"
    except Image.DecompressionBombError as exc:
        return f"corrupt image: {exc}"
    return None


def image_problems(uris: Iterable[str], decode: bool = True, threads: int = 8) -> list[str | None]:
    """``image_problem`` for many URIs, in order; I/O-bound, so threads are enough."""
    uris = list(uris)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda u: image_problem(u, decode), uris))
