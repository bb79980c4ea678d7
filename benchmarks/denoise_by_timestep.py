"""Benchmark: where along the noise schedule is a run's denoiser good, and where is it worse than a formula?

Run by hand after a pipeline run, e.g. ``.venv/bin/python benchmarks/denoise_by_timestep.py -p small --run
var/runs/small-J`` (about a minute on 2 cores).

Why: on small, fewer sampler steps score better on both mAUC and domain FID (sampler_steps_small_val_*.json),
which a correct, converged model does not do: more steps only spend more evaluations at low noise. This
measures the model's one-step clean-latent estimate x0_hat(x_t, t, report) on held-out (val) latents at
several timesteps, against the best *linear* estimate that knows nothing about chests (for standardised
latents, x0 ~ sqrt(abar) x_t, error 1 - abar per element). A model that is worse than that formula at some
t makes every sampler step taken there a step away from the data. It also samples the same reports at
``--sample-steps`` and compares the sampled latents' spread and fine detail with the real ones.

Writes ``benchmarks/results/denoise_by_timestep_<profile>_<date>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusion_flops import record_header, write_result  # noqa: E402
from seed_control import eval_rows, open_run, run_arguments  # noqa: E402

from diffcxr.contracts.latents import read_latents  # noqa: E402
from services.diffusion.generator import Generator  # noqa: E402
from services.diffusion.schedulers import training_scheduler  # noqa: E402

TIMESTEPS = [5, 20, 50, 100, 200, 400, 600, 800, 950]


def latent_shape_stats(z: torch.Tensor) -> dict[str, float]:
    """Standardised latents' overall std, per-image deviation from the set's mean latent (what is not the
    shared chest) and neighbour-difference energy (fine detail): real vs sampled at several step counts."""
    fine = (z[..., 1:, :] - z[..., :-1, :]).pow(2).mean() + (z[..., :, 1:] - z[..., :, :-1]).pow(2).mean()
    return {
        "std": round(float(z.std()), 4),
        "per_image_deviation_std": round(float((z - z.mean(0)).std()), 4),
        "fine_detail_energy": round(float(fine), 4),
    }


@torch.no_grad()
def main() -> None:
    parser = run_arguments(__doc__.splitlines()[0], "small")
    parser.add_argument("--split", choices=["val", "test"], default="val")
    parser.add_argument("--timesteps", type=int, nargs="+", default=TIMESTEPS)
    parser.add_argument("--sample-steps", type=int, nargs="+", default=[3, 5, 20, 50],
                        help="also sample the same reports at these step counts (latent statistics)")  # fmt: skip
    args = parser.parse_args()
    cfg, run = open_run(args)
    generator = Generator(run / "diffusion" / "generator")
    part = generator.denoiser
    rows = eval_rows(cfg, run, args.split)
    ids, latents, _, _ = read_latents(str(run / "filter" / "latents"), part.latent_shape)
    index = {sid: i for i, sid in enumerate(ids)}
    rows = [r for r in rows if r["sample_id"] in index]
    x0 = part.latent_stats.normalize(torch.as_tensor(latents[[index[r["sample_id"]] for r in rows]]))
    texts = generator.text.run([r.get("report_text") or "" for r in rows])
    context = torch.as_tensor(np.stack([t.context for t in texts]))
    hint = torch.as_tensor(np.stack([t.hint for t in texts])) if part.has_adapter else None
    scheduler = training_scheduler(part.spec["schedule"])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    by_t = {}
    for t in sorted(args.timesteps):
        steps = torch.full((len(x0),), t, dtype=torch.long)
        abar = float(scheduler.alphas_cumprod[t])
        x_t = scheduler.add_noise(x0, noise, steps)
        outs = []
        for s in range(0, len(x0), 32):
            sl = slice(s, s + 32)
            args_ = (x_t[sl], steps[sl], context[sl]) + ((hint[sl],) if hint is not None else ())
            outs.append(part.model(*args_).float())
        out = torch.cat(outs)
        if part.spec["schedule"]["prediction_type"] == "v_prediction":
            x0_hat = abar**0.5 * x_t - (1 - abar) ** 0.5 * out
        else:
            x0_hat = (x_t - (1 - abar) ** 0.5 * out) / abar**0.5
        model_mse = float(((x0_hat - x0) ** 2).mean())
        linear_mse = float(((abar**0.5 * x_t - x0) ** 2).mean())
        by_t[str(t)] = {
            "alpha_bar": round(abar, 5),
            "snr": round(abar / (1 - abar), 3),
            "model_x0_mse": round(model_mse, 5),
            "linear_x0_mse": round(linear_mse, 5),
            "model_over_linear": round(model_mse / linear_mse, 3),
        }
        print(t, json.dumps(by_t[str(t)]), flush=True)
    shapes = {"real": latent_shape_stats(x0)}
    guidance = generator.sampling.guidance if cfg.eval.guidance is None else cfg.eval.guidance
    seeds = list(range(len(rows)))
    for n in args.sample_steps:
        sampled = part.sample(context.numpy(), hint.numpy() if hint is not None else None,
                              generator.text.uncond.numpy(), seeds, n, guidance)  # fmt: skip
        shapes[f"{n} steps"] = latent_shape_stats(part.latent_stats.normalize(torch.as_tensor(sampled)))
        print(f"{n} steps:", json.dumps(shapes[f"{n} steps"]), "real:", json.dumps(shapes["real"]), flush=True)
    record = {
        **record_header(
            "denoise_by_timestep",
            "python benchmarks/denoise_by_timestep.py " + " ".join(sys.argv[1:]),
            profile=args.profile,
        ),  # fmt: skip
        "run": str(run),
        "split": args.split,
        "latents": len(x0),
        "adapter": part.has_adapter,
        "reading": "model_over_linear > 1: the model's clean-latent estimate is worse than sqrt(abar) * x_t there",
        "by_timestep": by_t,
        "sampled_latents": {"guidance": guidance, "by_steps": shapes},
    }
    out = write_result(record, args.out, f"denoise_by_timestep_{args.profile}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
