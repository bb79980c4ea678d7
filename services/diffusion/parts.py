"""The three parts of a generator bundle, each loadable alone.

The in-process :class:`~services.diffusion.generator.Generator` and the Ray
Serve deployments (one per part, each on its own replicas) run the same code
here, so an image is byte-identical whichever way it was asked for.

- :class:`~services.text.part.TextPart` (in the text service) — rules labeler → disease sentence → text
  encoder + squeeze.
- :class:`DenoiserPart` — U-ViT (+ adapter) and the seeded sampling loop.
- :class:`DecoderPart` — the frozen autoencoder's decoder → grayscale pixels.

Batch invariance: the sampler draws each image's noise from its own seeded
generator, and on CPU the U-ViT's kernels give bit-identical rows whatever
the batch size (tested). oneDNN's convolutions do *not* (their algorithm
depends on the batch), so the decoder runs one image at a time: a decoded
image never depends on which other requests shared its batch.

Precision: both parts run in the format :func:`diffcxr.precision.resolve_precision` picks at load time
(weights cast once; the sampler's arithmetic and the latents handed between parts stay fp32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffcxr.bundle import read_bundle_spec
from diffcxr.config import AutoencoderConfig, SamplingConfig
from diffcxr.precision import DTYPES, resolve_precision
from services.diffusion.latents import LatentStats
from services.diffusion.sampling import sample_latents
from services.diffusion.weights import ADAPTER, UVIT, load_adapted, load_uvit


class DenoiserPart:
    """The U-ViT (with the adapter when the bundle has one) and the seeded, guided sampler."""

    def __init__(self, folder: str | Path, precision: str | None = None) -> None:
        """``precision``: auto/fp32/bf16; None takes the bundle's ``sampling.precision`` (default auto)."""
        self.folder = Path(folder)
        self.spec = read_bundle_spec(folder)
        self.sampling = SamplingConfig(**self.spec["sampling"])
        self.precision = resolve_precision(precision or self.sampling.precision)
        if self.spec.get("adapter"):
            self.model, _ = load_adapted(self.folder / UVIT, self.folder / ADAPTER)
        else:
            self.model, _ = load_uvit(self.folder / UVIT)
        self.model.eval().to(DTYPES[self.precision])
        self.has_adapter = bool(self.spec.get("adapter"))
        self.latent_shape = tuple(self.spec["autoencoder"]["latent_shape"])
        self.latent_stats = LatentStats.from_spec(self.spec.get("latent_stats"), self.latent_shape[0])

    @torch.no_grad()
    def sample(
        self,
        contexts: np.ndarray,
        hints: np.ndarray | None,
        uncond: np.ndarray,
        seeds: list[int],
        steps: int,
        guidance: float,
    ) -> np.ndarray:
        """Autoencoder latents (B, C, h, w) for contexts (B, K, d) — one image per seed, all with the same steps
        and guidance; the U-ViT's standardised latents are mapped back with the model's ``latent_stats``."""
        model = self.model

        def denoiser(x, t, c, h):  # noqa: ANN001, ANN202
            return model(x, t, c) if h is None else model(x, t, c, h)

        uncond_t = torch.as_tensor(uncond)
        latents = sample_latents(
            denoiser,
            self.spec["schedule"],
            torch.as_tensor(contexts),
            uncond_t,
            [int(s) for s in seeds],
            self.latent_shape,
            steps,
            guidance,
            hint=torch.as_tensor(hints) if self.has_adapter and hints is not None else None,
            uncond_hint=uncond_t,
            scheduler_kind=self.sampling.scheduler,
            dtype=DTYPES[self.precision],
        )
        return self.latent_stats.denormalize(latents).numpy()


class DecoderPart:
    """The bundle's frozen autoencoder decoder: latents → grayscale images in [0, 1]."""

    def __init__(self, folder: str | Path, precision: str | None = None) -> None:
        from diffcxr.autoencoders.frozen import load_autoencoder

        self.folder = Path(folder)
        self.spec = read_bundle_spec(folder)
        self.precision = resolve_precision(precision or SamplingConfig(**self.spec["sampling"]).precision)
        ae = self.spec["autoencoder"]
        self.autoencoder = load_autoencoder(
            AutoencoderConfig(
                kind=ae["kind"],
                weights=str(self.folder / "autoencoder"),
                latent_channels=ae["latent_channels"],
                downsample=ae["downsample"],
                scale_factor=ae["scale_factor"],
            )
        )
        self.dtype = DTYPES[self.precision]
        self.autoencoder.model.to(self.dtype)

    @torch.no_grad()
    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(B, H, W) float32 grayscale in [0, 1]; one image per decoder call (batch-invariant, see module doc)."""
        out = [self._decode_one(torch.as_tensor(lat)[None]) for lat in latents]
        return torch.stack(out).numpy()

    def _decode_one(self, latent: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latent.to(self.dtype)).float().mean(1).clamp(0, 1)[0]
