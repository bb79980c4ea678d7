"""GPU check: paper-size U-ViT training step time and U-ViT + adapter generation throughput on one GPU.

UNTESTED ON A GPU: written on a machine without one and checked end to end only
with ``--dry-run`` (CPU, tiny sizes). Expect to read its first real output
critically.

Why: a lent GPU is rare and short (one call, minutes), so this is the one
prepared script that answers, in one run of at most about 8 minutes, how fast
the paper-size model trains and samples on real hardware:

1. ``nvidia-smi`` (printed and stored).
2. Training step time of the paper-size U-ViT (depth 16, embed 512, 8 heads,
   patch 2, 77×768 context) at the SD latent 4×32×32 and the TAEF2 latent
   32×32×32, batch 64 and 256 (an out-of-memory is recorded, not fatal), fp32
   and bf16 autocast. A step is what ``services/diffusion/train.py`` does per
   batch on random data: DDPM ``add_noise``, ε-MSE, the finite-loss check,
   backward, grad-norm clip 1.0, AdamW (lr 2e-4, wd 0.03, betas 0.9/0.9), EMA
   update (diffusers ``EMAModel``).
3. Generation with U-ViT + adapter at both latents, batch 1 / 8 / 64, fp32 and
   bf16 (weights and sampler inputs), 20 and 50 DPM-Solver++ steps through
   ``services.diffusion.sampling.sample_latents`` with guidance 4 (cond + uncond
   as one batch of 2B): real full runs, ``torch.cuda.synchronize`` around each
   timing. At the TAEF2 latent the TAEF2 decode is timed too (pretrained weights
   if ``../shared/weights/taef2`` is there, else random init: same cost).
   All denoiser weights are random (timing only).
4. The RoentGen-like side beside it: the SD 1.5 UNet (4×32×32, 768-d context) and the SD VAE decoder, bf16,
   the same sampler and guidance, batch 1 / 8 / 64, the first ``--steps`` (20), end to end.
5. The Serve run at concurrency 64 is *not* made here: the serving stack needs ray[serve], pydantic,
   fastapi and MLflow, which the device image lacks and cannot install (no network; carried files ≤ 64 MiB).
   The record says so (``serve``); ``benchmarks/serving_load.py --levels 1 16 64`` is the run for a GPU
   host with the project installed.

Results go to ``$OUT/gpu_check_<date>.json`` (when ``$OUT`` is set) and
``benchmarks/results/gpu_check_<date>.json``, rewritten after every measurement
so a run cut short still leaves what it measured. ``--dry-run`` (chosen
automatically when no CUDA device is found) runs everything on the CPU with tiny
sizes and writes to ``$OUT`` or ``/tmp`` only.

The device image (2026-11) has torch but neither diffusers nor pydantic.
diffusers travels as a zip: on the CPU machine run
``.venv/bin/python benchmarks/gpu_check.py --pack-deps`` once (writes
``build/gpu_deps/diffusers.zip``, about 6 MB, git-ignored), then on the device
``bash benchmarks/gpu_check.sh`` with ``build/gpu_deps`` carried. Without
pydantic the script stands in a stub for ``diffcxr.config`` (only the sampler's
import needs it) and uses the schedule and optimiser constants below, which
``--dry-run`` checks against ``DiffusionConfig``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import types
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEPS_ZIP = ROOT / "build" / "gpu_deps" / "diffusers.zip"

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

#: DiffusionConfig defaults the script needs; checked against the real config whenever pydantic is importable.
SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "v_prediction",
}
LR, WEIGHT_DECAY, BETAS, EMA_DECAY, GRAD_CLIP = 2e-4, 0.03, (0.9, 0.9), 0.9999, 1.0
CONTEXT_TOKENS, CONTEXT_DIM, GUIDANCE = 77, 768, 4.0


def pack_deps() -> None:
    """Zip the installed diffusers (sources and data files, no bytecode) for the device image."""
    spec = importlib.util.find_spec("diffusers")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("diffusers is not installed here: nothing to pack")
    package = Path(next(iter(spec.submodule_search_locations)))
    DEPS_ZIP.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(DEPS_ZIP, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(package.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in {".py", ".json", ".txt"}:
                z.write(path, path.relative_to(package.parent).as_posix())
    print(f"wrote {DEPS_ZIP} ({DEPS_ZIP.stat().st_size / 1e6:.1f} MB); carry build/gpu_deps to the device")


def provide_imports() -> bool:
    """Make diffusers importable (carried zip) and stub diffcxr.config without pydantic; True if stubbed."""
    if importlib.util.find_spec("diffusers") is None:
        if not DEPS_ZIP.is_file():
            raise SystemExit(
                f"diffusers is not installed and {DEPS_ZIP} is missing: run "
                "`.venv/bin/python benchmarks/gpu_check.py --pack-deps` on the CPU machine and carry build/gpu_deps"
            )
        sys.path.insert(0, str(DEPS_ZIP))
    if importlib.util.find_spec("pydantic") is not None:
        return False
    stub = types.ModuleType("diffcxr.config")
    stub.DiffusionConfig = object  # type: ignore[attr-defined]  # schedulers.py imports it for a type only
    sys.modules["diffcxr.config"] = stub
    return True


def config_drift() -> list[str]:
    """Where the constants above differ from DiffusionConfig (needs pydantic)."""
    from diffcxr.config import DiffusionConfig
    from services.diffusion.schedulers import schedule_of

    d = DiffusionConfig()
    drift = [] if schedule_of(d) == SCHEDULE else [f"schedule {schedule_of(d)} != {SCHEDULE}"]
    expected = {"lr": LR, "weight_decay": WEIGHT_DECAY, "betas": BETAS, "ema_decay": EMA_DECAY, "grad_clip": GRAD_CLIP}
    drift += [f"{k}: config {getattr(d, k, None)} != {v}" for k, v in expected.items() if getattr(d, k, None) != v]
    return drift


def nvidia_smi() -> dict[str, str]:
    info: dict[str, str] = {}
    for key, cmd in {
        "summary": ["nvidia-smi"],
        "query": ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm", "--format=csv"],
    }.items():
        try:
            info[key] = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            info[key] = f"unavailable: {exc}"
    print(info["summary"])
    return info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def sd_unet_cells(args: argparse.Namespace, device: Any, sync: Callable[[], None]) -> list[tuple[dict, Callable]]:
    """The RoentGen-like side beside ours: SD 1.5 UNet (4×32×32, 768-d context) + SD VAE decoder, random
    weights, bf16, the same sampler and guidance, batch per ``--gen-batches``, the first ``--steps``."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from services.diffusion.sampling import sample_latents

    sys.path.insert(0, str(Path(__file__).parent))
    from diffusion_flops import QUICK_UNET_CONFIG, QUICK_VAE_CONFIG, SD15_UNET_CONFIG, SD_VAE_CONFIG

    torch.manual_seed(0)
    dtype = torch.bfloat16
    unet = UNet2DConditionModel(**(QUICK_UNET_CONFIG if args.dry_run else SD15_UNET_CONFIG)).eval()
    vae = AutoencoderKL(**(QUICK_VAE_CONFIG if args.dry_run else SD_VAE_CONFIG)).eval()
    unet, vae = unet.to(device=device, dtype=dtype), vae.to(device=device, dtype=dtype)
    steps = args.steps[0]

    def cell(batch: int) -> Callable[[], dict[str, Any]]:
        def measure() -> dict[str, Any]:
            context = torch.randn(batch, CONTEXT_TOKENS, CONTEXT_DIM, device=device)
            uncond = torch.zeros(CONTEXT_TOKENS, CONTEXT_DIM, device=device)

            def run_once(n: int) -> None:
                with torch.inference_mode():
                    latents = sample_latents(lambda x, t, c, h: unet(x, t, encoder_hidden_states=c).sample, SCHEDULE,
                                             context, uncond, list(range(batch)), (4, 32, 32), n, GUIDANCE,
                                             dtype=dtype)  # fmt: skip
                    vae.decode(latents.to(dtype) / 0.18215)

            run_once(2)  # warm-up
            sync()
            t0 = time.perf_counter()
            run_once(steps)
            sync()
            seconds = time.perf_counter() - t0
            return {"steps": steps, "end_to_end_s": round(seconds, 4),
                    "end_to_end_images_per_s": round(batch / seconds, 2)}  # fmt: skip

        return measure

    return [({"model": "sd15_unet+sd_vae", "batch": b, "precision": "bf16", "guidance": GUIDANCE}, cell(b))
            for b in args.gen_batches]  # fmt: skip


