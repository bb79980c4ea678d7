"""Benchmark: does a run's generator follow its reports, or only its seeds? The blank-report control.

Run by hand after a pipeline run: ``.venv/bin/python benchmarks/seed_control.py -p tiny`` (about a minute
for tiny on 2 cores).

Generates the eval stage's own requests (its test reports, in its order, with its per-report seeds) three
ways with the run's generator — each report's own text, a blank report, and the report of the row 7 places
further on — and scores all three with the run's reference classifier. A generator that follows its
reports scores well above both controls; one whose images are fixed by their seeds scores the same on all
three, whatever that number is (with one image per report and a handful of positives per disease, a set of
seeds alone can land far from 0.5).

Writes ``benchmarks/results/seed_control_<profile>_<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from diffusion_flops import record_header, write_result  # noqa: E402

from diffcxr.config import load_config  # noqa: E402
from services.diffusion.generator import Generator  # noqa: E402
from services.eval.classifier import OwnDenseNet  # noqa: E402
from services.eval.generate import requests  # noqa: E402
from services.eval.labels import LabelPolicy, label_matrix, per_disease_auc  # noqa: E402
from services.eval.stage import one_row_per_report  # noqa: E402


def eval_rows(cfg: Any, run: Path, split: str = "test") -> list[dict[str, Any]]:
    """The manifest rows the eval stage would generate for on ``split`` (one per report, in its order, at
    most ``eval.num_reports``): ``test`` is the eval's own set; ``val`` is where a default is chosen without
    looking at the test split."""
    rows = pq.read_table(run / "filter" / "manifest.parquet").to_pylist()
    chosen = sorted((r for r in rows if r["status"] == "kept" and r["split"] == split and r["image_uri"]),
                    key=lambda r: r["sample_id"])  # the eval stage's order  # fmt: skip
    if not chosen:
        raise SystemExit(f"--split {split}: the run's manifest has no kept {split} rows with images")
    return [chosen[i] for i in one_row_per_report(chosen)[: cfg.eval.num_reports or None]]  # as the eval picks


def eval_requests(
    cfg: Any, run: Path, split: str = "test"
) -> tuple[list[dict[str, Any]], np.ndarray, Generator, OwnDenseNet]:
    """The eval stage's own requests on a finished run (its reports, its order, its per-image seeds; on
    ``split``), their label matrix (one row per request), the run's generator and its reference classifier:
    what a benchmark regenerates and scores to compare with the eval."""
    rows = eval_rows(cfg, run, split)
    items = requests(rows, cfg.eval.images_per_report, cfg.project.seed)
    targets = np.repeat(label_matrix(rows, LabelPolicy.from_config(cfg.eval)), cfg.eval.images_per_report, axis=0)
    return items, targets, Generator(run / "diffusion" / "generator"), OwnDenseNet.load(run / "eval" / "classifier")


def run_arguments(description: str, profile: str) -> argparse.ArgumentParser:
    """The options every benchmark on a finished run shares: profile, run root, overrides, threads, out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-p", "--profile", default=profile)
    parser.add_argument("--run", default=None, help="run root (default: the profile's project.run_root)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides the run was made with (e.g. eval.images_per_report=2)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    return parser


def open_run(args: argparse.Namespace) -> tuple[Any, Path]:
    """(config, run root) from :func:`run_arguments`' options, with torch's threads set."""
    torch.set_num_threads(args.threads)
    cfg = load_config(args.profile, args.overrides)
    return cfg, Path(args.run or cfg.project.run_root)


def main() -> None:
    parser = run_arguments(__doc__.splitlines()[0], "tiny")
    parser.add_argument("--shift", type=int, default=7, help="the shifted control takes the report this many rows on")
    args = parser.parse_args()
    cfg, run = open_run(args)
    items, targets, generator, classifier = eval_requests(cfg, run)
    seeds = [i["seed"] for i in items]
    conditions = {
        "own reports": [i["report"] for i in items],
        "blank report": [""] * len(items),
        f"reports shifted by {args.shift} rows": [
            items[(k + args.shift) % len(items)]["report"] for k in range(len(items))
        ],  # fmt: skip
    }
    results = {}
    for name, reports in conditions.items():
        images = np.stack([g.pixels for g in generator.generate(reports, seeds, cfg.eval.steps, cfg.eval.guidance)])
        auc = per_disease_auc(targets, classifier.predict(images), bootstrap=1000)
        results[name] = {
            "mAUC": round(auc["mAUC"], 4),
            "mAUC_ci95": auc.get("mAUC_ci95"),
            "per_disease": {
                d: [v["n_pos"], round(v["auc"], 3)] for d, v in auc["per_disease"].items() if v["auc"] is not None
            },  # fmt: skip
        }
        print(name, json.dumps(results[name]), flush=True)
    record = {
        **record_header(
            "seed_control", "python benchmarks/seed_control.py " + " ".join(sys.argv[1:]), profile=args.profile
        ),  # fmt: skip
        "run": str(run),
        "images": len(items),
        "controls": results,
    }
    out = write_result(record, args.out, f"seed_control_{args.profile}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
