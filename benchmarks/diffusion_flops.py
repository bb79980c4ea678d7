"""Benchmark: compute of one denoiser forward, Diff-CXR's U-ViT next to the paper and to the SD UNet.

Run by hand: ``.venv/bin/python benchmarks/diffusion_flops.py`` (about a minute on 2 cores).

Why: the paper (Huang et al., Tables III–IV) argues for the U-ViT by its GFLOPs
(``thop`` convention: multiply-accumulates of Linear/Conv plus norm layers, one
forward at batch 1) against RoentGen's Stable Diffusion UNet (86.307). This
script checks that our U-ViT reproduces the paper's numbers, shows what the
TAEF2 latent (32×32×32 instead of SD's 4×32×32) changes, and counts the SD UNet
with the *same* counter so that the comparison is like for like.

Rows (all batch 1, timestep 500, random weights: counts do not depend on them):

1. Paper-size U-ViT (depth 16, embed 512, 8 heads, patch 2, 4×32×32 latent,
   768-d context) at 32 / 77 / 128 / 256 context tokens, and U-ViT + adapter at
   77, next to ``PAPER_GFLOPS`` / ``PAPER_ADAPTER_GFLOPS`` with the relative
   difference. The paper's Table III prints 16.075 for 32 tokens, its text says
   16.705 (two digits transposed); the row keeps both.
2. The same U-ViT (and + adapter) at the TAEF2 latent this project uses.
3. diffusers ``UNet2DConditionModel`` with the SD 1.5 UNet config at 4×32×32
   latent and 77×768 context, and the SD 2 style config (1024-d context, head
   dims (5, 10, 20, 20), linear projections) at 77×1024.

Each row has ``gmacs_thop`` (``services.diffusion.flops.thop_macs``), full
GFLOPs (``torch.utils.flop_counter``, attention included, 2 per MAC) and
parameters. Like the ``thop`` package, ``thop_macs`` has no rule for
``nn.GroupNorm`` (the UNet's norms count zero; counting them would add 0.045).

Writes ``benchmarks/results/diffusion_flops_<date>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

import torch  # noqa: E402

from diffcxr.machine import cpu_model, cpu_speed_flags  # noqa: E402
from services.diffusion.flops import (  # noqa: E402
    PAPER_ADAPTER_GFLOPS,
    PAPER_GFLOPS,
    count,
    full_flops,
    thop_macs,
)
from services.diffusion.uvit import UViTConfig  # noqa: E402

#: Paper-size U-ViT (Table III): depth 16, embed 512, 8 heads, patch 2, 4×32×32 latent, 768-d context.
PAPER_UVIT = UViTConfig(latent_channels=4, latent_size=32, patch_size=2, embed_dim=512, depth=16, num_heads=8)
#: The latent this project uses: TAEF2, 32 channels, 8× downsampling (256 px images → 32×32).
TAEF2_LATENT_CHANNELS = 32

#: Stable Diffusion 1.5 UNet (runwayml/stable-diffusion-v1-5 unet/config.json); written out in full even where it
#: equals diffusers' defaults (cross_attention_dim defaults to 1280 there, not SD's 768).
SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 32,  # 256 px images / 8; only a default, the forward accepts any size
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "use_linear_projection": False,
}
#: Stable Diffusion 2.x UNet (RoentGen's base): OpenCLIP ViT-H 1024-d context, per-level head dims, linear projections.
SD2_UNET_CONFIG: dict[str, Any] = {
    **SD15_UNET_CONFIG,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
}
#: Stable Diffusion VAE (AutoencoderKL): 4 latent channels, 8× downsampling, scaling factor 0.18215.
SD_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}

#: --quick / --dry-run: tiny stand-ins with the same interfaces (seconds, not minutes).
QUICK_UNET_CONFIG: dict[str, Any] = {
    **SD15_UNET_CONFIG,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
}
QUICK_VAE_CONFIG: dict[str, Any] = {**SD_VAE_CONFIG, "block_out_channels": (32, 32, 32, 32), "layers_per_block": 1}

#: What the design brief expects for the SD UNet (thop convention, GMACs at 4×32×32, 77 tokens).
SD15_EXPECTED_GMACS = 85.8  # "about", 768-d context
ROENTGEN_PAPER_GFLOPS = 86.307  # the paper's figure for RoentGen (SD 2 style, 1024-d context)
ROENTGEN_ROW = "SD2-style UNet 4x32x32 @77x1024 (RoentGen)"
TAEF2_ADAPTER_ROW = "U-ViT + adapter TAEF2 32x32x32 @77 tok"
#: Table III as printed for 32 tokens (PAPER_GFLOPS holds the text's 16.705).
PAPER_TABLE_III_32 = 16.075


def record_header(benchmark: str, command: str, **extra: Any) -> dict[str, Any]:
    """The fields every benchmark results file starts with: what ran, when, where, under what load."""
    import datetime as dt
    import os

    return {
        "benchmark": benchmark,
        **extra,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_1_5_15": list(os.getloadavg()),
        "command": command,
    }


def write_result(record: dict[str, Any], out: Path | None, stem: str) -> Path:
    """Write a benchmark's record to ``out``, else to ``benchmarks/results/<stem>_<today>.json``."""
    import datetime as dt

    path = out or Path(__file__).parent / "results" / f"{stem}_{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def machine_info() -> dict[str, Any]:
    """Where a benchmark ran: shared by the diffusion benchmarks."""
    import diffusers

    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_speed_flags(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "threads": torch.get_num_threads(),
        "accelerator": None,
    }


def rel(value: float, reference: float | None) -> float | None:
    return None if reference is None else round((value - reference) / reference, 5)


