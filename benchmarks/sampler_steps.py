"""Benchmark: how many sampler steps does a run's generator need? The default chosen by measurement.

Run by hand after a pipeline run, e.g. ``.venv/bin/python benchmarks/sampler_steps.py -p small`` (small:
about 10 minutes on 2 cores for 20 and 50 steps on its 400 eval reports).

Regenerates the eval stage's own requests (its held-out test reports, its per-image seeds) with the run's
generator at each ``--steps`` value, scores every set with the run's reference classifier, and compares each
with the first by a paired bootstrap over the reports (same reports, same seeds, only the step count
differs), with seconds per image. The rule (issue "The generator must draw what the report says"): when
more steps score within ``--tolerance`` mAUC of fewer, the fewer steps are the default.

Writes ``benchmarks/results/sampler_steps_<profile>_<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusion_flops import record_header, write_result  # noqa: E402
from seed_control import eval_requests  # noqa: E402

from diffcxr.config import load_config  # noqa: E402
from services.eval.labels import per_disease_auc  # noqa: E402


def paired_difference(targets: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int) -> dict[str, float]:
    """mAUC(b) − mAUC(a) on the same bootstrap resamples of the reports: the noise of the difference, which
    is far smaller than either interval's because both sets share reports and seeds."""
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(resamples):
        idx = rng.integers(0, len(targets), len(targets))
        ma, mb = per_disease_auc(targets[idx], a[idx])["mAUC"], per_disease_auc(targets[idx], b[idx])["mAUC"]
        if ma is not None and mb is not None:
            diffs.append(mb - ma)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"mean": round(float(np.mean(diffs)), 4), "ci95": [round(float(low), 4), round(float(high), 4)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--profile", default="small")
    parser.add_argument("--run", default=None, help="run root (default: the profile's project.run_root)")
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50], help="step counts, fewest first")
    parser.add_argument("--tolerance", type=float, default=0.02, help="mAUC within which fewer steps win")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides the run was made with")  # fmt: skip
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.profile, args.overrides)
    run = Path(args.run or cfg.project.run_root)
    items, targets, generator, classifier = eval_requests(cfg, run)
    reports, seeds = [i["report"] for i in items], [i["seed"] for i in items]

    scores: dict[int, np.ndarray] = {}
    results: dict[str, dict] = {}
    for steps in sorted(args.steps):
        started = time.perf_counter()
        images = np.stack([g.pixels for g in generator.generate(reports, seeds, steps, cfg.eval.guidance)])
        seconds = time.perf_counter() - started
        scores[steps] = classifier.predict(images)
        auc = per_disease_auc(targets, scores[steps], bootstrap=args.bootstrap)
        results[str(steps)] = {
            "mAUC": auc["mAUC"],
            "mAUC_ci95": auc.get("mAUC_ci95"),
            "seconds_per_image": round(seconds / len(items), 3),
            "per_disease": {d: [v["n_pos"], v["auc"]] for d, v in auc["per_disease"].items() if v["auc"] is not None},
        }
        shown = {k: results[str(steps)][k] for k in ("mAUC", "mAUC_ci95", "seconds_per_image")}
        print(steps, "steps:", json.dumps(shown), flush=True)
    fewest = min(scores)
    chosen = fewest
    for steps in sorted(scores)[1:]:
        diff = paired_difference(targets, scores[fewest], scores[steps], args.bootstrap)
        results[str(steps)][f"minus_{fewest}_steps"] = diff
        print(f"{steps} - {fewest} steps: {json.dumps(diff)}", flush=True)
        if results[str(steps)]["mAUC"] - results[str(fewest)]["mAUC"] > args.tolerance:
            chosen = steps
    record = {
        **record_header(
            "sampler_steps", "python benchmarks/sampler_steps.py " + " ".join(sys.argv[1:]), profile=args.profile
        ),  # fmt: skip
        "run": str(run),
        "images": len(items),
        "guidance": cfg.eval.guidance if cfg.eval.guidance is not None else generator.sampling.guidance,
        "profile_default_steps": generator.sampling.steps,
        "tolerance": args.tolerance,
        "chosen_steps": chosen,
        "rule": f"more steps only when they beat {fewest} by more than {args.tolerance} mAUC",
        "by_steps": results,
    }
    out = write_result(record, args.out, f"sampler_steps_{args.profile}")
    print(f"chosen: {chosen} steps (the profile samples with {generator.sampling.steps}); wrote {out}")


if __name__ == "__main__":
    main()
