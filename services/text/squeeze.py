"""The information squeeze of AVA-TLS: (B, 1+L, d) token states → (B, 1+K, d).

Conv1d channels are token positions, so each output token is a learned mixture
of neighbouring input tokens; LayerNorm and ReLU act per token over the feature
axis. Output token 0 is the global token the contrastive loss aligns with the
image; tokens 1..K are the context the denoiser attends to. K = 77 turns
BiomedCLIP's 257 states into 77 and cuts the U-ViT's cost by about a third.
"""

from __future__ import annotations

import torch
from torch import nn


class InformationSqueeze(nn.Module):
    """Two blocks of Conv1d(tokens, k=3, pad=1) → LayerNorm(d) → ReLU over the token axis."""

    def __init__(self, in_tokens: int, out_tokens: int, dim: int) -> None:
        super().__init__()
        self.in_tokens, self.out_tokens, self.dim = in_tokens, out_tokens, dim
        self.conv1 = nn.Conv1d(in_tokens, in_tokens, kernel_size=3, padding=1)
        self.norm1 = nn.LayerNorm(dim)
        self.conv2 = nn.Conv1d(in_tokens, out_tokens + 1, kernel_size=3, padding=1)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` (B, in_tokens, d) → (B, 1 + out_tokens, d); token 0 is the global token."""
        if tokens.shape[1:] != (self.in_tokens, self.dim):
            raise ValueError(f"expected (B, {self.in_tokens}, {self.dim}) token states, got {tuple(tokens.shape)}")
        x = torch.relu(self.norm1(self.conv1(tokens)))
        return torch.relu(self.norm2(self.conv2(x)))
