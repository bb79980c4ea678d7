"""Benchmark: does a trained generator draw what its reports say? The issue's targets, checked on a run.

Run after the pipeline of a profile, e.g.::

    bash infra/run_local.sh --profile small
    .venv/bin/python benchmarks/generation_quality.py --profile small

It reads what the pipeline left under the run root — the eval stage's reference classifier, its generated
images (one per held-out test report, fixed seeds) and ``results.json``, the stage times — scores the
generated images and the real held-out phantoms of the same reports with that classifier, and adds bootstrap
95% intervals (per disease and for mAUC). Targets (issue "The generator must draw what the report says"):
generated mAUC ≥ the profile's floor and ≥ 0.9 × the classifier's mAUC on the real images of the same
reports, every disease with ≥ 10 positives ≥ 0.75, domain FID ≤ 1.5 × the real-vs-real floor, and the
pipeline's own wall time. Writes ``benchmarks/results/generation_quality_<profile>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from diffusion_flops import record_header  # noqa: E402

from diffcxr import manifest, storage  # noqa: E402
from diffcxr.config import load_config  # noqa: E402
from diffcxr.constants import STATUS_KEPT  # noqa: E402
from services.eval.classifier import OwnDenseNet, load_classifier  # noqa: E402
from services.eval.labels import LabelPolicy, label_matrix, per_disease_auc  # noqa: E402
from services.eval.stage import read_images  # noqa: E402

#: (generated mAUC floor, ratio to the real images' mAUC, per-disease floor, min positives, FID ratio, seconds)
TARGETS = {"small": (0.85, 0.9, 0.75, 10, 1.5, 7200), "tiny": (0.65, None, None, 10, None, 900)}


def generated_images(folder: str) -> tuple[list[str], np.ndarray]:
    """(sample ids, uint8 images) of one generator's eval shards, first repeat only, in request order."""
    fs, path = storage.resolve(folder)
    rows = sorted(pq.read_table(path, filesystem=fs).to_pylist(), key=lambda r: r["key"])
    rows = [r for r in rows if r["repeat"] == 0]
    images = np.stack([np.frombuffer(r["pixels"], np.uint8).reshape(r["size"], r["size"]) for r in rows])
    return [r["sample_id"] for r in rows], images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--profile", default="small")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cfg = load_config(args.profile, args.overrides)
    root = cfg.run_root
    results = json.loads(storage.read_text(storage.join(root, "eval", "results.json")))
    timings = json.loads(storage.read_text(storage.join(root, "_timings.json")))
    rows = manifest.read(storage.join(root, "filter", "manifest.parquet")).to_pylist()
    by_id = {r["sample_id"]: r for r in rows if r["status"] == STATUS_KEPT}
    policy = LabelPolicy.from_config(cfg.eval)
    classifier = OwnDenseNet.load(storage.get_folder(storage.join(root, "eval", "classifier"))) \
        if cfg.eval.classifier == "own-densenet121" else load_classifier(cfg.eval)  # fmt: skip

    sets: dict[str, Any] = {}
    ids = None
    for name in ("model", "without-adapter"):
        folder = storage.join(root, "eval", "generated", name)
        if not storage.exists(folder):
            continue
        ids, images = generated_images(folder)
        targets = label_matrix([by_id[i] for i in ids], policy)
        scores = classifier.run(images)[0]
        sets[name] = per_disease_auc(targets, scores, bootstrap=args.bootstrap, seed=cfg.project.seed)
    real_images, real_rows, unreadable = read_images([by_id[i] for i in ids], cfg.data.image_size)
    if unreadable:  # a moved run folder leaves the manifest's image paths dangling: say so, do not score fewer
        raise SystemExit(f"{len(unreadable)} real held-out images are unreadable (first: {unreadable[0]})")
    real_targets = label_matrix(real_rows, policy)
    sets["real held-out phantoms, same reports"] = per_disease_auc(
        real_targets, classifier.run(real_images)[0], bootstrap=args.bootstrap, seed=cfg.project.seed
    )

    gen, real = sets["model"], sets["real held-out phantoms, same reports"]
    fid = results["models"]["model"]["fid_domain"]
    floor = results["fid_floor"]
    mauc_floor, ratio, disease_floor, min_pos, fid_ratio, seconds = TARGETS.get(args.profile, TARGETS["small"])
    frequent = {n: e for n, e in gen["per_disease"].items() if e["auc"] is not None and e["n_pos"] >= min_pos}
    total = round(sum(timings.values()), 1)
    checks = {
        f"generated mAUC >= {mauc_floor}": [gen["mAUC"], gen["mAUC"] is not None and gen["mAUC"] >= mauc_floor],
        f"every disease with >= {min_pos} positives >= {disease_floor}": (
            [{n: e["auc"] for n, e in frequent.items()}, all(e["auc"] >= disease_floor for e in frequent.values())]
            if disease_floor else None
        ),
        f"generated mAUC >= {ratio} x real ({real['mAUC']})": (
            [round(gen["mAUC"] / real["mAUC"], 4), gen["mAUC"] >= ratio * real["mAUC"]] if ratio else None
        ),
        f"domain FID <= {fid_ratio} x floor ({floor})": (
            [round(fid / floor, 3), fid <= fid_ratio * floor] if fid_ratio and floor else None
        ),
        f"pipeline wall time <= {seconds} s (stage sum)": [total, total <= seconds],
    }
    run_sets = "".join(f" --set {o}" for o in args.overrides or [])  # the run was made with the same overrides
    command = f"bash infra/run_local.sh --profile {args.profile}{run_sets} && python benchmarks/generation_quality.py "
    record = {
        **record_header("generation_quality", command + " ".join(sys.argv[1:]), profile=args.profile),
        "config": {k: cfg.to_dict()[k] for k in ("data", "diffusion", "adapter", "sampling", "eval", "ray")},
        "stage_seconds": timings,
        "eval_reports": len(ids),
        "checks": {k: v for k, v in checks.items() if v is not None},
        "auc": sets,
        "fid_domain": {"generated": fid, "floor": floor, "floor_sizes": results.get("fid_floor_sizes"),
                       "without_adapter": results["models"].get("without adapter", {}).get("fid_domain")},  # fmt: skip
        "classifier": results.get("classifier"),
        "eval_seconds_per_image": results.get("latency", {}).get("seconds_per_image"),
    }
    today = dt.date.today().isoformat()
    out = args.out or Path(__file__).parent / "results" / f"generation_quality_{args.profile}_{today}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["checks"], indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
