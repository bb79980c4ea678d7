"""Benchmark: does the U-ViT use its condition? Trained on a finished run's own training set.

Run by hand after ``bash infra/run_local.sh`` (tiny): ``.venv/bin/python benchmarks/condition_use.py``
(about 4 minutes per variant on 2 cores).

Each variant trains the run's U-ViT size from the same init and batch order on exactly the rows the
diffusion stage trains on (the filter's latents, standardised; the text stage's contexts), outside Ray so
that only the network differs, then measures:

- *sensitivity*: rms(output(condition) − output(unconditional context)) / rms(output) at t = 500 on 64
  random latents. A model that ignores its condition scores ≈ 0 and classifier-free guidance has nothing
  to amplify;
- generated mAUC with the run's eval classifier on train-split reports (in-sample: can it follow the
  reports it was trained on?) and on val+test reports (held out from the denoiser), guidance 1 and 3,
  10 DPM-Solver++ steps, seeds 0..N-1, decoded by the run's autoencoder.

Variants: condition = the report's context or its disease sentence's ("There is …", the adapter's hint);
``+pool`` = ``diffusion.pooled_context`` (the projected mean context added to every patch token).

Writes ``benchmarks/results/condition_use_<date>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
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
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from diffusers.training_utils import EMAModel  # noqa: E402
from diffusion_flops import record_header  # noqa: E402

from diffcxr.config import load_config  # noqa: E402
from diffcxr.contracts.embeddings import read_embeddings, sentence_id  # noqa: E402
from diffcxr.contracts.outputs import to_uint8  # noqa: E402
from diffcxr.labeling.sentences import NO_FINDING_SENTENCE  # noqa: E402
from services.diffusion.data import build_training_set, decode_batch  # noqa: E402
from services.diffusion.objective import denoising_loss  # noqa: E402
from services.diffusion.parts import DecoderPart  # noqa: E402
from services.diffusion.sampling import sample_latents  # noqa: E402
from services.diffusion.schedulers import schedule_of, training_scheduler  # noqa: E402
from services.diffusion.uvit import UViT, uvit_config  # noqa: E402
from services.eval.classifier import OwnDenseNet  # noqa: E402
from services.eval.labels import LabelPolicy, label_matrix, per_disease_auc  # noqa: E402

VARIANTS = ("report", "report+pool", "sentence", "sentence+pool")


@dataclasses.dataclass
class RunData:
    """What a finished run left that a denoiser benchmark trains and scores on: the kept manifest rows, the
    text stage's embeddings, the diffusion stage's training set (decoded, latents standardised), the
    generator's decoder and the eval stage's classifier."""

    rows: list[dict[str, Any]]
    emb: Any
    data: Any
    batch: dict[str, Any]
    latents: torch.Tensor
    uncond: torch.Tensor
    index: dict[str, int]
    blank: str
    decoder: DecoderPart
    classifier: OwnDenseNet
    policy: LabelPolicy

    @classmethod
    def load(cls, run: Path, cfg: Any) -> RunData:
        rows = [r for r in pq.read_table(run / "filter" / "manifest.parquet").to_pylist() if r["status"] == "kept"]
        emb = read_embeddings(str(run / "text" / "embeddings"))
        train_rows = [r for r in rows if r["split"] == "train" and r["image_uri"]]
        data = build_training_set(train_rows, str(run / "filter" / "latents"), emb, cfg.latent_shape)
        table = data.table.to_pydict()
        batch = decode_batch({**table, "sentence": np.asarray(table["sentence"])}, data.payload())
        return cls(
            rows=rows,
            emb=emb,
            data=data,
            batch=batch,
            latents=data.latent_stats.normalize(batch["latent"]),
            uncond=torch.from_numpy(data.unconditional).float(),
            index=emb.index(),
            blank=sentence_id(NO_FINDING_SENTENCE),
            decoder=DecoderPart(run / "diffusion" / "generator"),
            classifier=OwnDenseNet.load(run / "eval" / "classifier"),
            policy=LabelPolicy.from_config(cfg.eval),
        )


def optimizer_step(loss: torch.Tensor, optimizer: Any, params: list, ema: Any, grad_clip: float) -> None:
    """One step as the diffusion stage takes it: backward, clip the gradient norm, AdamW, then the EMA."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    ema.step(params)


