"""U-ViT, text-to-image variant: the latent denoiser of Diff-CXR.

Everything is a token: [time (1), report context (K), latent patches (N)],
learned position embedding, pre-LN transformer blocks, long skips from each
in-block to its mirrored out-block (fused by Linear(2D → D)), a mid-block
between them. The time token is the bare sinusoidal embedding (no MLP); the
head is LayerNorm → Linear(D → p²·C) → patch tokens only → unpatchify → 3×3
conv. Attention goes through ``scaled_dot_product_attention`` in the input's
dtype so fused kernels run under bf16.

The forward takes optional ``residuals`` (one per in-block skip, plus the mid
output): the hook the disease-knowledge adapter uses (:mod:`.adapter`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn


@dataclass(frozen=True)
class UViTConfig:
    """Every size the network depends on; saved beside its weights (``uvit.json``)."""

    latent_channels: int = 4
    latent_size: int = 32
    patch_size: int = 2
    embed_dim: int = 512
    depth: int = 16  # in-blocks + out-blocks; a mid-block is added
    num_heads: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    context_tokens: int = 77
    context_dim: int = 768
    pooled_context: bool = False  # also add the projected mean context token to every latent patch token

    def __post_init__(self) -> None:
        if self.depth % 2:
            raise ValueError(f"depth must be even (in-blocks = out-blocks), got {self.depth}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.latent_size % self.patch_size:
            raise ValueError(f"latent_size {self.latent_size} is not divisible by patch_size {self.patch_size}")

    @property
    def num_patches(self) -> int:
        return (self.latent_size // self.patch_size) ** 2

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.latent_size, self.latent_size)

    def to_dict(self) -> dict:
        return asdict(self)


def uvit_config(cfg: Any, context_shape: tuple[int, int]) -> UViTConfig:
    """The U-ViT a ``DiffCXRConfig`` asks for: latent from the autoencoder, context from the text model."""
    c, side, _ = cfg.latent_shape
    d = cfg.diffusion
    return UViTConfig(
        latent_channels=c,
        latent_size=side,
        patch_size=d.patch_size,
        embed_dim=d.embed_dim,
        depth=d.depth,
        num_heads=d.num_heads,
        mlp_ratio=d.mlp_ratio,
        qkv_bias=d.qkv_bias,
        context_tokens=context_shape[0],
        context_dim=context_shape[1],
        pooled_context=d.pooled_context,
    )


def per_image(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` run on one image's row at a time outside training, so an image never depends on its batch.

    Kernels pick their algorithm, and so their rounding, by the batch: oneDNN's convolutions (patch embedding,
    final conv) and the matrix kernels of the pooled-condition Linears (one row per image). Batched, they moved
    a request's latent by ~6e-7 against the same request alone (a 2-core EPYC: 30 of 30 batches before, and 7
    of 30 with only the Linears split), enough to flip a pixel now and then. The token Linears get ≥ K + N rows
    per image and gave bit-identical rows at every batch size measured. Training keeps the one batched call."""
    if layer.training or x.shape[0] <= 1:
        return layer(x)
    return torch.cat([layer(row) for row in x.split(1)])


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # no fp32 cast: keeps the fused bf16 kernels
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-LN transformer block; out-blocks first fuse their long skip."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, skip: bool = False) -> None:
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokenEmbed(nn.Module):
    """Latent patches, report context and time → one token sequence (with position embedding)."""

    def __init__(self, cfg: UViTConfig) -> None:
        super().__init__()
        self.embed_dim = cfg.embed_dim
        self.patch_embed = nn.Conv2d(cfg.latent_channels, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)
        self.context_embed = nn.Linear(cfg.context_dim, cfg.embed_dim)
        self.pooled_embed = nn.Linear(cfg.context_dim, cfg.embed_dim) if cfg.pooled_context else None
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.context_tokens + cfg.num_patches, cfg.embed_dim))

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        context_residual: torch.Tensor | None = None,
        pooled_residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        patches = per_image(self.patch_embed, x).flatten(2).transpose(1, 2)
        if self.pooled_embed is not None:  # a direct path: every patch token is shifted by the condition
            pooled = per_image(self.pooled_embed, context.mean(1))
            if pooled_residual is not None:
                pooled = pooled + pooled_residual
            patches = patches + pooled.unsqueeze(1)
        ctx = self.context_embed(context)
        if context_residual is not None:
            ctx = ctx + context_residual
        time = get_timestep_embedding(timesteps, self.embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        tokens = torch.cat([time.to(patches.dtype).unsqueeze(1), ctx, patches], dim=1)
        return tokens + self.pos_embed


def init_weights(module: nn.Module) -> None:
    """ViT init: truncated-normal Linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class UViT(nn.Module):
    def __init__(self, cfg: UViTConfig) -> None:
        super().__init__()
        self.config = cfg
        args = (cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias)
        self.embed = TokenEmbed(cfg)
        self.in_blocks = nn.ModuleList(Block(*args) for _ in range(cfg.depth // 2))
        self.mid_block = Block(*args)
        self.out_blocks = nn.ModuleList(Block(*args, skip=True) for _ in range(cfg.depth // 2))
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.decoder_pred = nn.Linear(cfg.embed_dim, cfg.patch_size**2 * cfg.latent_channels)
        self.final_layer = nn.Conv2d(cfg.latent_channels, cfg.latent_channels, 3, padding=1)
        nn.init.trunc_normal_(self.embed.pos_embed, std=0.02)
        self.apply(init_weights)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        residuals: tuple[list[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """ε-prediction for latents ``x`` (B, C, H, W) at ``timesteps`` (B,) given ``context`` (B, K, d)."""
        h = self.embed(x, timesteps, context)
        skips = []
        for block in self.in_blocks:
            h = block(h)
            skips.append(h)
        h = self.mid_block(h)
        if residuals is not None:
            skip_residuals, mid_residual = residuals
            skips = [s + r for s, r in zip(skips, skip_residuals, strict=True)]
            h = h + mid_residual
        for block in self.out_blocks:
            h = block(h, skips.pop())
        return self.head(h)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        h = self.decoder_pred(self.norm(h))[:, 1 + cfg.context_tokens :]
        side, p, c = cfg.latent_size // cfg.patch_size, cfg.patch_size, cfg.latent_channels
        h = h.reshape(h.shape[0], side, side, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return per_image(self.final_layer, h.reshape(h.shape[0], c, side * p, side * p))
