"""Seeded classifier-free-guided sampling of latents.

One ``torch.Generator`` per image draws that image's starting noise, so an
image depends only on (its context, its seed, the model, steps, guidance) —
not on which other requests share the batch. DPM-Solver++ is deterministic
after the starting noise. The conditional and unconditional passes run as one
batch of 2B.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from diffcxr.errors import DataError
from services.diffusion.schedulers import GUIDANCE_RANGE, STEPS_RANGE, sampling_scheduler

#: denoiser(latents, timesteps, context, hint) → ε; hint is None for a bare U-ViT.
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def check_request(steps: int, guidance: float) -> None:
    """Out-of-range sampler settings are refused with the allowed range."""
    lo, hi = STEPS_RANGE
    if not isinstance(steps, int) or isinstance(steps, bool) or not lo <= steps <= hi:
        raise DataError(f"steps: must be an integer in [{lo}, {hi}], got {steps!r}")
    glo, ghi = GUIDANCE_RANGE
    if not isinstance(guidance, int | float) or isinstance(guidance, bool) or not glo <= float(guidance) <= ghi:
        raise DataError(f"guidance: must be a number in [{glo}, {ghi}], got {guidance!r}")


def initial_noise(seeds: Sequence[int], shape: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, H, W) standard normal noise, image i drawn from its own generator seeded with seeds[i]."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def sample_latents(
    denoiser: Denoiser,
    schedule: dict,
    context: torch.Tensor,
    uncond: torch.Tensor,
    seeds: Sequence[int],
    latent_shape: tuple[int, int, int],
    steps: int,
    guidance: float,
    hint: torch.Tensor | None = None,
    uncond_hint: torch.Tensor | None = None,
    scheduler_kind: str = "dpm-solver++",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Latents (B, C, H, W) for contexts (B, K, d); ``uncond``/``uncond_hint`` are (K, d) or (B, K, d)."""
    check_request(steps, guidance)
    if len(seeds) != context.shape[0]:
        raise DataError(f"seeds: {len(seeds)} seeds for {context.shape[0]} contexts")
    b = context.shape[0]
    device = context.device
    scheduler = sampling_scheduler(schedule, scheduler_kind)
    scheduler.set_timesteps(steps)
    latents = (initial_noise(seeds, latent_shape) * scheduler.init_noise_sigma).to(device)
    guided = guidance != 1.0
    ctx = torch.cat([context, uncond.expand_as(context)]) if guided else context
    hints = None
    if hint is not None:
        blank = uncond_hint if uncond_hint is not None else uncond
        hints = torch.cat([hint, blank.expand_as(hint)]) if guided else hint
    ctx = ctx.to(dtype)
    hints = hints.to(dtype) if hints is not None else None
    for t in scheduler.timesteps:
        model_in = torch.cat([latents, latents]) if guided else latents
        model_in = scheduler.scale_model_input(model_in, t)
        timesteps = torch.full((model_in.shape[0],), int(t), device=device, dtype=torch.long)
        eps = denoiser(model_in.to(dtype), timesteps, ctx, hints).float()
        if guided:
            cond, unc = eps[:b], eps[b:]
            eps = unc + guidance * (cond - unc)
        latents = scheduler.step(eps, t, latents).prev_sample
    return latents