def sensitivity(model: UViT, contexts: torch.Tensor, uncond: torch.Tensor, shape: tuple[int, ...]) -> float:
    """rms(cond − uncond) / rms(cond) of the prediction at t = 500."""
    x = torch.randn(len(contexts), *shape, generator=torch.Generator().manual_seed(3))
    t = torch.full((len(contexts),), 500)
    with torch.no_grad():
        cond, unc = model(x, t, contexts), model(x, t, uncond.expand_as(contexts))
    return float((cond - unc).pow(2).mean().sqrt() / cond.pow(2).mean().sqrt())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="var/runs/tiny", help="a finished run root (data, filter, text, eval)")
    parser.add_argument("-p", "--profile", default="tiny")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=None, help="default: the profile's diffusion.lr")
    parser.add_argument("--reports", type=int, default=128, help="reports per evaluated set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.profile)
    lr = args.lr or cfg.diffusion.lr
    run = Path(args.run)
    loaded = RunData.load(run, cfg)
    rows, emb, data, batch, latents, uncond = (loaded.rows, loaded.emb, loaded.data, loaded.batch, loaded.latents,
                                               loaded.uncond)  # fmt: skip
    index, blank, decoder, classifier, policy = (loaded.index, loaded.blank, loaded.decoder, loaded.classifier,
                                                 loaded.policy)  # fmt: skip
    frontal = [r for r in rows if r["view"] in ("PA", "AP") and r["sample_id"] in index]
    sets = {
        "in_sample": [r for r in frontal if r["split"] == "train"][: args.reports],
        "held_out": [r for r in frontal if r["split"] in ("val", "test")][: args.reports],
    }
    schedule = schedule_of(cfg.diffusion)
    results: dict[str, Any] = {}
    for variant in args.variants:
        by_sentence = variant.startswith("sentence")

        def condition(rs: list[dict[str, Any]], by_sentence: bool = by_sentence) -> torch.Tensor:
            if by_sentence:
                picked = [emb.sentences[emb.sentence_of.get(r["sample_id"], blank)] for r in rs]
            else:
                picked = [emb.contexts[index[r["sample_id"]]] for r in rs]
            return torch.from_numpy(np.stack(picked).astype(np.float32))

        contexts = batch["hint"] if by_sentence else batch["context"]
        net = dataclasses.replace(uvit_config(cfg, data.context_shape), pooled_context=variant.endswith("+pool"))
        torch.manual_seed(0)
        model = UViT(net)
        params = list(model.parameters())
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.diffusion.weight_decay,
                                      betas=tuple(cfg.diffusion.betas))  # fmt: skip
        ema = EMAModel(params, decay=cfg.diffusion.ema_decay)
        scheduler = training_scheduler(schedule)
        gen = torch.Generator().manual_seed(0)
        started, size = time.perf_counter(), cfg.diffusion.batch_size
        for step in range(args.steps):
            for group in optimizer.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / max(cfg.diffusion.warmup_steps, 1))
            pick = torch.randint(0, len(latents), (size,), generator=gen)
            noise = torch.randn((size, *latents.shape[1:]), generator=gen)
            t = torch.randint(0, schedule["num_train_timesteps"], (size,), generator=gen)
            drop = torch.rand(size, generator=gen) < cfg.diffusion.p_uncond
            c = torch.where(drop[:, None, None], uncond.expand_as(contexts[pick]), contexts[pick])
            loss = denoising_loss(model, scheduler, latents[pick], noise, t, c,
                                  min_snr_gamma=cfg.diffusion.min_snr_gamma)  # fmt: skip
            optimizer_step(loss, optimizer, params, ema, cfg.diffusion.grad_clip)
        train_seconds = time.perf_counter() - started
        ema.copy_to(params)
        model.eval()
        row: dict[str, Any] = {
            "train_seconds": round(train_seconds, 1),
            "sensitivity": round(sensitivity(model, condition(sets["held_out"][:64]), uncond, cfg.latent_shape), 4),
        }
        for name, rs in sets.items():
            targets = label_matrix(rs, policy)
            for guidance in (1.0, 3.0):
                with torch.no_grad():
                    lat = sample_latents(lambda x, t, c, h, m=model: m(x, t, c), schedule, condition(rs), uncond,
                                         list(range(len(rs))), cfg.latent_shape, 10, guidance)  # fmt: skip
                images = to_uint8(decoder.decode(data.latent_stats.denormalize(lat).numpy()))
                auc = per_disease_auc(targets, classifier.predict(images))
                row[f"{name}_guidance_{guidance:g}"] = {
                    "mAUC": round(auc["mAUC"], 4),
                    "per_disease": {d: [v["n_pos"], round(v["auc"], 3)] for d, v in auc["per_disease"].items()
                                    if v["auc"] is not None},  # fmt: skip
                }
        results[variant] = row
        print(variant, json.dumps(row), flush=True)
    record = {
        **record_header("condition_use", "python benchmarks/condition_use.py " + " ".join(sys.argv[1:])),
        "task": f"run {run}: {len(latents)} training rows, U-ViT of profile {args.profile}, {args.steps} steps, "
        f"lr {lr}, batch {cfg.diffusion.batch_size}; sets of {args.reports} frontal reports",
        "sets": {name: len(rs) for name, rs in sets.items()},
        "variants": results,
    }
    out = args.out or Path(__file__).parent / "results" / f"condition_use_{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
