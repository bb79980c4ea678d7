"""Benchmark: does a trained generator follow its report? Per-disease AUC of generated phantoms.

Run by hand, e.g. ``.venv/bin/python benchmarks/diffusion_alignment.py -p small --set data.max_reports=1500``.

Why: FID says nothing about whether "large right pleural effusion" produces an
effusion. The phantom benchmark knows the truth, so alignment is measured the
paper's way (a classifier scores generated images; AUC against the report's
labels, mean over the 11 diseases = mAUC) with a *phantom oracle*: the
``SmallCNN`` of ``services.data.phantom.learnability`` trained on freshly
rendered phantoms with random findings (AUC ≥ 0.95 on real phantoms). The eval
service (issue #9) will own the classifier; until then this is the measure.

Steps: run (or reuse: they skip when current) the data, filter, text and
diffusion stages of the chosen profile; train the oracle; for the first
``--reports`` held-out (test split) reports generate one image per report with
the full generator (U-ViT + adapter) and with the U-ViT alone, at each of
``--steps`` sampler steps; score them and the real held-out phantoms (raw and
through the autoencoder) with the oracle. Also reports the solver convergence
between step counts (PSNR) and the time per image, to choose the default steps.

Writes ``benchmarks/results/diffusion_alignment_<profile>_<date>.json``.
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
from diffusion_flops import machine_info  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from diffcxr import manifest, storage  # noqa: E402
from diffcxr.config import load_config  # noqa: E402
from diffcxr.constants import EVAL_DISEASES, STATUS_KEPT  # noqa: E402
from services.data.phantom.learnability import make_dataset, predict, train_cnn  # noqa: E402


def mauc(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Per-disease AUC where both classes occur among the reports, and their mean."""
    per = {}
    for i, name in enumerate(EVAL_DISEASES):
        if 0 < labels[:, i].sum() < len(labels):
            per[name] = round(float(roc_auc_score(labels[:, i], scores[:, i])), 4)
    return {"mAUC": round(float(np.mean(list(per.values()))), 4) if per else None, "per_disease": per}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def read_gray(uri: str, size: int) -> np.ndarray:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(storage.read_bytes(uri))).convert("L")
    return np.asarray(image.resize((size, size)) if image.size != (size, size) else image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--profile", default="small")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--reports", type=int, default=300, help="held-out reports to generate for")
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50], help="sampler steps to compare")
    parser.add_argument("--oracle-train", type=int, default=3000, help="phantoms the oracle trains on")
    parser.add_argument("--oracle-epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.profile, args.overrides)
    started = time.time()

    from services.data import stage as data_stage
    from services.diffusion import stage as diffusion_stage
    from services.filter import stage as filter_stage
    from services.text import stage as text_stage

    stage_seconds = {}
    for name, module in (("data", data_stage), ("filter", filter_stage), ("text", text_stage)):
        t0 = time.time()
        result = module.run(cfg)
        stage_seconds[name] = {"seconds": round(time.time() - t0, 1), "skipped": bool(result.get("skipped"))}
        print(f"{name}: {'skipped' if result.get('skipped') else 'done'} in {time.time() - t0:.0f} s", flush=True)
    t0 = time.time()
    diffusion = diffusion_stage.run(cfg)
    stage_seconds["diffusion"] = {"seconds": round(time.time() - t0, 1), "skipped": bool(diffusion.get("skipped"))}
    print(f"diffusion: done in {time.time() - t0:.0f} s", flush=True)
    summary = json.loads(storage.read_text(storage.join(cfg.run_root, "diffusion", "summary.json")))

    size = cfg.data.image_size
    t0 = time.time()
    x_tr, y_tr = make_dataset(3_000_000, args.oracle_train, size)
    oracle = train_cnn(x_tr, y_tr, epochs=args.oracle_epochs)
    x_te, y_te = make_dataset(4_000_000, 500, size)
    oracle_check = mauc(y_te, predict(oracle, x_te))
    oracle_seconds = round(time.time() - t0, 1)
    print(f"oracle: mAUC {oracle_check['mAUC']} on fresh phantoms ({oracle_seconds} s)", flush=True)

    rows = manifest.read(storage.join(cfg.run_root, "filter", "manifest.parquet")).to_pylist()
    heldout = sorted(
        (r for r in rows if r["status"] == STATUS_KEPT and r["split"] == "test" and r["image_uri"]),
        key=lambda r: r["sample_id"],
    )[: args.reports]
    labels = np.array([[1.0 if r.get(n) == 1 else 0.0 for n in EVAL_DISEASES] for r in heldout])
    reports = [r["report_text"] or "" for r in heldout]
    seeds = [cfg.project.seed + i for i in range(len(heldout))]

    from diffcxr.autoencoders.frozen import load_autoencoder
    from services.diffusion.generator import Generator, build_bundle

    real = np.stack([read_gray(r["image_uri"], size) for r in heldout])
    ae = load_autoencoder(cfg.autoencoder)
    with torch.no_grad():
        rgb = torch.from_numpy(real).float().div(255)[:, None].expand(-1, 3, -1, -1)
        recon = torch.cat([ae.decode(ae.encode(rgb[i : i + 32])) for i in range(0, len(rgb), 32)])
    recon = (recon.mean(1).clamp(0, 1) * 255).round().byte().numpy()
    results: dict[str, Any] = {
        "real": mauc(labels, predict(oracle, real)),
        "real_through_autoencoder": mauc(labels, predict(oracle, recon)),
    }
    generator_uri = diffusion["generator"]
    full = Generator(storage.get_folder(generator_uri), threads=args.threads)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = storage.get_folder(generator_uri)
        bare_folder = build_bundle(
            Path(tmp, "uvit-only"), folder / "text", folder / "uvit", None, cfg.autoencoder, cfg.labeler,
            cfg.sampling, size,
        )  # fmt: skip
        bare = Generator(bare_folder, threads=args.threads)
        images: dict[str, np.ndarray] = {}
        timing: dict[str, float] = {}
        for name, generator in (("uvit+adapter", full), ("uvit", bare)):
            for steps in args.steps:
                t0 = time.time()
                out = generator.generate(reports, seeds, steps=steps, batch_size=16)
                timing[f"{name}@{steps}"] = round((time.time() - t0) / len(reports), 4)
                images[f"{name}@{steps}"] = np.stack([o.pixels for o in out])
                results[f"{name}@{steps}"] = mauc(labels, predict(oracle, images[f"{name}@{steps}"]))
                print(f"{name} @ {steps} steps: mAUC {results[f'{name}@{steps}']['mAUC']}", flush=True)
    convergence = {}
    for name in ("uvit+adapter", "uvit"):
        ref = images[f"{name}@{max(args.steps)}"]
        for steps in args.steps:
            if steps != max(args.steps):
                convergence[f"{name}: {steps} vs {max(args.steps)} steps"] = round(
                    float(np.mean([psnr(a, b) for a, b in zip(images[f"{name}@{steps}"], ref, strict=True)])), 2
                )
    out = {
        "benchmark": "diffusion_alignment",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "command": "python benchmarks/diffusion_alignment.py " + " ".join(sys.argv[1:]),
        "profile": cfg.project.profile,
        "overrides": args.overrides,
        "run_root": cfg.run_root,
        "stages": stage_seconds,
        "training": {
            name: {
                k: (summary.get(name) or {}).get(k)
                for k in ("trained_steps", "final_loss", "train_seconds", "samples_per_second")
            }
            for name in ("uvit", "adapter")
        },  # fmt: skip
        "loss_curves": {name: (summary.get(name) or {}).get("history") for name in ("uvit", "adapter")},
        "training_pairs": summary.get("training_pairs"),
        "oracle": {
            "train_phantoms": args.oracle_train,
            "epochs": args.oracle_epochs,
            "fresh_phantoms": oracle_check,
            "seconds": oracle_seconds,
        },  # fmt: skip
        "heldout_reports": len(heldout),
        "positives": {n: int(labels[:, i].sum()) for i, n in enumerate(EVAL_DISEASES)},
        "guidance": cfg.sampling.guidance,
        "alignment": results,
        "seconds_per_image": timing,
        "solver_convergence_psnr_db": convergence,
        "figures": {
            "loss": storage.join(cfg.run_root, "diffusion", "figures", "loss.png"),
            "samples_per_disease": storage.join(cfg.run_root, "diffusion", "figures", "samples_per_disease.png"),
        },
        "seconds_total": round(time.time() - started, 1),
    }
    target = args.out or Path(__file__).parent / "results" / (
        f"diffusion_alignment_{cfg.project.profile}_{dt.date.today().isoformat()}.json"
    )
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("alignment", "seconds_per_image", "solver_convergence_psnr_db")}, indent=1))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
