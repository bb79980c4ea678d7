"""Benchmark: may ``auto`` precision use bf16? The quality check that decides ``diffcxr.precision.AUTO_BF16``.

Run by hand after a pipeline run (the issue asks for the ``small`` generator)::

    bash infra/run_local.sh --profile small
    .venv/bin/python benchmarks/precision_quality.py -p small

Regenerates the eval stage's own requests (its test reports, its per-image seeds, the bundle's default
steps and guidance) once per precision with the run's generator, scores each set as the eval does — the
run's reference classifier (mAUC with a bootstrap interval) and domain FID against the real images of the
same reports — and compares bf16 with fp32 by a paired bootstrap over the reports (same reports, same seeds,
only the number format differs). The rule (issue "Generation speed measured end to end"): bf16 may be
``auto``'s choice only if its mAUC is within 0.01 of fp32's and its domain FID within 5 % of fp32's.

Also checks that the fp32 set is bit-identical to the eval stage's stored images when the thread count is
the eval actor's (``--threads`` defaults to it): the benchmark regenerates what the eval scored.

On a CPU without native bf16 the bf16 set is emulated (slow, same numerics). Writes
``benchmarks/results/precision_quality_<profile>_<date>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
from diffusion_flops import record_header, write_result  # noqa: E402
from generation_quality import generated_images  # noqa: E402
from sampler_steps import paired_difference, real_reference, score  # noqa: E402
from seed_control import eval_requests, open_run, run_arguments  # noqa: E402

from diffcxr.precision import native_bf16  # noqa: E402
from services.diffusion.generator import Generator  # noqa: E402

MAUC_TOLERANCE, FID_TOLERANCE = 0.01, 0.05


def main() -> None:
    parser = run_arguments(__doc__.splitlines()[0], "small")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    cfg, run = open_run(args)
    items, targets, generator, classifier = eval_requests(cfg, run, "test")
    rows, real, real_feats, floor = real_reference(cfg, run, "test", classifier)
    steps = cfg.eval.steps or generator.sampling.steps
    guidance = cfg.eval.guidance if cfg.eval.guidance is not None else generator.sampling.guidance
    results, scores, drawn = {}, {}, {}
    for precision in ("fp32", "bf16"):
        gen = Generator(generator.folder, precision=precision)
        results[precision], scores[precision], drawn[precision] = score(
            gen, items, targets, classifier, real_feats, cfg.eval.images_per_report, steps, guidance, args.bootstrap
        )
        shown = {k: results[precision][k] for k in ("mAUC", "mAUC_ci95", "fid_domain", "seconds_per_image")}
        print(precision, json.dumps(shown), flush=True)
    diff = paired_difference(targets, scores["fp32"], scores["bf16"], args.bootstrap)
    fp32, bf16 = results["fp32"], results["bf16"]
    fid_change = (bf16["fid_domain"] - fp32["fid_domain"]) / fp32["fid_domain"]
    checks = {
        f"|mAUC bf16 - fp32| <= {MAUC_TOLERANCE}": [round(bf16["mAUC"] - fp32["mAUC"], 4),
                                                   abs(bf16["mAUC"] - fp32["mAUC"]) <= MAUC_TOLERANCE],
        f"domain FID bf16 within {FID_TOLERANCE:.0%} of fp32": [round(fid_change, 4), abs(fid_change) <= FID_TOLERANCE],
    }  # fmt: skip
    stored_ids, stored = generated_images(str(run / "eval" / "generated" / "model"))
    first = np.arange(0, len(items), cfg.eval.images_per_report)
    same_order = stored_ids == [items[i]["sample_id"] for i in first]
    pixels_diff = np.abs(drawn["fp32"].astype(int) - drawn["bf16"].astype(int))
    record = {
        **record_header("precision_quality", "python benchmarks/precision_quality.py " + " ".join(sys.argv[1:]),
                        profile=args.profile),  # fmt: skip
        "run": str(run),
        "images": len(items),
        "steps": steps,
        "guidance": guidance,
        "native_bf16_here": native_bf16(),
        "fid_domain_floor": floor,
        "by_precision": results,
        "bf16_minus_fp32_mAUC_paired": diff,
        "bf16_vs_fp32_pixels": {"mean_abs": round(float(pixels_diff.mean()), 3), "max_abs": int(pixels_diff.max()),
                                "identical_images": int((pixels_diff.reshape(len(pixels_diff), -1).max(1) == 0).sum())},
        "fp32_matches_eval_stage_images": bool(same_order and np.array_equal(drawn["fp32"], stored)),
        "checks": checks,
        "verdict": "bf16 may be auto's choice where native" if all(v[1] for v in checks.values())
        else "bf16 stays off in auto",
    }  # fmt: skip
    out = write_result(record, args.out, f"precision_quality_{args.profile}")
    print(json.dumps({k: record[k] for k in ("checks", "verdict", "fp32_matches_eval_stage_images")}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
