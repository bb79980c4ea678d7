"""Compute of the denoiser, counted two ways.

* ``thop`` convention (the paper's GFLOPs, Tables III–IV): multiply-accumulates
  of Linear and Conv layers for one forward at batch 1, plus the ``thop``
  package's count for norm layers (2 per element, doubled when affine; like
  ``thop``, GroupNorm counts zero); activations and attention matmuls count zero. Implemented with forward
  hooks so the project does not depend on ``thop``; the rules are the package's.
* Full FLOPs from ``torch.utils.flop_counter`` (every matmul, attention included,
  2 FLOPs per MAC).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from services.diffusion.adapter import AdaptedUViT
from services.diffusion.uvit import UViT, UViTConfig, uvit_config

#: Paper (Huang et al.) Table III/IV GFLOPs, depth 16, 4×32×32 latent, 768-d context.
#: Table III prints 16.075 for 32 tokens; its text says 16.705 (the table transposed two digits).
PAPER_GFLOPS: dict[str, float] = {"uvit@32": 16.705, "uvit@77": 19.322, "uvit@128": 22.287, "uvit@256": 29.729}
PAPER_ADAPTER_GFLOPS: float = 29.641


def _count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features * output.numel()
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        kernel = int(torch.tensor(module.weight.shape[2:]).prod())
        return output.numel() * (inputs[0].shape[1] // module.groups) * kernel
    if isinstance(module, nn.LayerNorm | nn.BatchNorm1d | nn.BatchNorm2d | nn.InstanceNorm2d):  # no GroupNorm rule
        affine = getattr(module, "elementwise_affine", False) or getattr(module, "affine", False)
        return 2 * inputs[0].numel() * (2 if affine else 1)
    return 0


def thop_macs(model: nn.Module, *inputs: torch.Tensor, **kwargs: Any) -> int:
    """MACs of one forward in the ``thop`` convention (see the module docstring)."""
    total = [0]

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        total[0] += _count(module, args, output)

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def full_flops(model: nn.Module, *inputs: torch.Tensor, **kwargs: Any) -> int:
    """All FLOPs of one forward (matmuls incl. attention, convs) from ``torch.utils.flop_counter``."""
    # The math backend spells attention as matmuls the counter sees (the fused CPU kernel it would skip).
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(*inputs, **kwargs)
    return int(counter.get_total_flops())


def example_inputs(cfg: UViTConfig, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, *cfg.latent_shape)
    t = torch.full((batch,), 500, dtype=torch.long)
    context = torch.randn(batch, cfg.context_tokens, cfg.context_dim)
    return x, t, context


def count(cfg: UViTConfig, adapter: bool = False) -> dict[str, float]:
    """GMACs (thop convention), full GFLOPs and parameters (M) of the U-ViT, or of U-ViT + adapter."""
    with torch.device("meta"):  # shapes are all a count needs: no weights are allocated or initialised
        model: nn.Module = UViT(cfg).eval()
        args: tuple = example_inputs(cfg)
        if adapter:
            model = AdaptedUViT(model).eval()
            args = (*args, torch.randn_like(args[2]))
    params = sum(p.numel() for p in model.parameters())
    return {
        "gmacs_thop": thop_macs(model, *args) / 1e9,
        "gflops_full": full_flops(model, *args) / 1e9,
        "params_m": params / 1e6,
    }


def config_for(cfg: Any, tokens: int | None = None) -> UViTConfig:
    """The denoiser a ``DiffCXRConfig`` builds, with ``tokens`` context tokens (default: the text config's)."""
    k = tokens or cfg.text.squeeze_tokens or cfg.text.context_length
    return uvit_config(cfg, (k, cfg.text.hidden_dim))


def table(cfg: Any, tokens: int | None = None, adapter: bool = True) -> dict[str, Any]:
    """``diffcxr flops``: the profile's model, and the token sweep next to the paper's Table III."""
    net = config_for(cfg, tokens)
    model = count(net, adapter=adapter)
    paper_key = f"uvit@{net.context_tokens}"
    paper_shape = (net.latent_channels, net.latent_size, net.embed_dim, net.depth, net.context_dim) == (
        4, 32, 512, 16, 768
    )  # fmt: skip
    reference = (PAPER_ADAPTER_GFLOPS if adapter and net.context_tokens == 77 else None) if adapter else None
    if not adapter:
        reference = PAPER_GFLOPS.get(paper_key)
    out: dict[str, Any] = {
        "profile": cfg.project.profile,
        "model": "uvit+adapter" if adapter else "uvit",
        "config": net.to_dict(),
        "convention": "thop: Linear+Conv MACs and thop's norm-layer count, batch 1, one forward, no CFG doubling",
        **{k: round(v, 3) for k, v in model.items()},
    }
    if paper_shape and reference is not None:
        out["paper_gflops"] = reference
        out["relative_difference"] = round(model["gmacs_thop"] / reference - 1, 5)
    sweep = []
    for k in (32, 77, 128, 256):
        row = count(UViTConfig(**{**net.to_dict(), "context_tokens": k}))
        entry = {"tokens": k, "gmacs_thop": round(row["gmacs_thop"], 3), "gflops_full": round(row["gflops_full"], 3)}
        if paper_shape:
            entry["paper"] = PAPER_GFLOPS[f"uvit@{k}"]
        sweep.append(entry)
    out["uvit_by_tokens"] = sweep
    if paper_shape:
        out["note"] = "paper Table III prints 16.075 for 32 tokens; its text's 16.705 is the correct value"
    return out
