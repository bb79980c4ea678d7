"""Benchmark: does the disease-knowledge adapter learn to use its hint? Trained on a finished run's own data.

Run by hand after a pipeline run: ``.venv/bin/python benchmarks/adapter_use.py --run var/runs/tiny``.

The diffusion stage trains the adapter on the frozen U-ViT with the disease sentence ("There is …") as
hint. In tiny its loss stays flat over its 150 steps (0.1433 → 0.1428 on a 2,000-report run), so this
benchmark trains the adapter of the run's own trained U-ViT outside Ray (same rows, batch, objective,
blanking and EMA as the stage; only the adapter differs) and measures, every ``--eval-every`` steps:

- *hint sensitivity*: rms(output(hint) − output(blank hint)) / rms(output) at t = 500 on 64 held-out
  contexts: ≈ 0 means the adapter ignores the disease sentence;
- generated mAUC of held-out (val + test) frontal reports with the run's eval classifier, guidance 3,
  10 DPM-Solver++ steps, seeds 0..N-1, beside the frozen U-ViT alone on the same seeds.

Variants: ``zero-hint`` is the adapter as built (ControlNet's zero-initialised input *and* output layers: the
hint reaches the copy through a zero layer whose gradient is itself gated by the zero output layers);
``open-hint`` re-initialises the hint's input layers like every other Linear (ViT trunc-normal), keeping the
zero output layers, so the adapted model still equals the frozen one at step 0. ``--finding-weight W``
draws training rows whose report has a finding W times as often as normal ones (balanced sampling);
``--splits val`` scores validation reports only, for choices that must not be tuned on the test split.

Writes ``benchmarks/results/adapter_use_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from condition_use import RunData, optimizer_step  # noqa: E402
from diffusers.training_utils import EMAModel  # noqa: E402
from diffusion_flops import record_header  # noqa: E402

from diffcxr.config import load_config  # noqa: E402
from diffcxr.contracts.outputs import to_uint8  # noqa: E402
from services.diffusion.adapter import AdaptedUViT  # noqa: E402
from services.diffusion.objective import denoising_loss  # noqa: E402
from services.diffusion.sampling import sample_latents  # noqa: E402
from services.diffusion.schedulers import schedule_of, training_scheduler  # noqa: E402
from services.diffusion.uvit import init_weights  # noqa: E402
from services.diffusion.weights import load_uvit  # noqa: E402
from services.eval.labels import label_matrix, per_disease_auc  # noqa: E402

VARIANTS = ("zero-hint", "open-hint")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="var/runs/tiny", help="a finished run root (data … eval)")
    parser.add_argument("-p", "--profile", default="tiny")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="the run's overrides")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--lr", type=float, nargs="+", default=None, help="default: the profile's adapter.lr")
    parser.add_argument("--finding-weight", type=float, nargs="+", default=[1.0],
                        help="sampling weight of training rows whose report has a finding (normals: 1)")
    parser.add_argument("--splits", nargs="+", default=["val", "test"], help="held-out splits scored")
    parser.add_argument("--reports", type=int, default=200, help="held-out reports scored")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.profile, args.overrides)
    run = Path(args.run)
    loaded = RunData.load(run, cfg)
    rows, emb, data, batch, latents, uncond = (loaded.rows, loaded.emb, loaded.data, loaded.batch, loaded.latents,
                                               loaded.uncond)  # fmt: skip
    index, blank, decoder, classifier = loaded.index, loaded.blank, loaded.decoder, loaded.classifier
    held = [r for r in rows if r["view"] in ("PA", "AP") and r["sample_id"] in index and r["split"] in args.splits]
    held = held[: args.reports]
    targets = label_matrix(held, loaded.policy)
    ctx = torch.from_numpy(np.stack([emb.contexts[index[r["sample_id"]]] for r in held]).astype(np.float32))
    hints = torch.from_numpy(
        np.stack([emb.sentences[emb.sentence_of.get(r["sample_id"], blank)] for r in held]).astype(np.float32)
    )
    schedule = schedule_of(cfg.diffusion)
    seeds = list(range(len(held)))

    def score(denoiser: Any, with_hint: bool) -> dict[str, Any]:
        with torch.no_grad():
            lat = sample_latents(denoiser, schedule, ctx, uncond, seeds, cfg.latent_shape, 10, args.guidance,
                                 hint=hints if with_hint else None)  # fmt: skip
        images = to_uint8(decoder.decode(data.latent_stats.denormalize(lat).numpy()))
        auc = per_disease_auc(targets, classifier.predict(images))
        per = {d: [v["n_pos"], round(v["auc"], 3)] for d, v in auc["per_disease"].items() if v["auc"] is not None}
        return {"mAUC": round(auc["mAUC"], 4), "per_disease": per}

    uvit, _ = load_uvit(run / "diffusion" / "uvit")
    uvit.eval()
    results: dict[str, Any] = {"uvit_alone": score(lambda x, t, c, h: uvit(x, t, c), with_hint=False)}
    print("uvit_alone", json.dumps(results["uvit_alone"]), flush=True)
    has_finding = torch.tensor([data.sentence_ids[i] != blank for i in data.table.column("sentence").to_pylist()])
    runs = [(lr, v, w) for lr in args.lr or [cfg.adapter.lr] for v in args.variants for w in args.finding_weight]
    for lr, variant, weight in runs:
        torch.manual_seed(0)
        model = AdaptedUViT(uvit)
        if variant == "open-hint":
            init_weights(model.adapter.hint_embed)
            if model.adapter.hint_pooled is not None:
                init_weights(model.adapter.hint_pooled)
        params = list(model.adapter.parameters())
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.diffusion.weight_decay,
                                      betas=tuple(cfg.diffusion.betas))  # fmt: skip
        ema = EMAModel(params, decay=cfg.diffusion.ema_decay)
        scheduler = training_scheduler(schedule)
        gen = torch.Generator().manual_seed(0)
        size, losses, row = cfg.adapter.batch_size, [], {}
        started = time.perf_counter()
        model.train()
        for step in range(1, args.steps + 1):
            for group in optimizer.param_groups:
                group["lr"] = lr * min(1.0, step / max(cfg.adapter.warmup_steps, 1))
            if weight == 1.0:  # uniform draws keep earlier results' random stream
                pick = torch.randint(0, len(latents), (size,), generator=gen)
            else:
                pick = torch.multinomial(1.0 + (weight - 1.0) * has_finding.float(), size, True, generator=gen)
            noise = torch.randn((size, *latents.shape[1:]), generator=gen)
            t = torch.randint(0, schedule["num_train_timesteps"], (size,), generator=gen)
            drop = (torch.rand(size, generator=gen) < cfg.adapter.p_uncond)[:, None, None]
            c = torch.where(drop, uncond.expand_as(batch["context"][pick]), batch["context"][pick])
            h = torch.where(drop, uncond.expand_as(batch["hint"][pick]), batch["hint"][pick])
            loss = denoising_loss(model, scheduler, latents[pick], noise, t, c, h,
                                  min_snr_gamma=cfg.diffusion.min_snr_gamma)  # fmt: skip
            optimizer_step(loss, optimizer, params, ema, cfg.diffusion.grad_clip)
            losses.append(float(loss.detach()))
            if step % args.eval_every == 0 or step == args.steps:
                seconds = time.perf_counter() - started
                ema.store(params)
                ema.copy_to(params)
                model.eval()
                row[step] = {
                    "train_seconds": round(seconds, 1),
                    "loss_first_20": round(float(np.mean(losses[:20])), 4),
                    "loss_last_50": round(float(np.mean(losses[-50:])), 4),
                    "hint_sensitivity": round(hint_sensitivity(model, ctx[:64], hints[:64], uncond), 4),
                    **score(model, with_hint=True),
                }
                ema.restore(params)
                model.train()
                started = time.perf_counter() - seconds
                print(variant, lr, weight, step, json.dumps({k: v for k, v in row[step].items() if k != "per_disease"}),
                      flush=True)  # fmt: skip
        key = f"{variant}@lr{lr:g}" + (f"@finding_weight{weight:g}" if weight != 1.0 else "")
        results[key] = row
    record = {
        **record_header("adapter_use", "python benchmarks/adapter_use.py " + " ".join(sys.argv[1:])),
        "task": f"run {run}: adapter on its trained U-ViT, {len(latents)} training rows, batch "
        f"{cfg.adapter.batch_size}, {args.steps} steps; {len(held)} held-out frontal reports, guidance "
        f"{args.guidance:g}, 10 steps, seeds 0..{len(held) - 1} (splits {'+'.join(args.splits)}); "
        f"training rows with a finding: {int(has_finding.sum())} of {len(has_finding)}",
        "results": results,
    }
    out = args.out or Path(__file__).parent / "results" / f"adapter_use_{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


def hint_sensitivity(model: AdaptedUViT, ctx: torch.Tensor, hints: torch.Tensor, uncond: torch.Tensor) -> float:
    """rms(output(hint) − output(blank hint)) / rms(output(hint)) at t = 500."""
    x = torch.randn(len(ctx), *model.config.latent_shape, generator=torch.Generator().manual_seed(3))
    t = torch.full((len(ctx),), 500)
    with torch.no_grad():
        cond, unc = model(x, t, ctx, hints), model(x, t, ctx, uncond.expand_as(hints))
    return float((cond - unc).pow(2).mean().sqrt() / cond.pow(2).mean().sqrt())


if __name__ == "__main__":
    main()
