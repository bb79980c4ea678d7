"""Benchmark: generation speed end to end, report text → PNG bytes, Diff-CXR next to a RoentGen-like pipeline.

Run by hand (nothing else on the machine)::

    .venv/bin/python benchmarks/generation_speed.py                      # paper size, every cell, 5 rounds
    .venv/bin/python benchmarks/generation_speed.py --cells 1x20 --rounds 5 --cells 8x20 --rounds 1
    .venv/bin/python benchmarks/generation_speed.py --quick               # tiny stand-ins, seconds

Why: the paper claims U-ViT + adapter runs 4× faster than a RoentGen-like Stable Diffusion UNet. Per-step
times extrapolated (``diffusion_throughput.py``) leave out text encoding, decoding and file writing, so this
times what a user waits for: the same code path ``diffcxr generate`` runs (``Generator.generate`` then one
synthetic-marked PNG per image), warmed up, in this process.

* **Diff-CXR**: a paper-size generator bundle (BiomedCLIP-size text encoder, 256 tokens squeezed to 77,
  U-ViT depth 16 / width 512 / patch 2 + disease adapter at the TAEF2 latent 32×32×32, the real TAEF2
  decoder), built by ``build_initial_bundle`` with random weights: timing does not depend on them. Run at
  each ``--precision`` asked (``auto`` = what ``diffcxr.precision`` picks on this machine).
* **RoentGen-like**: a CLIP ViT-L/14-size text encoder (transformers ``CLIPTextModel``, 12 layers, 768-d,
  77 tokens; the BiomedCLIP WordPiece tokenizer stands in for CLIP's BPE, which is not on this machine),
  the SD 1.5 UNet config at 4×32×32, the SD VAE decoder, random weights, fp32 unless
  ``--baseline-precision``.
* Both: the same reports, seeds, steps, guidance 4 (cond + uncond as one batch of 2B), DPM-Solver++ through
  ``services.diffusion.sampling.sample_latents``, and ``diffcxr.contracts.outputs.png``.

A cell is (images per call, steps). Rounds are interleaved: every round times every cell on every side, the
side order alternating by round, so drift of the machine hits both sides alike. Medians per (cell, side).

Also measured in the same run, for Diff-CXR at batch 8 (a forward of 16 with guidance):
**utilisation** = the denoiser's achieved FLOP/s (``torch.utils.flop_counter`` FLOPs of one forward over
its median time) over the matmul ceiling of the same precision and thread count (the best of three GEMMs,
one the size of the model's MLP); a **profile** of where a sampler step goes (Linear matmuls,
attention, layer norms, element-wise, the scheduler and Python between forwards); and the attention at the
model's shape as fused SDPA and as ``bmm`` + softmax. ``--try-compile`` adds the same forward under
``torch.compile`` against eager.

Writes ``benchmarks/results/generation_speed_<date>.json`` (``--quick``: ``/tmp``; ``--out`` overrides).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusion_flops import (  # noqa: E402
    QUICK_UNET_CONFIG,
    QUICK_VAE_CONFIG,
    SD15_UNET_CONFIG,
    SD_VAE_CONFIG,
    record_header,
    write_result,
)

from diffcxr.config import load_config  # noqa: E402
from diffcxr.contracts import outputs  # noqa: E402
from diffcxr.precision import DTYPES, native_bf16, resolve_precision  # noqa: E402
from services.diffusion.flops import full_flops  # noqa: E402
from services.diffusion.generator import Generator, build_initial_bundle  # noqa: E402
from services.diffusion.sampling import sample_latents  # noqa: E402

GUIDANCE = 4.0
#: Report texts written for this benchmark (no dataset text): findings of the kinds the labeler knows.
REPORTS = [
    "Large right pleural effusion with adjacent atelectasis.",
    "The heart is enlarged. No pneumothorax.",
    "Heart size normal. Lungs are clear.",
    "Left upper lobe opacity concerning for pneumonia.",
    "Small left apical pneumothorax.",
    "Mild pulmonary edema and cardiomegaly.",
    "Healed right rib fracture. No acute disease.",
    "Right lower lobe nodule. Emphysema.",
]
PAPER_TAEF2 = ["autoencoder.kind=taef2", "autoencoder.latent_channels=32", "autoencoder.scale_factor=1.0"]
CLIP_L14_TEXT = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                 "num_attention_heads": 12, "max_position_embeddings": 77}  # fmt: skip


class DiffCXRSide:
    """Our generator, called as ``diffcxr generate`` calls it."""

    def __init__(self, bundle: Path, precision: str) -> None:
        self.generator = Generator(bundle, precision=precision)
        self.name = f"diffcxr-{self.generator.precision}"
        self.provenance = self.generator.provenance()

    def __call__(self, reports: list[str], seeds: list[int], steps: int) -> list[bytes]:
        images = self.generator.generate(reports, seeds, steps=steps, guidance=GUIDANCE)
        return [im.png(self.provenance) for im in images]


class RoentGenLike:
    """CLIP-L text encoder → SD 1.5 UNet (DPM-Solver++, guidance) → SD VAE decoder → PNG, random weights."""

    def __init__(self, precision: str, quick: bool, schedule: dict[str, Any]) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        from diffcxr.paths import shared_dir

        torch.manual_seed(0)
        self.name, self.dtype, self.schedule = f"roentgen-like-{precision}", DTYPES[precision], schedule
        text_cfg = {**CLIP_L14_TEXT, **({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
                                         "num_attention_heads": 2} if quick else {})}  # fmt: skip
        self.text = CLIPTextModel(CLIPTextConfig(**text_cfg)).eval()
        unet_cfg = {**(QUICK_UNET_CONFIG if quick else SD15_UNET_CONFIG),
                    "cross_attention_dim": text_cfg["hidden_size"]}  # fmt: skip
        self.unet = UNet2DConditionModel(**unet_cfg).eval()
        self.vae = AutoencoderKL(**(QUICK_VAE_CONFIG if quick else SD_VAE_CONFIG)).eval()
        if self.dtype != torch.float32:  # diffusers warns on any .to(dtype), fp32 included
            self.unet, self.vae = self.unet.to(self.dtype), self.vae.to(self.dtype)
        tokenizer_file = shared_dir() / "weights" / "biomedclip" / "tokenizer.json" if shared_dir() else None
        self.tokenizer = None
        if tokenizer_file and tokenizer_file.is_file():
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        with torch.inference_mode():
            self.uncond = self.encode([""])[0]
        self.info = {"text_config": text_cfg, "unet_config": unet_cfg, "vae_config": "SD VAE (diffusers AutoencoderKL)",
                     "tokenizer": "BiomedCLIP WordPiece" if self.tokenizer else "whitespace hash"}  # fmt: skip

    def encode(self, reports: list[str]) -> torch.Tensor:
        ids = torch.zeros(len(reports), 77, dtype=torch.long)
        for i, report in enumerate(reports):
            tokens = self.tokenizer.encode(report).ids if self.tokenizer else [hash(w) for w in report.split()]
            row = [49406, *[t % 49400 for t in tokens][:75], 49407]
            ids[i, : len(row)] = torch.tensor(row)
        return self.text(input_ids=ids).last_hidden_state

    @torch.inference_mode()
    def __call__(self, reports: list[str], seeds: list[int], steps: int) -> list[bytes]:
        context = self.encode(reports)
        unet = self.unet

        def denoiser(x, t, c, h):  # noqa: ANN001, ANN202
            return unet(x, t, encoder_hidden_states=c).sample

        latents = sample_latents(denoiser, self.schedule, context, self.uncond, seeds, (4, 32, 32), steps, GUIDANCE,
                                 dtype=self.dtype)  # fmt: skip
        scale = float(self.vae.config.scaling_factor)
        rgb = self.vae.decode((latents / scale).to(self.dtype)).sample.float()
        gray = ((rgb + 1) / 2).clamp(0, 1).mean(1).numpy()
        meta = {"steps": steps, "guidance": GUIDANCE, "disease_sentence": "", "models": {}}
        return [outputs.png(outputs.to_uint8(g), {**meta, "seed": s}) for g, s in zip(gray, seeds, strict=True)]


def parse_cell(text: str) -> tuple[int, int]:
    batch, steps = text.lower().split("x")
    return int(batch), int(steps)


def time_cells(sides: list[Any], plan: list[tuple[tuple[int, int], int]]) -> dict[str, Any]:
    """Interleaved rounds: per cell, ``rounds`` timings of every side, order alternating by round."""
    timings: dict[str, dict[str, list[float]]] = {}
    for (batch, steps), rounds in plan:
        cell = f"{batch}x{steps}"
        reports, seeds = (REPORTS * 8)[:batch], list(range(100, 100 + batch))
        for side in sides:  # warm-up: same batch, 2 steps (allocator, oneDNN primitives, lazy imports)
            side(reports, seeds, 2)
        for r in range(rounds):
            for side in sides if r % 2 == 0 else sides[::-1]:
                t0 = time.perf_counter()
                pngs = side(reports, seeds, steps)
                seconds = time.perf_counter() - t0
                assert len(pngs) == batch and all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
                timings.setdefault(cell, {}).setdefault(side.name, []).append(round(seconds, 3))
                print(f"{cell} round {r} {side.name}: {seconds:.2f} s", flush=True)
    out: dict[str, Any] = {}
    for cell, per_side in timings.items():
        batch = int(cell.split("x")[0])
        med = {name: statistics.median(ts) for name, ts in per_side.items()}
        out[cell] = {name: {"seconds_median": round(m, 3), "seconds_all": per_side[name], "runs": len(per_side[name]),
                            "images_per_s": round(batch / m, 4)} for name, m in med.items()}  # fmt: skip
        base = next((m for n, m in med.items() if n.startswith("roentgen-like-fp32")), None)
        if base:
            out[cell]["speedup_vs_roentgen_like_fp32"] = {n: round(base / m, 3) for n, m in med.items()
                                                          if n.startswith("diffcxr")}  # fmt: skip
    return out


def median_call(fn: Any, args: tuple[torch.Tensor, ...], repeats: int) -> tuple[float, torch.Tensor]:
    """(median seconds of ``repeats`` calls after one warm-up, the warm-up's output)."""
    out = fn(*args)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def gemm_rate(m: int, k: int, n: int, dtype: torch.dtype, repeats: int) -> float:
    """GFLOP/s of one (m×k)·(k×n) matmul in ``dtype``: the median of ``repeats`` after one warm-up."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    seconds, _ = median_call(torch.matmul, (a, b), repeats)
    return round(2 * m * k * n / seconds / 1e9, 2)


def gemm_ceiling(dtype: torch.dtype, tokens: int, dim: int, repeats: int = 5) -> dict[str, Any]:
    """Best GFLOP/s of three GEMMs in ``dtype``: the MLP's up-projection, its down-projection, square 2048."""
    shapes = {"mlp_up": (tokens, dim, 4 * dim), "mlp_down": (tokens, 4 * dim, dim), "square_2048": (2048,) * 3}
    rates = {name: gemm_rate(*shape, dtype, repeats) for name, shape in shapes.items()}
    return {"gflops_per_s": rates, "ceiling_gflops_per_s": max(rates.values())}


PROFILE_GROUPS = {
    "linear_matmul": ("addmm", "mm", "bmm", "linear", "matmul", "mkldnn_linear"),
    "attention": ("scaled_dot_product", "flash_attention", "_efficient_attention", "softmax", "baddbmm"),
    "layer_norm": ("layer_norm",),
    "gelu": ("gelu",),
    "conv": ("convolution", "conv2d", "mkldnn_convolution"),
    "copies_casts": ("copy_", "to", "_to_copy", "contiguous", "clone", "cat"),
}


def guided_forward_args(part: Any, b: int) -> tuple[torch.Tensor, ...]:
    """Seeded inputs of one denoiser forward of ``b`` rows (a guided batch of b/2 images) in its precision."""
    cfg, dtype = part.model.config, DTYPES[part.precision]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, *cfg.latent_shape, dtype=dtype, generator=gen)
    t = torch.full((b,), 500, dtype=torch.long)
    ctx = torch.randn(b, cfg.context_tokens, cfg.context_dim, dtype=dtype, generator=gen)
    return (x, t, ctx, ctx) if part.has_adapter else (x, t, ctx)


