"""Disease-knowledge adapter (DKIM): a ControlNet-style trainable copy of the U-ViT's front half.

The copy (token embedding, in-blocks, mid-block) starts from the trained
U-ViT's weights. The disease sentence's squeezed tokens (the *hint*) enter
through a zero-initialised Linear added to the copy's embedded context (and,
when the U-ViT has the pooled-context path, a zero-initialised Linear of
their mean added to the copy's pooled condition); each
copied in-block's output and the copied mid output leave through zero-
initialised Linears and are added to the frozen U-ViT's skips and mid output.
The zero init is the last thing the constructor does, so at step 0 the adapted
model equals the frozen one exactly (tested), and no later generic init can
undo it: the copy is never re-initialised.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from services.diffusion.uvit import UViT, UViTConfig, per_image


def zero_linear(dim_in: int, dim_out: int) -> nn.Linear:
    layer = nn.Linear(dim_in, dim_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class DiseaseAdapter(nn.Module):
    """Built from the trained U-ViT it copies, or from a bare config when its own weights are loaded next."""

    def __init__(self, uvit: UViT | UViTConfig) -> None:
        super().__init__()
        uvit = uvit if isinstance(uvit, UViT) else UViT(uvit)
        self.config = cfg = uvit.config  # saved beside the weights (adapter.json), so the folder rebuilds it
        self.embed = copy.deepcopy(uvit.embed)
        self.in_blocks = copy.deepcopy(uvit.in_blocks)
        self.mid_block = copy.deepcopy(uvit.mid_block)
        for p in self.parameters():  # the source may be frozen; the copy trains
            p.requires_grad_(True)
        self.hint_embed = zero_linear(cfg.context_dim, cfg.embed_dim)
        self.hint_pooled = zero_linear(cfg.context_dim, cfg.embed_dim) if cfg.pooled_context else None
        self.skip_out = nn.ModuleList(zero_linear(cfg.embed_dim, cfg.embed_dim) for _ in self.in_blocks)
        self.mid_out = zero_linear(cfg.embed_dim, cfg.embed_dim)

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, hint: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Residuals for the frozen U-ViT: one per in-block skip, and one for the mid output."""
        pooled = per_image(self.hint_pooled, hint.mean(1)) if self.hint_pooled is not None else None
        h = self.embed(x, timesteps, context, context_residual=self.hint_embed(hint), pooled_residual=pooled)
        skips = []
        for block, out in zip(self.in_blocks, self.skip_out, strict=True):
            h = block(h)
            skips.append(out(h))
        return skips, self.mid_out(self.mid_block(h))


class AdaptedUViT(nn.Module):
    """The frozen U-ViT plus the trainable adapter; ``uvit`` never receives gradients."""

    def __init__(self, uvit: UViT, adapter: DiseaseAdapter | None = None) -> None:
        super().__init__()
        self.uvit = uvit.requires_grad_(False)
        self.adapter = adapter if adapter is not None else DiseaseAdapter(uvit)
        self.config = uvit.config

    def train(self, mode: bool = True) -> AdaptedUViT:
        super().train(mode)
        self.uvit.eval()  # frozen: no dropout/statistics drift (it has none today; stays true if added)
        return self

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, hint: torch.Tensor
    ) -> torch.Tensor:
        return self.uvit(x, timesteps, context, residuals=self.adapter(x, timesteps, context, hint))
