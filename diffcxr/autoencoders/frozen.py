"""One interface for the frozen autoencoders that define the latent space.

Every latent Diff-CXR writes carries the autoencoder's ``id``, latent shape and
scale factor, so a filter, a denoiser and a decoder trained or run at different
times can check they speak the same latent language. Images are (B, 3, H, W)
in [0, 1]; latents are already multiplied by ``scale_factor``.

Weights are found in this order: ``autoencoder.weights`` (config), the
``DIFFCXR_TAEF2_DIR`` / ``DIFFCXR_SDVAE_DIR`` environment variable,
``../shared/weights/`` beside the checkout (TAEF2 only; inside a Ray job, beside
the checkout the venv was installed from), then — unless
``autoencoder.allow_download: false`` — the pinned public files in
``~/.cache/diffcxr/taef2`` (fetched once), each checked against its sha256 on
every load (never a silently different file). A download that cannot reach the internet fails within
seconds, naming what to set.
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from diffcxr.config import AutoencoderConfig
from diffcxr.errors import ConfigError
from diffcxr.hashing import sha256_file

#: Public TAEF2 files (MIT, madebyollin/taesd) with the sha256 of the copies in ../shared/weights/taef2.
TAEF2_FILES: dict[str, tuple[str, str]] = {
    "taef2_encoder.pth": (
        "https://github.com/madebyollin/taesd/raw/main/taef2_encoder.pth",
        "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
    ),
    "taef2_decoder.pth": (
        "https://github.com/madebyollin/taesd/raw/main/taef2_decoder.pth",
        "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
    ),
}


class FrozenAutoencoder(Protocol):
    id: str
    latent_channels: int
    downsample: int
    scale_factor: float

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


@dataclass
class LatentSpace:
    """What a latent file records about the space its latents live in."""

    autoencoder_id: str
    latent_channels: int
    downsample: int
    scale_factor: float

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        return (self.latent_channels, image_size // self.downsample, image_size // self.downsample)


def space_of(ae: FrozenAutoencoder) -> LatentSpace:
    return LatentSpace(ae.id, ae.latent_channels, ae.downsample, ae.scale_factor)


#: How long a download may wait for the server before it counts as offline.
DOWNLOAD_TIMEOUT_S = 20.0
DOWNLOAD_CACHE = Path.home() / ".cache" / "diffcxr" / "taef2"


def download_taef2(target: Path) -> Path:
    """Fetch the pinned public TAEF2 files into ``target``, verifying each sha256."""
    target.mkdir(parents=True, exist_ok=True)
    for name, (url, sha) in TAEF2_FILES.items():
        path = target / name
        if not path.is_file():
            tmp = path.with_suffix(".part")
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310 - pinned
                    tmp.write_bytes(response.read())
            except OSError as exc:  # URLError, timeouts, refused connections: all "cannot fetch"
                tmp.unlink(missing_ok=True)
                raise ConfigError(
                    f"autoencoder.weights: TAEF2 weights are not on this machine and the pinned download of {url} "
                    f"failed ({exc}); set autoencoder.weights or DIFFCXR_TAEF2_DIR to a folder holding "
                    f"{', '.join(TAEF2_FILES)} (in a Ray job: on every node, or a path the job's nodes share)"
                ) from None
            tmp.rename(path)
        if sha256_file(path) != sha:
            path.unlink()
            raise ConfigError(f"downloaded {name} does not match its pinned sha256 {sha[:12]}…; refusing to use it")
    return target


def find_taef2_weights(cfg: AutoencoderConfig) -> Path:
    from diffcxr.autoencoders.taef2 import WEIGHT_FILES, default_weights_dir

    candidates = [Path(p) for p in (cfg.weights, os.environ.get("DIFFCXR_TAEF2_DIR")) if p]
    candidates.append(default_weights_dir())
    for folder in candidates:
        if all((folder / name).is_file() for name in WEIGHT_FILES.values()):
            return folder
    if cfg.allow_download:
        return download_taef2(DOWNLOAD_CACHE)
    looked = ", ".join(str(c) for c in candidates)
    raise ConfigError(
        f"autoencoder.weights: TAEF2 weights not found (looked in {looked}); set autoencoder.weights or "
        "DIFFCXR_TAEF2_DIR, or allow the pinned download with --set autoencoder.allow_download=true"
    )


class Taef2Autoencoder:
    """TAEF2 (32 channels, 8×): tiny, fast on CPU, real pretrained weights."""

    latent_channels = 32
    downsample = 8

    def __init__(self, cfg: AutoencoderConfig) -> None:
        from diffcxr.autoencoders.taef2 import TAEF2

        # channels-last: oneDNN's convolutions ran the encoder 1.4x faster so (64 px, batch 64, 2-core AVX2)
        self.model = TAEF2.from_dir(find_taef2_weights(cfg)).to(memory_format=torch.channels_last)
        self.scale_factor = cfg.scale_factor
        self.id = f"taef2@{TAEF2_FILES['taef2_encoder.pth'][1][:12]}"

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        latents = self.model.encode(images.contiguous(memory_format=torch.channels_last)) * self.scale_factor
        return latents.contiguous()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        images = self.model.decode((latents / self.scale_factor).contiguous(memory_format=torch.channels_last))
        return images.contiguous()


class SDVAEAutoencoder:
    """The Stable Diffusion VAE (4 channels, 8×, scale 0.18215) from a local diffusers folder."""

    latent_channels = 4
    downsample = 8

    def __init__(self, cfg: AutoencoderConfig) -> None:
        from diffusers import AutoencoderKL

        folder = cfg.weights or os.environ.get("DIFFCXR_SDVAE_DIR")
        if not folder or not (Path(folder) / "config.json").is_file():
            raise ConfigError(
                f"autoencoder.weights: no diffusers AutoencoderKL folder (config.json + weights) at '{folder}'; "
                "set autoencoder.weights or DIFFCXR_SDVAE_DIR"
            )
        self.model = AutoencoderKL.from_pretrained(folder).eval()
        self.latent_channels = int(self.model.config.latent_channels)
        self.scale_factor = cfg.scale_factor
        self.id = f"sd-vae@{Path(folder).name}"

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images * 2 - 1).latent_dist.mode() * self.scale_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return ((self.model.decode(latents / self.scale_factor).sample + 1) / 2).clamp(0, 1)


def load_autoencoder(cfg: AutoencoderConfig) -> FrozenAutoencoder:
    """The autoencoder the config names, frozen, in eval mode."""
    ae: FrozenAutoencoder = Taef2Autoencoder(cfg) if cfg.kind == "taef2" else SDVAEAutoencoder(cfg)
    return ae