def utilisation_and_profile(side: DiffCXRSide, batch: int, steps: int) -> dict[str, Any]:
    """Achieved FLOP/s of the denoiser against the GEMM ceiling, and where a sampler step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    part = side.generator.denoiser
    model, dtype = part.model, DTYPES[part.precision]
    cfg = model.config  # a bare U-ViT and the adapted one both carry it
    b = 2 * batch  # cond + uncond
    args = guided_forward_args(part, b)
    flops = full_flops(model, *args)
    with torch.inference_mode():
        forward_s, _ = median_call(model, args, 5)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(*args)
    seq = 1 + cfg.context_tokens + cfg.num_patches
    ceiling = gemm_ceiling(dtype, b * seq, cfg.embed_dim)
    achieved = flops / forward_s / 1e9
    groups = dict.fromkeys([*PROFILE_GROUPS, "other"], 0.0)
    for event in prof.key_averages():
        name = event.key.removeprefix("aten::")
        group = next((g for g, keys in PROFILE_GROUPS.items() if name in keys or any(k in name for k in keys
                      if len(k) > 3)), "other")  # fmt: skip
        groups[group] += event.self_cpu_time_total / 1e6
    total = sum(groups.values()) or 1.0
    # the sampler's own time: a real run's wall time minus its forwards
    reports, seeds = (REPORTS * 8)[:batch], list(range(batch))
    texts = side.generator.text.run(reports)
    t0 = time.perf_counter()
    part.sample(np.stack([r.context for r in texts]), np.stack([r.hint for r in texts]) if part.has_adapter else None,
                side.generator.text.uncond.numpy(), seeds, steps, GUIDANCE)  # fmt: skip
    sample_s = time.perf_counter() - t0
    return {
        "batch_images": batch, "forward_batch": b, "precision": part.precision, "threads": torch.get_num_threads(),
        "forward_gflops": round(flops / 1e9, 2), "forward_s_median": round(forward_s, 4),
        "achieved_gflops_per_s": round(achieved, 2), **ceiling,
        "utilisation": round(achieved / ceiling["ceiling_gflops_per_s"], 3),
        "profile_share_of_forward": {g: round(s / total, 3) for g, s in groups.items()},
        "attention_kernels": attention_probe(b, seq, cfg.num_heads, cfg.embed_dim // cfg.num_heads, dtype),
        "sampler": {"steps": steps, "wall_s": round(sample_s, 3), "forwards_s": round(steps * forward_s, 3),
                    "scheduler_and_python_share": round(max(0.0, sample_s - steps * forward_s) / sample_s, 3)},
    }  # fmt: skip


def attention_probe(b: int, tokens: int, heads: int, head_dim: int, dtype: torch.dtype) -> dict[str, Any]:
    """The U-ViT's attention at its shape, as it runs (fused SDPA on the qkv projection's strided views) and
    as plain ``bmm`` + softmax: where the fused CPU kernel is slower than the GEMMs around it."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    q, k, v = torch.randn(b, tokens, 3, heads, head_dim, dtype=dtype).permute(2, 0, 3, 1, 4)
    flops = 4 * b * heads * tokens * tokens * head_dim

    def unfused() -> torch.Tensor:
        qc, kc, vc = (a.reshape(b * heads, tokens, head_dim) for a in (q * head_dim**-0.5, k, v))
        return torch.bmm(torch.bmm(qc, kc.transpose(1, 2)).softmax(-1), vc)

    rates = {}
    with torch.inference_mode():
        for name, fn in {"sdpa": lambda: F.scaled_dot_product_attention(q, k, v), "bmm_softmax": unfused}.items():
            seconds, _ = median_call(fn, (), 5)
            rates[name] = {"ms": round(1e3 * seconds, 2), "gflops_per_s": round(flops / seconds / 1e9, 1)}
    return {"shape_b_h_n_d": [b, heads, tokens, head_dim], **rates}