def uvit_row(name: str, cfg: UViTConfig, adapter: bool, paper: float | None) -> dict[str, Any]:
    counted = count(cfg, adapter=adapter)
    return {
        "name": name,
        "model": "U-ViT + adapter" if adapter else "U-ViT",
        "latent": list(cfg.latent_shape),
        "context": [cfg.context_tokens, cfg.context_dim],
        "gmacs_thop": round(counted["gmacs_thop"], 4),
        "gflops_full": round(counted["gflops_full"], 4),
        "params_m": round(counted["params_m"], 3),
        "paper_gflops": paper,
        "rel_diff_vs_paper": rel(counted["gmacs_thop"], paper),
    }


def unet_row(name: str, config: dict[str, Any], context_dim: int, reference: float | None) -> dict[str, Any]:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**config).eval()
    x = torch.randn(1, config["in_channels"], 32, 32)
    t = torch.full((1,), 500, dtype=torch.long)
    context = torch.randn(1, 77, context_dim)
    macs = thop_macs(unet, x, t, encoder_hidden_states=context)
    flops = full_flops(unet, x, t, encoder_hidden_states=context)
    return {
        "name": name,
        "model": "diffusers UNet2DConditionModel",
        "latent": [config["in_channels"], 32, 32],
        "context": [77, context_dim],
        "gmacs_thop": round(macs / 1e9, 4),
        "gflops_full": round(flops / 1e9, 4),
        "params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 3),
        "paper_gflops": reference,
        "rel_diff_vs_paper": rel(macs / 1e9, reference),
    }


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'row':44} {'GMACs thop':>10} {'GFLOPs full':>11} {'params M':>9} {'paper':>8} {'rel diff':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['name']:44} {r['gmacs_thop']:10.3f} {r['gflops_full']:11.3f} {r['params_m']:9.2f} "
            f"{fmt(r['paper_gflops'], '8.3f'):>8} {fmt(r['rel_diff_vs_paper'], '+9.3%'):>9}"
        )
        if "paper_table_iii_printed" in r:
            printed, diff = r["paper_table_iii_printed"], r["rel_diff_vs_table_iii_printed"]
            print(f"{'':44} (vs Table III as printed, {printed}: {diff:+.2%})")
        if "expected_gmacs_design_brief" in r:
            print(f"{'':44} (design brief expects about {r['expected_gmacs_design_brief']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    parser.add_argument("--no-unet", action="store_true", help="skip the SD UNet rows (saves most of the runtime)")
    args = parser.parse_args()
    torch.manual_seed(0)
    started = time.time()

    rows: list[dict[str, Any]] = []
    for tokens in (32, 77, 128, 256):
        cfg = UViTConfig(**{**PAPER_UVIT.to_dict(), "context_tokens": tokens})
        row = uvit_row(f"U-ViT 4x32x32 @{tokens} tok", cfg, False, PAPER_GFLOPS[f"uvit@{tokens}"])
        if tokens == 32:
            row["paper_table_iii_printed"] = PAPER_TABLE_III_32
            row["rel_diff_vs_table_iii_printed"] = rel(row["gmacs_thop"], PAPER_TABLE_III_32)
            row["paper_note"] = "Table III prints 16.075, the text 16.705 (transposed digits); compared to 16.705"
        rows.append(row)
    rows.append(uvit_row("U-ViT + adapter 4x32x32 @77 tok", PAPER_UVIT, True, PAPER_ADAPTER_GFLOPS))
    taef2 = UViTConfig(**{**PAPER_UVIT.to_dict(), "latent_channels": TAEF2_LATENT_CHANNELS})
    rows.append(uvit_row("U-ViT TAEF2 32x32x32 @77 tok", taef2, False, None))
    rows.append(uvit_row(TAEF2_ADAPTER_ROW, taef2, True, None))
    if not args.no_unet:
        rows.append(unet_row("SD1.5 UNet 4x32x32 @77x768", SD15_UNET_CONFIG, 768, None))
        rows[-1]["expected_gmacs_design_brief"] = SD15_EXPECTED_GMACS
        rows.append(unet_row(ROENTGEN_ROW, SD2_UNET_CONFIG, 1024, ROENTGEN_PAPER_GFLOPS))
    print_table(rows)

    by_name = {r["name"]: r for r in rows}
    ratios: dict[str, float] = {}
    if not args.no_unet:
        roentgen = by_name[ROENTGEN_ROW]["gmacs_thop"]
        for name in ("U-ViT 4x32x32 @77 tok", "U-ViT + adapter 4x32x32 @77 tok", TAEF2_ADAPTER_ROW):
            ratios[f"{name} / RoentGen UNet"] = round(by_name[name]["gmacs_thop"] / roentgen, 4)
        for k, v in ratios.items():
            print(f"{k}: {v:.3f}")

    out = {
        "benchmark": "diffusion_flops",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "command": "python benchmarks/diffusion_flops.py " + " ".join(sys.argv[1:]),
        "convention": {
            "gmacs_thop": "services.diffusion.flops.thop_macs: MACs of Linear/Conv + norm layers (2 per element, "
            "x2 when affine; GroupNorm zero, as in the thop package); activations and attention matmuls count zero; "
            "batch 1",
            "gflops_full": "torch.utils.flop_counter, every matmul including attention, 2 FLOPs per MAC",
            "paper_gflops": "the paper's 'GFLOPs' are thop MACs",
        },
        "uvit_config": PAPER_UVIT.to_dict(),
        "sd15_unet_config": SD15_UNET_CONFIG,
        "sd2_unet_config": SD2_UNET_CONFIG,
        "rows": rows,
        "ratios_thop": ratios,
        "seconds_total": round(time.time() - started, 1),
    }
    target = args.out or Path(__file__).parent / "results" / f"diffusion_flops_{dt.date.today().isoformat()}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
