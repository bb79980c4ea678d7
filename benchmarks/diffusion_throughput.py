"""Benchmark: generation throughput on this CPU, Diff-CXR next to a RoentGen-equivalent SD UNet, in one run.

Run by hand: ``.venv/bin/python benchmarks/diffusion_throughput.py [--dtype bf16] [--latent sd-vae]``
(full run about 10 minutes on 2 cores; ``--quick`` checks the script in seconds with tiny models).

Why: the paper's case for the U-ViT is compute (about 30 vs 86 GMACs per
forward, see ``diffusion_flops.py``); this measures what that buys in images/s
on the machine Diff-CXR actually serves from, with the same sampler on both sides.

* Diff-CXR: paper-size U-ViT (depth 16, embed 512, 8 heads, patch 2) + disease
  adapter, at the TAEF2 latent (32×32×32 for 256 px; ``--latent sd-vae`` for
  4×32×32), 77×768 context and a 77×768 hint, decoded by TAEF2 (real weights;
  the SD VAE below with ``--latent sd-vae``).
* Baseline (RoentGen-equivalent): diffusers ``UNet2DConditionModel`` with the
  SD 1.5 UNet config at 4×32×32 and 77×768 context, decoded by an
  ``AutoencoderKL`` with the SD VAE config.
* Both: DPM-Solver++ (2M) through ``services.diffusion.sampling.sample_latents``
  with classifier-free guidance 4 (cond + uncond as one batch of 2B),
  ``torch.inference_mode``, fp32 unless ``--dtype bf16`` (weights, sampler
  inputs and decoder in bf16). Denoisers and the SD VAE have random weights:
  the timing does not depend on them.

Method: a full run of the SD UNet at batch 8 × 50 steps would take over 20
minutes here, so for each (model, batch) the per-step time is the median of
``--repeats`` sampler steps after ``--warmup`` (the time between consecutive
denoiser calls inside a real ``sample_latents`` run: forward, guidance, scheduler
update), and decoding is timed per batch. End-to-end = steps × step time +
decode, labelled ``extrapolated_from_step_time``. One real generation (batch 1,
20 steps, decode included) per model checks the extrapolation; both numbers are
reported. The load average at start and end is recorded: other work on the
machine inflates every number.

Writes ``benchmarks/results/diffusion_throughput_<date>.json`` (``--quick``:
``/tmp/diffusion_throughput_quick_<date>.json``; ``--out`` overrides both).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

import torch  # noqa: E402
from diffusion_flops import (  # noqa: E402
    PAPER_UVIT,
    QUICK_UNET_CONFIG,
    QUICK_VAE_CONFIG,
    SD15_UNET_CONFIG,
    SD_VAE_CONFIG,
    machine_info,
)

from diffcxr.autoencoders.frozen import load_autoencoder  # noqa: E402
from diffcxr.config import AutoencoderConfig, DiffusionConfig  # noqa: E402
from services.diffusion.adapter import AdaptedUViT  # noqa: E402
from services.diffusion.sampling import Denoiser, sample_latents  # noqa: E402
from services.diffusion.schedulers import schedule_of  # noqa: E402
from services.diffusion.uvit import UViT, UViTConfig  # noqa: E402

CONTEXT_TOKENS, CONTEXT_DIM = 77, 768
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
@dataclass
class Contender:
    """One side of the comparison: how to denoise, at what latent, and how to decode."""

    name: str
    denoiser: Denoiser
    latent_shape: tuple[int, int, int]
    with_hint: bool
    decode: Callable[[torch.Tensor], torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)


def cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """eval() and, for bf16, the weights cast (diffusers warns on any .to(dtype), fp32 included)."""
    module.eval()
    return module if dtype == torch.float32 else module.to(dtype)


def params_m(module: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 2)


def build(args: argparse.Namespace, dtype: torch.dtype) -> tuple[Contender, Contender]:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    vae = cast(AutoencoderKL(**(QUICK_VAE_CONFIG if args.quick else SD_VAE_CONFIG)), dtype)
    scale = float(vae.config.scaling_factor)

    def decode_sd_vae(latents: torch.Tensor) -> torch.Tensor:
        return ((vae.decode(latents.to(dtype) / scale).sample.float() + 1) / 2).clamp(0, 1)

    channels = 32 if args.latent == "taef2" else 4
    base = PAPER_UVIT.to_dict() | {"latent_channels": channels, "context_tokens": CONTEXT_TOKENS}
    if args.quick:
        base |= {"embed_dim": 64, "depth": 2, "num_heads": 2}
    cfg = UViTConfig(**base)
    adapted = cast(AdaptedUViT(UViT(cfg)), dtype)

    if args.latent == "taef2":
        taef2 = load_autoencoder(AutoencoderConfig())  # the real pretrained TAEF2 (../shared/weights/taef2)
        cast(taef2.model, dtype)  # type: ignore[attr-defined]

        def decode_taef2(latents: torch.Tensor) -> torch.Tensor:
            return taef2.decode(latents.to(dtype)).float()

        decode_diffcxr, decoder_info = decode_taef2, {"decoder": taef2.id, "decoder_weights": "pretrained"}
    else:
        decode_diffcxr = decode_sd_vae
        decoder_info = {"decoder": "AutoencoderKL (SD VAE config)", "decoder_weights": "random init"}
    diffcxr = Contender(
        "diffcxr",
        lambda x, t, ctx, hint: adapted(x, t, ctx, hint),
        cfg.latent_shape,
        True,
        decode_diffcxr,
        {
            "denoiser": "U-ViT + disease adapter",
            "uvit_config": cfg.to_dict(),
            "denoiser_params_m": params_m(adapted),
            "denoiser_weights": "random init (timing only)",
            **decoder_info,
        },
    )

    unet_config = QUICK_UNET_CONFIG if args.quick else SD15_UNET_CONFIG
    unet = cast(UNet2DConditionModel(**unet_config), dtype)
    baseline = Contender(
        "baseline",
        lambda x, t, ctx, hint: unet(x, t, encoder_hidden_states=ctx).sample,
        (4, 32, 32),
        False,
        decode_sd_vae,
        {
            "denoiser": "diffusers UNet2DConditionModel, SD 1.5 config (RoentGen-equivalent)",
            "unet_config": unet_config,
            "denoiser_params_m": params_m(unet),
            "denoiser_weights": "random init (timing only)",
            "decoder": "AutoencoderKL (SD VAE config)",
            "decoder_params_m": params_m(vae),
            "decoder_weights": "random init (timing only)",
        },
    )
    return diffcxr, baseline


def generate(
    c: Contender, batch: int, steps: int, args: argparse.Namespace, denoiser: Denoiser | None = None
) -> torch.Tensor:
    """Latents from a real guided DPM-Solver++ run (fixed random context, hint and seeds)."""
    g = torch.Generator().manual_seed(batch)
    context = torch.randn(batch, CONTEXT_TOKENS, CONTEXT_DIM, generator=g)
    hint = torch.randn(batch, CONTEXT_TOKENS, CONTEXT_DIM, generator=g) if c.with_hint else None
    return sample_latents(
        denoiser or c.denoiser,
        schedule_of(DiffusionConfig()),
        context,
        torch.zeros(CONTEXT_TOKENS, CONTEXT_DIM),
        list(range(batch)),
        c.latent_shape,
        steps,
        args.guidance,
        hint=hint,
        dtype=DTYPES[args.dtype],
    )


def step_times(c: Contender, batch: int, args: argparse.Namespace) -> tuple[list[float], torch.Tensor]:
    """Seconds per sampler step (after the warm-up steps), from the gaps between denoiser calls."""
    stamps: list[float] = []

    def timed(x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor, hint: torch.Tensor | None) -> torch.Tensor:
        stamps.append(time.perf_counter())
        return c.denoiser(x, t, ctx, hint)

    latents = generate(c, batch, args.warmup + args.repeats, args, timed)
    stamps.append(time.perf_counter())
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return gaps[args.warmup :], latents


def timed_decode(c: Contender, latents: torch.Tensor, runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        t = time.perf_counter()
        c.decode(latents)
        seconds.append(time.perf_counter() - t)
    return seconds


def r4(x: float) -> float:
    return round(x, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--latent", choices=["taef2", "sd-vae"], default="taef2", help="Diff-CXR's latent/decoder")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--warmup", type=int, default=1, help="untimed sampler steps per (model, batch)")
    parser.add_argument("--repeats", type=int, default=3, help="timed sampler steps per (model, batch); median")
    parser.add_argument(
        "--decode-repeats",
        type=int,
        default=1,
        help="timed decodes per (model, batch); one untimed warm-up decode per model at the smallest batch",
    )
    parser.add_argument(
        "--validate-steps", type=int, default=20, help="one real run per model at the smallest batch; 0 skips"
    )
    parser.add_argument("--quick", action="store_true", help="tiny models, 2 steps, batches 1 and 2: a smoke check")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.batches, args.steps, args.warmup, args.repeats, args.validate_steps = [1, 2], [2], 1, 1, 2
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    started, load_start = time.time(), os.getloadavg()

    with torch.inference_mode():
        contenders = build(args, dtype)
        print(f"models built ({time.time() - started:.0f} s)")
        per_model: dict[str, dict[int, dict[str, Any]]] = {c.name: {} for c in contenders}
        for batch in sorted(args.batches):
            for c in contenders:
                gaps, latents = step_times(c, batch, args)
                if batch == min(args.batches):
                    c.decode(latents)  # warm-up decode, once per model
                decodes = timed_decode(c, latents, args.decode_repeats)
                per_model[c.name][batch] = {
                    "step_s": r4(statistics.median(gaps)),
                    "step_s_all": [r4(g) for g in gaps],
                    "decode_s": r4(statistics.median(decodes)),
                    "decode_s_all": [r4(d) for d in decodes],
                }
                m = per_model[c.name][batch]
                print(f"{c.name:9} batch {batch}: {m['step_s']:.3f} s/step, decode {m['decode_s']:.3f} s")

        validation: dict[str, Any] = {}
        if args.validate_steps:
            b1 = min(args.batches)
            for c in contenders:
                t = time.perf_counter()
                c.decode(generate(c, b1, args.validate_steps, args))
                real = time.perf_counter() - t
                m = per_model[c.name][b1]
                extrapolated = args.validate_steps * m["step_s"] + m["decode_s"]
                validation[c.name] = {
                    "batch": b1,
                    "steps": args.validate_steps,
                    "real_end_to_end_s": r4(real),
                    "extrapolated_s": r4(extrapolated),
                    "real_over_extrapolated": r4(real / extrapolated),
                }
                n = args.validate_steps
                print(f"{c.name:9} real batch {b1} x {n} steps: {real:.2f} s, extrapolated {extrapolated:.2f} s")

    table = []
    for batch in sorted(args.batches):
        for steps in sorted(args.steps):
            row: dict[str, Any] = {"batch": batch, "steps": steps, "e2e": "extrapolated_from_step_time"}
            for c in contenders:
                m = per_model[c.name][batch]
                denoise = steps * m["step_s"]
                e2e = denoise + m["decode_s"]
                row[c.name] = {
                    "denoise_s": r4(denoise),
                    "decode_s": m["decode_s"],
                    "end_to_end_s": r4(e2e),
                    "images_per_s": r4(batch / e2e),
                    "denoise_images_per_s": r4(batch / denoise),
                }
            row["speedup_images_per_s"] = r4(row["diffcxr"]["images_per_s"] / row["baseline"]["images_per_s"])
            row["speedup_denoise_only"] = r4(row["baseline"]["denoise_s"] / row["diffcxr"]["denoise_s"])
            table.append(row)

    print(f"\n{'batch':>5} {'steps':>5} {'Diff-CXR img/s':>14} {'baseline img/s':>14} {'speed-up':>8} {'denoise':>8}")
    for row in table:
        print(
            f"{row['batch']:5} {row['steps']:5} {row['diffcxr']['images_per_s']:14.4f} "
            f"{row['baseline']['images_per_s']:14.4f} {row['speedup_images_per_s']:7.2f}x "
            f"{row['speedup_denoise_only']:7.2f}x"
        )

    load_end = os.getloadavg()
    out = {
        "benchmark": "diffusion_throughput" + ("_quick" if args.quick else ""),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_1_5_15": {"start": [round(v, 2) for v in load_start], "end": [round(v, 2) for v in load_end]},
        "command": "python benchmarks/diffusion_throughput.py " + " ".join(sys.argv[1:]),
        "setup": {
            "quick": args.quick,
            "dtype": args.dtype,
            "latent": args.latent,
            "context": [CONTEXT_TOKENS, CONTEXT_DIM],
            "sampler": "DPM-Solver++ (2M) via services.diffusion.sampling.sample_latents",
            "guidance": args.guidance,
            "cfg_batching": "cond + uncond in one forward of 2B",
            "image_size": 8 * contenders[0].latent_shape[1],
            "warmup_steps": args.warmup,
            "timed_steps": args.repeats,
            "decode_repeats": args.decode_repeats,
            "step_time": "median gap between consecutive denoiser calls in a real sample_latents run "
            "(forward + guidance + scheduler update)",
            "end_to_end": "extrapolated_from_step_time: steps x median step time + decode time",
            "models": {c.name: c.info for c in contenders},
        },
        "per_batch": {name: {str(b): v for b, v in d.items()} for name, d in per_model.items()},
        "validation_real_run": validation,
        "results": table,
        "seconds_total": round(time.time() - started, 1),
    }
    if args.out:
        target = args.out
    elif args.quick:
        target = Path(tempfile.gettempdir()) / f"diffusion_throughput_quick_{dt.date.today().isoformat()}.json"
    else:
        target = Path(__file__).parent / "results" / f"diffusion_throughput_{dt.date.today().isoformat()}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