def compile_probe(side: DiffCXRSide, batch: int, repeats: int = 5) -> dict[str, Any]:
    """Whether ``torch.compile`` (inductor) pays for the denoiser: the forward of a guided batch eager and
    compiled (median of ``repeats`` after warm-up), the one-off compile time, and how far the outputs differ."""
    part = side.generator.denoiser
    model, b = part.model, 2 * batch
    args = guided_forward_args(part, b)
    with torch.inference_mode():
        eager_s, eager_out = median_call(model, args, repeats)
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        compiled(*args)
        compile_s = time.perf_counter() - t0
        compiled_s, compiled_out = median_call(compiled, args, repeats)
    diff = (compiled_out.float() - eager_out.float()).abs()
    return {
        "precision": part.precision, "forward_batch": b, "eager_s_median": round(eager_s, 4),
        "compiled_s_median": round(compiled_s, 4), "speedup": round(eager_s / compiled_s, 3),
        "first_call_compile_s": round(compile_s, 1), "max_abs_diff_vs_eager": float(diff.max()),
        "mean_abs_diff_vs_eager": float(diff.mean()),
    }  # fmt: skip


def bf16_probe() -> dict[str, Any]:
    """One 1024³ matmul in fp32 and bf16 (median of 3): why ``auto`` picks what it picks on this machine."""
    rates = {name: gemm_rate(1024, 1024, 1024, dtype, 3) for name, dtype in DTYPES.items()}
    return {"native_bf16": native_bf16(), "matmul_1024_gflops_per_s": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", action="append", default=None, metavar="BxS",
                        help="images per call x steps; repeatable, each with its own --rounds (default 1x20 1x50 "
                        "8x20 8x50)")  # fmt: skip
    parser.add_argument("--rounds", type=int, action="append", default=None,
                        help="timed runs per side for each --cells in order (last repeats; default 5)")  # fmt: skip
    parser.add_argument("--precision", nargs="+", default=["fp32", "auto"], help="Diff-CXR precisions to time")
    parser.add_argument("--baseline-precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--no-utilisation", action="store_true", help="skip the FLOP/s, ceiling and profile part")
    parser.add_argument("--try-compile", action="store_true",
                        help="also time the denoiser forward under torch.compile against eager (batch 8)")  # fmt: skip
    parser.add_argument("--bundle", help="a generator bundle to time instead of the paper-size one built here")
    parser.add_argument("--quick", action="store_true", help="tiny stand-ins: checks the script in seconds")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cells = [parse_cell(c) for c in (args.cells or ["1x20", "1x50", "8x20", "8x50"])]
    rounds = args.rounds or [5]
    plan = [(cell, rounds[min(i, len(rounds) - 1)]) for i, cell in enumerate(cells)]
    if args.quick:
        plan = [((b, min(s, 3)), min(r, 2)) for (b, s), r in plan]
    started = time.perf_counter()
    record = record_header("generation_speed", "python " + " ".join(sys.argv), quick=args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("tiny") if args.quick else load_config("paper", PAPER_TAEF2)
        bundle = Path(args.bundle) if args.bundle else build_initial_bundle(cfg, Path(tmp, "generator"))
        precisions = list(dict.fromkeys(resolve_precision(p) for p in args.precision))
        ours = [DiffCXRSide(bundle, p) for p in precisions]
        baseline = RoentGenLike(args.baseline_precision, args.quick, ours[0].generator.spec["schedule"])
        sides = [*ours, baseline]
        record["setup"] = {
            "plan": [{"cell": f"{b}x{s}", "rounds": r} for (b, s), r in plan], "guidance": GUIDANCE,
            "auto_precision_here": resolve_precision("auto"),
            "bf16_probe": bf16_probe(),
            "diffcxr": {"uvit": ours[0].generator.spec["uvit"]["config"], "weights": "random init (timing only)",
                        "autoencoder": ours[0].generator.spec["autoencoder"]["id"],
                        "latent_shape": ours[0].generator.spec["autoencoder"]["latent_shape"]},
            "roentgen_like": baseline.info,
            "timed": "report text → PNG bytes in this process (Generator.generate + png, as `diffcxr generate`)",
        }  # fmt: skip
        record["cells"] = time_cells(sides, plan)
        write_result(record, args.out or (Path(tempfile.gettempdir()) / "generation_speed_quick.json"
                                          if args.quick else None), "generation_speed")  # fmt: skip
        if not args.no_utilisation:
            record["utilisation"] = {s.name: utilisation_and_profile(s, 8 if not args.quick else 2, 3 if args.quick
                                                                     else 5) for s in ours}  # fmt: skip
        if args.try_compile:
            record["torch_compile"] = {s.name: compile_probe(s, 8 if not args.quick else 2) for s in ours}
    record["load_average_end"] = list(os.getloadavg())
    record["seconds_total"] = round(time.perf_counter() - started, 1)
    path = write_result(record, args.out or (Path(tempfile.gettempdir()) / "generation_speed_quick.json"
                                             if args.quick else None), "generation_speed")  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
