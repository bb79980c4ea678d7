"""Per-channel latent standardisation: the space the U-ViT actually denoises in.

TAEF2's 32 channels are not standardised (channel means −0.9…+1.1, stds
0.4…1.2 on phantoms), while the noise schedule assumes data of unit scale
centred on zero: unscaled, some channels are drowned early and others keep
their offset into the terminal step. The training set's per-channel mean and
std are computed once, stored with the U-ViT (``latent_stats`` in its spec and
in the bundle's ``generator.json``) and undone after sampling, before the
decoder. A model without stats (older bundles) gets the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class LatentStats:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def identity(cls, channels: int) -> LatentStats:
        return cls((0.0,) * channels, (1.0,) * channels)

    @classmethod
    def of(cls, latents: np.ndarray, floor: float = 1e-3) -> LatentStats:
        """Per-channel mean and std of latents (N, C, h, w); a dead channel's std is floored, not divided by 0."""
        x = np.asarray(latents, np.float64)
        return cls(
            tuple(float(v) for v in x.mean(axis=(0, 2, 3))),
            tuple(float(max(v, floor)) for v in x.std(axis=(0, 2, 3))),
        )

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None, channels: int) -> LatentStats:
        """The stats a model spec records, or the identity for models trained without them."""
        if not spec:
            return cls.identity(channels)
        stats = cls(tuple(float(v) for v in spec["mean"]), tuple(float(v) for v in spec["std"]))
        if len(stats.mean) != channels or len(stats.std) != channels:
            raise ValueError(f"latent_stats: {len(stats.mean)} channels recorded, the latent has {channels}")
        return stats

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    def _view(self, values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Autoencoder latents (B, C, h, w) → the U-ViT's standardised space."""
        return (latents - self._view(self.mean, latents)) / self._view(self.std, latents)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """The U-ViT's space → autoencoder latents, ready for the decoder."""
        return latents * self._view(self.std, latents) + self._view(self.mean, latents)
