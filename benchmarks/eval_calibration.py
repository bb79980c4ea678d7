"""Benchmark: is the evaluator trustworthy? Calibration of mAUC and domain FID on known cases.

Run by hand: ``.venv/bin/python benchmarks/eval_calibration.py [--train 600 --held 200 --steps 200]``.

Why: an evaluator that reports numbers for generated images must first give
the right numbers where the answer is known. Phantoms with random findings
(every disease frequent, independent) are rendered: a train set for our
DenseNet-121 reference classifier (trained with Ray Train, as the eval service
does), held-out set A (the "real test" reference) and held-out set B (real
images posing as generated ones). Expected: mAUC(B) ≈ the classifier's test
mAUC on A; domain FID(B, A) ≈ the real-vs-real floor FID(train sample, A);
B with shuffled report labels → mAUC ≈ 0.5; uniform noise → a large FID.
Several seeds of the label shuffle give its spread.

Writes ``benchmarks/results/eval_calibration_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
from diffusion_flops import machine_info  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--held", type=int, default=200)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    import ray

    from diffcxr.config import load_config
    from services.data.phantom.learnability import make_dataset
    from services.eval.classifier import OwnDenseNet
    from services.eval.classifier_train import data_id, train_classifier
    from services.eval.fid import frechet_distance
    from services.eval.labels import per_disease_auc
    from services.eval.metrics import image_metrics

    x_train, y_train = make_dataset(1_000_000, args.train, args.size)
    x_a, y_a = make_dataset(2_000_000, args.held, args.size)
    x_b, y_b = make_dataset(3_000_000, args.held, args.size)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    cfg = load_config("tiny", [f"data.image_size={args.size}", "eval.classifier_cpus=2"])
    work = Path("var/benchmarks/eval_calibration")
    started = time.perf_counter()
    run_name = f"calibration-{args.train}-{args.steps}"
    ray_dir = str((work / "ray").resolve())
    trained = train_classifier(
        cfg, x_train, y_train, work / "classifier", ray_dir, run_name, args.steps, data_id(["phantoms"], {})
    )
    train_seconds = time.perf_counter() - started
    clf = OwnDenseNet.load(trained.folder)
    probs_a, feats_a = clf.run(x_a)
    test = per_disease_auc(y_a, probs_a)
    _, feats_train = clf.run(x_train[: args.held])
    floor = frechet_distance(feats_train, feats_a)
    as_generated = image_metrics(clf, x_b, y_b, feats_a)
    shuffled = [image_metrics(clf, x_b, y_b[np.random.default_rng(s).permutation(len(y_b))], feats_a)["mAUC"]
                for s in range(5)]  # fmt: skip
    noise = np.random.default_rng(1).integers(0, 256, x_b.shape, dtype=np.uint8)
    noise_fid = image_metrics(clf, noise, y_b, feats_a)["fid_domain"]
    result = {
        "benchmark": "eval_calibration",
        "date": dt.date.today().isoformat(),
        "machine": machine_info(),
        "setup": {
            **vars(args),
            "classifier": "own-densenet121 (torchvision DenseNet-121, 1-channel stem), Ray Train",
            "data": "phantoms with independent random findings (prevalence 0.22)",
        },  # fmt: skip
        "classifier_train_seconds": round(train_seconds, 1),
        "classifier_test_mAUC": test["mAUC"],
        "classifier_test_per_disease": {k: v["auc"] for k, v in test["per_disease"].items()},
        "real_as_generated_mAUC": as_generated["mAUC"],
        "shuffled_labels_mAUC": {"mean": round(float(np.mean(shuffled)), 4), "runs": shuffled},
        "fid_floor_train_vs_test": round(floor, 3),
        "fid_real_heldout_vs_test": as_generated["fid_domain"],
        "fid_noise_vs_test": noise_fid,
        "note": "FID values at equal set sizes; the floor uses train images the classifier has seen, so its "
        "features separate slightly more than two unseen sets do (floor > held-out vs held-out).",
    }
    out = Path(__file__).parent / "results" / f"eval_calibration_{result['date']}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
