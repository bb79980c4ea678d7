"""How well an autoencoder reconstructs grayscale radiographs: the round-trip PSNR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def psnr_round_trip(model: torch.nn.Module, images: np.ndarray, batch: int = 8) -> list[float]:
    """Per-image PSNR (dB) of grayscale uint8 images (N, H, W) after encode → decode.

    Grayscale is replicated to the 3 input channels and the decoded channels are
    averaged, which is how Diff-CXR feeds radiographs to RGB autoencoders.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div(255).unsqueeze(1).repeat(1, 3, 1, 1)
    out: list[float] = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        y = model.decode(model.encode(chunk)).mean(1, keepdim=True)
        mse = ((y - chunk[:, :1]) ** 2).mean((1, 2, 3)).clamp_min(1e-12)
        out += (10 * torch.log10(1 / mse)).tolist()
    return out


def load_grayscale(folder: str | Path, size: int) -> np.ndarray:
    """Every PNG in ``folder`` as a (N, size, size) uint8 array (bicubic resize)."""
    files = sorted(Path(folder).glob("*.png"))
    return np.stack([np.asarray(Image.open(f).convert("L").resize((size, size), Image.BICUBIC)) for f in files])
