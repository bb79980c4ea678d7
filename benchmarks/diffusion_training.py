"""Benchmark: what each training choice buys on this CPU — speed (samples/s) and convergence.

Run by hand: ``.venv/bin/python benchmarks/diffusion_training.py`` (about 15 minutes on 2 cores).

The task is the separable condition of :mod:`services.diffusion.separable` (64 px phantoms with and
without severe cardiomegaly, real TAEF2 latents, tiny-profile U-ViT). Each *convergence* variant trains
the same network from the same init and data order for ``--steps`` steps with the project's objective
(:func:`services.diffusion.objective.denoising_loss`), diffusers' ``DDPMScheduler`` and ``EMAModel``, then
samples with the production sampler and reports: loss at fixed steps (comparable only within one
objective), the sample latents' std against the data's, the unconditional mean image's distance to the
data's (relative to the data's own spread: < 1 draws a chest) and the judge's AUC on conditioned samples.
*Speed* variants (bf16 autocast, batch size, ``torch.compile``) time training steps of the default.

Writes ``benchmarks/results/diffusion_training_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers.training_utils import EMAModel  # noqa: E402
from diffusion_flops import machine_info  # noqa: E402

from diffcxr.autoencoders.frozen import load_autoencoder  # noqa: E402
from diffcxr.config import AutoencoderConfig  # noqa: E402
from services.diffusion.latents import LatentStats  # noqa: E402
from services.diffusion.objective import denoising_loss  # noqa: E402
from services.diffusion.sampling import sample_latents  # noqa: E402
from services.diffusion.schedulers import training_scheduler  # noqa: E402
from services.diffusion.separable import Judge, class_contexts, mean_image_error, phantoms  # noqa: E402
from services.diffusion.uvit import UViT, UViTConfig  # noqa: E402

K, D = 4, 16
SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
#: name → (prediction type, standardised latents, min-SNR γ[, learning rate]); the last row is the default at
#: the paper's learning rate
CONVERGENCE = {
    "paper: epsilon, raw latents": ("epsilon", False, 0.0),
    "epsilon + standardised latents": ("epsilon", True, 0.0),
    "v-prediction + standardised latents": ("v_prediction", True, 0.0),
    "v + standardised + min-SNR-5 (default)": ("v_prediction", True, 5.0),
    "default at lr 2e-4 (the paper's)": ("v_prediction", True, 5.0, 2e-4),
}


def fit(latents: torch.Tensor, labels: np.ndarray, contexts: torch.Tensor, net: UViTConfig, steps: int, lr: float,
        batch: int, prediction: str, normalize: bool, gamma: float, autocast: bool = False, compile_: bool = False,
        log_at: tuple[int, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """Train one variant; returns the model, its stats and the timing/loss record."""
    stats = LatentStats.of(latents.numpy()) if normalize else LatentStats.identity(latents.shape[1])
    data = stats.normalize(latents)
    scheduler = training_scheduler({**SCHEDULE, "prediction_type": prediction})
    torch.manual_seed(0)
    model = UViT(net)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.03, betas=(0.9, 0.9))
    ema = EMAModel(params, decay=0.99)
    step_fn = torch.compile(model) if compile_ else model
    gen = torch.Generator().manual_seed(0)
    uncond = torch.zeros(K, D)
    losses, times = {}, []
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(data), (batch,), generator=gen)
        ctx = contexts[torch.from_numpy(labels)[idx]]
        blank = torch.rand(batch, generator=gen) < 0.1
        ctx = torch.where(blank[:, None, None], uncond.expand_as(ctx), ctx)
        noise = torch.randn(data[idx].shape, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = denoising_loss(step_fn, scheduler, data[idx], noise, t, ctx, min_snr_gamma=gamma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.step(params)
        times.append(time.perf_counter() - started)
        if step in log_at:
            losses[step] = round(float(loss.detach()), 4)
    ema.copy_to(params)
    warm = times[min(10, len(times) // 2):]
    return {"model": model.eval(), "stats": stats, "losses": losses,
            "samples_per_second": round(batch / statistics.median(warm), 1)}  # fmt: skip


def judge_variant(run: dict[str, Any], prediction: str, ae: Any, judge: Judge, real: np.ndarray,
                  contexts: torch.Tensor, shape: tuple[int, ...], data_std: float) -> dict[str, Any]:  # fmt: skip
    model, stats = run["model"], run["stats"]
    schedule = {**SCHEDULE, "prediction_type": prediction}

    def denoiser(x, t, c, h):  # noqa: ANN001, ANN202
        return model(x, t, c)

    wanted = np.arange(64) % 2
    uncond = torch.zeros(K, D)
    with torch.no_grad():
        drawn = stats.denormalize(sample_latents(denoiser, schedule, contexts[wanted], uncond, list(range(64)),
                                                 shape, 20, 3.0))  # fmt: skip
        free = stats.denormalize(sample_latents(denoiser, schedule, uncond.expand(32, K, D).clone(), uncond,
                                                list(range(100, 132)), shape, 20, 1.0))  # fmt: skip
        generated = ae.decode(drawn).mean(1).clamp(0, 1).numpy()
        unconditional = ae.decode(free).mean(1).clamp(0, 1).numpy()
    error, spread = mean_image_error(unconditional, real)
    return {
        "sample_latent_std_over_data": round(float(drawn.std()) / data_std, 3),
        "unconditional_mean_image_error_over_spread": round(error / spread, 3),
        "judge_auc": round(judge.auc(generated, wanted), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--speed-steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", nargs="+", choices=["convergence", "speed"], default=["convergence", "speed"],
                        help="convergence results do not depend on machine load; run speed on an idle machine")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    images, labels = phantoms(10_000, args.images)
    ae = load_autoencoder(AutoencoderConfig(kind="taef2"))
    with torch.no_grad():
        x = torch.from_numpy(images).float().div(255).unsqueeze(1).repeat(1, 3, 1, 1)
        latents = torch.cat([ae.encode(x[i : i + 64]) for i in range(0, len(x), 64)])
    contexts = torch.from_numpy(class_contexts(K, D))
    net = UViTConfig(latent_channels=32, latent_size=8, patch_size=1, embed_dim=128, depth=4, num_heads=4,
                     context_tokens=K, context_dim=D)  # fmt: skip
    judge = Judge(64)
    real = images / 255.0
    shape = tuple(latents.shape[1:])
    log_at = tuple(s for s in (100, 300, args.steps) if s <= args.steps)
    results: dict[str, Any] = {"convergence": {}, "speed": {}}
    for name, (prediction, normalize, gamma, *lr) in CONVERGENCE.items() if "convergence" in args.parts else ():
        lr = lr[0] if lr else args.lr
        run = fit(latents, labels, contexts, net, args.steps, lr, args.batch, prediction, normalize, gamma,
                  log_at=log_at)  # fmt: skip
        row = {"prediction_type": prediction, "standardised_latents": normalize, "min_snr_gamma": gamma, "lr": lr,
               "loss_at_step": run["losses"], "samples_per_second": run["samples_per_second"],
               **judge_variant(run, prediction, ae, judge, real, contexts, shape, float(latents.std()))}  # fmt: skip
        results["convergence"][name] = row
        print(name, json.dumps(row), flush=True)
    speed = {
        "fp32, batch 32": {"batch": 32},
        "bf16 autocast, batch 32": {"batch": 32, "autocast": True},
        "fp32, batch 64": {"batch": 64},
        "bf16 autocast, batch 64": {"batch": 64, "autocast": True},
        "torch.compile, fp32, batch 32": {"batch": 32, "compile_": True},
    }
    for name, options in speed.items() if "speed" in args.parts else ():
        try:
            run = fit(latents, labels, contexts, net, args.speed_steps, args.lr, prediction="v_prediction",
                      normalize=True, gamma=5.0, log_at=(args.speed_steps,), **options)  # fmt: skip
            results["speed"][name] = {"samples_per_second": run["samples_per_second"],
                                      f"loss_at_step_{args.speed_steps}": run["losses"].get(args.speed_steps)}
        except Exception as exc:  # noqa: BLE001 - a variant that cannot run here is a result too
            results["speed"][name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print(name, json.dumps(results["speed"][name]), flush=True)
    today = dt.date.today().isoformat()
    record = {
        "benchmark": "diffusion_training",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_1_5_15": {"start": list(load_start), "end": list(os.getloadavg())},
        "command": "python benchmarks/diffusion_training.py " + " ".join(sys.argv[1:]),
        "task": f"{args.images} phantoms 64 px (half severe cardiomegaly), TAEF2 latents 32x8x8, U-ViT embed 128 "
        f"depth 4 patch 1, {args.steps} steps at batch {args.batch}, lr {args.lr}, EMA 0.99; 20 DPM-Solver++ steps, "
        "guidance 3; judge: logistic regression on pooled pixels of 128 other phantoms",
        **results,
    }
    suffix = "" if len(args.parts) == 2 else f"_{args.parts[0]}"
    out = args.out or Path(__file__).parent / "results" / f"diffusion_training{suffix}_{today}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