def serve_note() -> dict[str, Any]:
    """The Serve run at concurrency 64 needs ray[serve], pydantic, fastapi and MLflow on the device; the device
    image (2026-11) has torch only and nothing can be installed there (no network; carried files ≤ 64 MiB)."""
    missing = [m for m in ("ray", "pydantic", "fastapi", "mlflow") if importlib.util.find_spec(m) is None]
    if missing:
        return {"measured": False, "reason": f"not importable on this machine: {', '.join(missing)}",
                "instead": "benchmarks/serving_load.py on a GPU host with the project installed"}  # fmt: skip
    return {"measured": False, "reason": "run benchmarks/serving_load.py --levels 1 16 64 on this host"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the script end to end")
    parser.add_argument("--pack-deps", action="store_true", help=f"write {DEPS_ZIP.relative_to(ROOT)} and exit")
    parser.add_argument("--train-batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--gen-batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--train-warmup", type=int, default=3)
    parser.add_argument("--train-timed", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="one JSON path instead of the defaults")
    args = parser.parse_args()
    if args.pack_deps:
        pack_deps()
        return
    stubbed = provide_imports()

    import torch

    fallback = None
    if not args.dry_run and not torch.cuda.is_available():
        fallback = "no CUDA device found: ran as --dry-run"
        print(f"WARNING: {fallback}")
        args.dry_run = True
    if args.dry_run:
        args.train_batches, args.gen_batches, args.steps = [2, 4], [1, 2], [2, 3]
        args.train_warmup, args.train_timed = 1, 1
    device = torch.device("cpu" if args.dry_run else "cuda")
    run(args, device, stubbed, fallback)


def run(args: argparse.Namespace, device: Any, stubbed: bool, fallback: str | None) -> None:
    import torch
    import torch.nn.functional as F
    from diffusers.training_utils import EMAModel

    from diffcxr.autoencoders.taef2 import TAEF2
    from services.diffusion.adapter import AdaptedUViT
    from services.diffusion.sampling import sample_latents
    from services.diffusion.schedulers import training_scheduler
    from services.diffusion.uvit import UViT, UViTConfig

    started = time.time()
    cuda = device.type == "cuda"
    today = dt.date.today().isoformat()
    if args.out:
        targets = [args.out]
    else:
        name = f"gpu_check_dryrun_{today}.json" if args.dry_run else f"gpu_check_{today}.json"
        out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
        targets = [out_dir / name] if out_dir else []
        if not args.dry_run:
            targets.append(Path(__file__).parent / "results" / name)
        elif not targets:
            targets = [Path(tempfile.gettempdir()) / name]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    record: dict[str, Any] = {
        "benchmark": "gpu_check",
        "untested_on_gpu_when_written": True,
        "dry_run": args.dry_run,
        "dry_run_reason": fallback,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpu_model": cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
            "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        },
        "nvidia_smi": nvidia_smi(),
        "config_stubbed_without_pydantic": stubbed,
        "config_drift": None if stubbed else config_drift(),
        "training": [],
        "generation": [],
    }
    if record["config_drift"]:
        print(f"WARNING: constants differ from DiffusionConfig: {record['config_drift']}")

    def save() -> None:
        record["seconds_total"] = round(time.time() - started, 1)
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(record, indent=2) + "\n")

    def guarded(what: dict[str, Any], measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """One measurement; an out-of-memory or other failure is recorded and the run goes on."""
        try:
            what.update(measure())
        except torch.OutOfMemoryError:
            what["error"] = "out of memory"
        except Exception as exc:  # one failed measurement must not lose the others
            traceback.print_exc()
            what["error"] = repr(exc)
        gc.collect()
        if cuda:
            what["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        print(json.dumps(what))
        save()
        return what

    if args.dry_run:
        size = {"embed_dim": 64, "depth": 2, "num_heads": 2, "latent_size": 8}
    else:
        size = {"embed_dim": 512, "depth": 16, "num_heads": 8, "latent_size": 32}
    configs = {
        name: UViTConfig(latent_channels=channels, patch_size=2, context_tokens=CONTEXT_TOKENS, **size)
        for name, channels in (("sd_4ch", 4), ("taef2_32ch", 32))
    }
    record["uvit_configs"] = {k: v.to_dict() for k, v in configs.items()}
    noise_scheduler = training_scheduler(SCHEDULE)

    # --- training steps ---
    for latent, cfg in configs.items():
        for batch in args.train_batches:
            for precision in ("fp32", "bf16"):

                def measure(cfg: UViTConfig = cfg, batch: int = batch, precision: str = precision) -> dict[str, Any]:
                    torch.manual_seed(0)
                    model = UViT(cfg).to(device).train()
                    params = list(model.parameters())
                    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY, betas=BETAS)
                    ema = EMAModel(params, decay=EMA_DECAY)
                    latents = torch.randn(batch, *cfg.latent_shape, device=device)
                    context = torch.randn(batch, CONTEXT_TOKENS, CONTEXT_DIM, device=device)

                    def step() -> None:
                        noise = torch.randn_like(latents)
                        t = torch.randint(0, SCHEDULE["num_train_timesteps"], (batch,), device=device)
                        noisy = noise_scheduler.add_noise(latents, noise, t)
                        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                            pred = model(noisy, t, context)
                        loss = F.mse_loss(pred.float(), noise_scheduler.get_velocity(latents, noise, t))
                        if not torch.isfinite(loss):  # the trainer's check (a host sync per step)
                            raise FloatingPointError(f"non-finite loss {float(loss)}")
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
                        optimizer.step()
                        ema.step(params)

                    for _ in range(args.train_warmup):
                        step()
                    sync()
                    t0 = time.perf_counter()
                    for _ in range(args.train_timed):
                        step()
                    sync()
                    seconds = (time.perf_counter() - t0) / args.train_timed
                    return {"step_s": round(seconds, 5), "samples_per_s": round(batch / seconds, 1)}

                what = {"latent": latent, "batch": batch, "precision": precision, "timed_steps": args.train_timed}
                record["training"].append(guarded(what, measure))

    # --- generation ---
    taef2_weights = "pretrained"
    try:
        taef2 = TAEF2.from_dir()
    except Exception:  # ../shared/weights does not travel to the device: random init, same cost
        taef2, taef2_weights = TAEF2().eval(), "random init"
    record["taef2_weights"] = taef2_weights
    for latent, cfg in configs.items():
        for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            torch.manual_seed(0)
            model = AdaptedUViT(UViT(cfg)).eval().to(device=device, dtype=dtype)
            decoder = taef2.to(device=device, dtype=dtype) if latent == "taef2_32ch" else None
            for batch in args.gen_batches:

                def measure(
                    cfg: UViTConfig = cfg,
                    batch: int = batch,
                    dtype: torch.dtype = dtype,
                    model: torch.nn.Module = model,
                    decoder: torch.nn.Module | None = decoder,
                ) -> dict[str, Any]:
                    g = torch.Generator().manual_seed(batch)
                    context = torch.randn(batch, CONTEXT_TOKENS, CONTEXT_DIM, generator=g).to(device)
                    hint = torch.randn(batch, CONTEXT_TOKENS, CONTEXT_DIM, generator=g).to(device)
                    uncond = torch.zeros(CONTEXT_TOKENS, CONTEXT_DIM, device=device)

                    def sample(steps: int) -> torch.Tensor:
                        return sample_latents(
                            lambda x, t, c, h: model(x, t, c, h),
                            SCHEDULE,
                            context,
                            uncond,
                            list(range(batch)),
                            cfg.latent_shape,
                            steps,
                            GUIDANCE,
                            hint=hint,
                            dtype=dtype,
                        )

                    with torch.inference_mode():
                        latents = sample(3)  # warm-up (kernels, allocator)
                        out: dict[str, Any] = {}
                        for steps in args.steps:
                            sync()
                            t0 = time.perf_counter()
                            latents = sample(steps)
                            sync()
                            seconds = time.perf_counter() - t0
                            out[f"steps_{steps}"] = {
                                "denoise_s": round(seconds, 4),
                                "step_s": round(seconds / steps, 5),
                                "denoise_images_per_s": round(batch / seconds, 2),
                            }
                        if decoder is not None:
                            decoder.decode(latents.to(dtype))  # warm-up
                            sync()
                            t0 = time.perf_counter()
                            for _ in range(3):
                                decoder.decode(latents.to(dtype))
                            sync()
                            decode = (time.perf_counter() - t0) / 3
                            out["decode_s"] = round(decode, 4)
                            for steps in args.steps:
                                e2e = out[f"steps_{steps}"]["denoise_s"] + decode
                                out[f"steps_{steps}"]["end_to_end_images_per_s"] = round(batch / e2e, 2)
                    return out

                what = {"latent": latent, "batch": batch, "precision": precision, "guidance": GUIDANCE}
                record["generation"].append(guarded(what, measure))
            del model
    record["sd_unet_generation"] = [guarded(w, m) for w, m in sd_unet_cells(args, device, sync)]
    record["serve"] = serve_note()
    save()
    print(f"done in {time.time() - started:.0f} s; wrote {', '.join(str(t) for t in targets)}")


if __name__ == "__main__":
    main()
