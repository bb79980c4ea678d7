"""Benchmark: phantom rendering speed and learnability (CNN vs pixel logistic regression, per-disease AUC).

Run by hand: ``.venv/bin/python benchmarks/phantom_benchmark.py``. Renders one
128 px phantom for every IU-Xray report with text (~3,900 images, the
``diffcxr data build`` path, all CPU cores) and times it; then trains the small
CNN on 3,000 phantoms and scores 600 held-out ones (20 epochs), next to a
logistic regression on 16×16 pixels. Writes ``benchmarks/results/phantom_<date>.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.config import load_config  # noqa: E402
from services.data.phantom.dataset import build_phantom_dataset  # noqa: E402
from services.data.phantom.learnability import evaluate  # noqa: E402


def main() -> None:
    cfg = load_config("small", ["data.max_reports=null", "data.image_size=128", "data.noise_rate=0.05"])
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = build_phantom_dataset(cfg, tmp)
        build_seconds = time.perf_counter() - started
    rendered = result.labels["phantoms_rendered"]
    started = time.perf_counter()
    learn = evaluate(train=3000, test=600, size=128, epochs=20, workers=os.cpu_count() or 1)
    learn_seconds = time.perf_counter() - started
    record = {
        "benchmark": "phantom_render_and_learnability",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "accelerator": None},
        "render": {
            "images": rendered,
            "size": 128,
            "seconds_total": round(build_seconds, 1),
            "render_seconds": result.labels["render_seconds"],
            "images_per_second": round(rendered / build_seconds, 1),
        },
        "learnability": {
            "train": 3000,
            "test": 600,
            "size": 128,
            "epochs": 20,
            "seconds": round(learn_seconds, 1),
            "cnn_auc": learn.cnn_auc,
            "cnn_min_auc": learn.cnn_min,
            "logreg_16px_auc": learn.simple_auc,
        },
    }
    out = Path(__file__).parent / "results" / f"phantom_{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
