"""Benchmark: LNFS noise detection on IU-report phantoms, and Ray Data encode throughput vs a plain loop.

Run by hand: ``.venv/bin/python benchmarks/filter_benchmark.py [--size 128] [--noise-rate 0.05]``.

1. Renders one phantom per IU report (all 3,955 reports; ~5 % spoiled with the
   10 noise kinds; the filter never sees which).
2. Encodes them with TAEF2 twice on the same machine and data: a plain
   single-process torch loop (2 threads) and the Ray Data pipeline (read tasks +
   2 encode actors); reports images/s of both and the Ray overhead.
3. Runs LNFS (``small`` profile filter settings) and scores detection against
   the hidden ``noise_kind``: AUROC of (a) K-means distance, (b) latent-AE error,
   (c) the full decision score, precision/recall at the configured threshold,
   overall and per noise kind.

Writes ``benchmarks/results/filter_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from diffcxr import manifest  # noqa: E402
from diffcxr.config import load_config  # noqa: E402
from diffcxr.contracts.latents import read_latents  # noqa: E402
from services.data.phantom.dataset import build_phantom_dataset  # noqa: E402
from services.filter.encode import encode_in_process, encode_with_ray  # noqa: E402
from services.filter.lnfs import run_lnfs  # noqa: E402
from services.filter.report import detection_metrics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--noise-rate", type=float, default=0.05)
    parser.add_argument("--max-reports", type=int, default=None)
    parser.add_argument("--reuse", action="store_true", help="reuse var/bench latents (skip render + encode)")
    args = parser.parse_args()
    cfg = load_config(
        "small",
        [
            f"data.image_size={args.size}",
            f"data.noise_rate={args.noise_rate}",
            f"data.max_reports={args.max_reports if args.max_reports else 'null'}",
            "ray.data_pool_size=2",
            "ray.data_cpus_per_actor=0.75",
        ],
    )
    keep = Path(__file__).resolve().parent.parent / "var" / "bench" / f"filter_{args.size}"
    if args.reuse and (keep / "manifest.parquet").exists():
        rows = [r for r in manifest.kept(manifest.read(str(keep / "manifest.parquet"))).to_pylist() if r["image_uri"]]
        timings = json.loads((keep / "encode.json").read_text())
        plain_seconds, ray_seconds = timings["plain"], timings["ray"]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            table = build_phantom_dataset(cfg, tmp).table
            rows = [r for r in manifest.kept(table).to_pylist() if r["image_uri"]]
            torch.set_num_threads(2)
            _, plain_seconds = encode_in_process(rows, cfg)
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            ray_seconds = encode_with_ray(rows, cfg, str(keep / "latents"))
            ray.shutdown()
        manifest.write(table, str(keep / "manifest.parquet"))
        (keep / "encode.json").write_text(json.dumps({"plain": plain_seconds, "ray": ray_seconds}))
    ids, latents, errors, ae_id = read_latents(str(keep / "latents"), cfg.latent_shape)
    by_id = {r["sample_id"]: r for r in rows}
    started = time.perf_counter()
    result = run_lnfs(latents, cfg.filter, cfg.project.seed)
    lnfs_seconds = time.perf_counter() - started
    metrics = detection_metrics(result, [by_id[i]["noise_kind"] for i in ids])
    record = {
        "benchmark": "lnfs_filter_on_iu_phantoms",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "accelerator": None},
        "command": " ".join(["python", "benchmarks/filter_benchmark.py", *sys.argv[1:]]),
        "images": len(rows),
        "size": args.size,
        "noise_rate": args.noise_rate,
        "autoencoder": ae_id,
        "filter_config": cfg.to_dict()["filter"],
        "encode": {
            "plain_loop_seconds": round(plain_seconds, 2),
            "plain_images_per_s": round(len(rows) / plain_seconds, 1),
            "ray_data_seconds": round(ray_seconds, 2),
            "ray_images_per_s": round(len(rows) / ray_seconds, 1),
            "ray_overhead": round(ray_seconds / plain_seconds - 1, 3),
        },
        "lnfs_seconds": round(lnfs_seconds, 1),
        "detection": metrics,
        "unreadable": len(errors),
        "stage_counts": {s: int(np.sum(result.stage == s)) for s in ("typical_normal", "typical_noisy")},
    }
    out = Path(__file__).parent / "results" / f"filter_{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
