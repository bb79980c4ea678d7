"""TAEF2: the tiny autoencoder for the FLUX.2 latent space (32 channels, 8x downsampling).

Module layout follows the published state dicts (``../shared/weights/taef2/``,
MIT licence), so the real weights load by parameter name; see DESIGN.md §4.
Images are RGB in [0, 1]; weights are stored in fp16 and run in fp32 on CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from diffcxr.errors import ConfigError
from diffcxr.paths import shared_dir

LATENT_CHANNELS = 32
DOWNSAMPLE = 8
WEIGHT_FILES = {"encoder": "taef2_encoder.pth", "decoder": "taef2_decoder.pth"}


def conv(n_in: int, n_out: int, **kwargs: object) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp of latents to about ±3 before decoding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """conv-ReLU-conv-ReLU-conv with an identity skip; deepest blocks add a 1x1 'pool' branch first."""

    def __init__(self, channels: int = 64, pool: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            conv(channels, channels), nn.ReLU(), conv(channels, channels), nn.ReLU(), conv(channels, channels)
        )
        self.pool = (
            nn.Sequential(
                nn.Conv2d(channels, 4 * channels, 1, bias=False),
                nn.GroupNorm(4, 4 * channels),
                nn.ReLU(),
                nn.Conv2d(4 * channels, channels, 1, bias=False),
            )
            if pool
            else None
        )
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + x)


def make_encoder(c: int = 64) -> nn.Sequential:
    return nn.Sequential(
        conv(3, c),
        Block(c),
        conv(c, c, stride=2, bias=False),
        Block(c),
        Block(c),
        Block(c),
        conv(c, c, stride=2, bias=False),
        Block(c),
        Block(c),
        Block(c),
        conv(c, c, stride=2, bias=False),
        Block(c, True),
        Block(c, True),
        Block(c, True),
        conv(c, LATENT_CHANNELS),
    )


def make_decoder(c: int = 64) -> nn.Sequential:
    up = nn.Upsample(scale_factor=2)
    return nn.Sequential(
        Clamp(),
        conv(LATENT_CHANNELS, c),
        nn.ReLU(),
        Block(c, True),
        Block(c, True),
        Block(c, True),
        up,
        conv(c, c, bias=False),
        Block(c),
        Block(c),
        Block(c),
        up,
        conv(c, c, bias=False),
        Block(c),
        Block(c),
        Block(c),
        up,
        conv(c, c, bias=False),
        Block(c),
        conv(c, 3),
    )


def default_weights_dir() -> Path:
    """$DIFFCXR_TAEF2_DIR, else ``../shared/weights/taef2`` beside the checkout.

    The checkout is ``$DIFFCXR_HOME`` when set (a Ray job runs from a temporary copy
    of the working directory, which has no ``../shared``), else this package's own
    checkout, else the current directory.
    """
    env = os.environ.get("DIFFCXR_TAEF2_DIR")
    return Path(env) if env else shared_dir("weights", "taef2")


class TAEF2(nn.Module):
    """Encoder + decoder with the real pretrained weights."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = make_encoder()
        self.decoder = make_decoder()

    @classmethod
    def from_dir(cls, folder: str | Path | None = None) -> TAEF2:
        folder = Path(folder) if folder else default_weights_dir()
        model = cls()
        for part, name in WEIGHT_FILES.items():
            path = folder / name
            if not path.is_file():
                raise ConfigError(
                    f"autoencoder.weights: TAEF2 {part} weights not found at '{path}' "
                    "(set autoencoder.weights or DIFFCXR_TAEF2_DIR)"
                )
            state = torch.load(path, map_location="cpu", weights_only=True)
            getattr(model, part).load_state_dict({k: v.float() for k, v in state.items()})
        return model.eval()

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B, 32, H/8, W/8)."""
        return self.encoder(images)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 32, h, w) → (B, 3, 8h, 8w) in [0, 1]."""
        return self.decoder(latents).clamp(0, 1)
