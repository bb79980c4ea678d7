"""Benchmark: TAEF2 round-trip PSNR of phantoms next to the real NIH radiographs.

Run by hand: ``.venv/bin/python benchmarks/phantom_taef2_psnr.py [--count 32] [--size 256]``.
Phantoms that the real pretrained autoencoder reconstructs as well as real
radiographs live in the same latent "world" as real films, which is what the
latent-space filter and the diffusion model will see. Writes
``benchmarks/results/phantom_taef2_psnr_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.autoencoders.roundtrip import load_grayscale, psnr_round_trip  # noqa: E402
from diffcxr.autoencoders.taef2 import TAEF2  # noqa: E402
from services.data.phantom.learnability import random_findings  # noqa: E402
from services.data.phantom.render import render  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_cxr_samples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    model = TAEF2.from_dir()
    phantoms = np.stack([render(random_findings(s), None, seed=s, size=args.size)[0] for s in range(args.count)])
    ph, real = psnr_round_trip(model, phantoms), psnr_round_trip(model, load_grayscale(REAL, args.size))
    record = {
        "benchmark": "phantom_taef2_round_trip_psnr",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "accelerator": None},
        "size": args.size,
        "phantoms": {"count": len(ph), "mean_db": round(float(np.mean(ph)), 2), "min_db": round(float(np.min(ph)), 2)},
        "real_nih": {"count": len(real), "per_image_db": [round(v, 2) for v in real]},
    }
    out = Path(__file__).parent / "results" / f"phantom_taef2_psnr_{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
