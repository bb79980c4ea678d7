"""Benchmark: how many sampler steps, at what guidance, does a run's generator need? The default chosen by
measurement.

Run by hand after a pipeline run, e.g. ``.venv/bin/python benchmarks/sampler_steps.py -p small --split val
--steps 5 10 20 --guidance 2 3 5`` (small: about a minute per setting on 2 cores for its ~330 val reports).

Regenerates the eval stage's requests (its reports, its per-image seeds; ``--split test`` is the eval's own
set, ``--split val`` is where a default may be chosen without looking at the test split) with the run's
generator at every ``--steps`` x ``--guidance`` setting, scores each set with the run's reference classifier
(mAUC with bootstrap intervals) and against the real images of the same reports (domain FID at equal set
sizes on the classifier's penultimate features, beside the real-vs-real floor), and compares each setting
with the profile's default (else the first) by a paired bootstrap over the reports (same reports, same
seeds, only the setting differs), with seconds per image.
The rule (issue "The generator must draw what the report says"): among the settings whose mAUC is within
``--tolerance`` of the best and whose domain FID is no worse than the reference's, the fewest steps win,
then the lowest domain FID.

Writes ``benchmarks/results/sampler_steps_<profile>_<split>_<date>.json`` and, with ``--grid PNG``, the
chosen setting's per-disease grid (each disease's first positive reports, real beside generated, as the
eval report draws it).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
from diffusion_flops import record_header, write_result  # noqa: E402
from seed_control import eval_requests, eval_rows, open_run, run_arguments  # noqa: E402

from services.diffusion.generator import Generator  # noqa: E402
from services.eval.fid import frechet_distance  # noqa: E402
from services.eval.labels import per_disease_auc  # noqa: E402
from services.eval.stage import bundle_without_adapter, grid_for_rows, read_images  # noqa: E402


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


def fid_floor(cfg: Any, run: Path, real_feats: np.ndarray, classifier: Any) -> float:
    """The domain FID of real against real at the same set size: a seeded sample of the run's kept train
    images against the real images the generated sets are compared with (the eval stage's floor)."""
    train = eval_rows(cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"num_reports": None})}), run, "train")
    pick = np.random.default_rng(cfg.project.seed).choice(
        len(train), size=min(len(train), len(real_feats)), replace=False
    )
    images, _, _ = read_images([train[i] for i in sorted(pick)], cfg.data.image_size)
    return round(frechet_distance(classifier.run(images)[1], real_feats), 3)


def real_reference(
    cfg: Any, run: Path, split: str, classifier: Any
) -> tuple[list[dict], np.ndarray, np.ndarray, float]:
    """What every generated set of ``split`` is compared with: the requests' manifest rows, their real images,
    the classifier's features of those and the real-vs-real domain FID floor at the same size."""
    rows = eval_rows(cfg, run, split)
    real, _, unreadable = read_images(rows, cfg.data.image_size)
    if unreadable:
        raise SystemExit(f"{len(unreadable)} real {split} images unreadable, e.g. {unreadable[0]}")
    real_feats = classifier.run(real)[1]
    return rows, real, real_feats, fid_floor(cfg, run, real_feats, classifier)


def score(
    generator: Generator, items: list[dict[str, Any]], targets: np.ndarray, classifier: Any, real_feats: np.ndarray,
    images_per_report: int, steps: int, guidance: float, bootstrap: int,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:  # fmt: skip
    """Generate the requests at one sampler setting and score them as the eval stage does: (mAUC with its
    bootstrap interval, domain FID at equal set sizes, per-disease AUC, seconds per image), the classifier's
    scores (for paired comparisons) and the first image of every report (for a grid)."""
    first = np.arange(0, len(items), images_per_report)
    started = time.perf_counter()
    images = np.stack([g.pixels for g in generator.generate([i["report"] for i in items], [i["seed"] for i in items],
                                                            steps, guidance)])  # fmt: skip
    seconds = time.perf_counter() - started
    probs, feats = classifier.run(images)
    auc = per_disease_auc(targets, probs, bootstrap=bootstrap)
    result = {
        "steps": steps,
        "guidance": guidance,
        "mAUC": auc["mAUC"],
        "mAUC_ci95": auc.get("mAUC_ci95"),
        "fid_domain": round(frechet_distance(feats[first], real_feats), 3),
        "seconds_per_image": round(seconds / len(items), 3),
        "per_disease": {d: [v["n_pos"], v["auc"]] for d, v in auc["per_disease"].items() if v["auc"] is not None},
    }
    return result, probs, images[first]


def choose(results: dict[str, dict], tolerance: float, reference: str) -> str:
    """The setting to make the default: within ``tolerance`` mAUC of the best and no worse in domain FID than
    the reference (the profile's default), fewest steps, then lowest domain FID (then lowest guidance). The
    FID bound keeps a sampler that trades realism for legibility (one blurry step) from winning on mAUC."""
    best = max(r["mAUC"] for r in results.values())
    fid_bound = results[reference]["fid_domain"]
    close = [k for k, r in results.items() if r["mAUC"] >= best - tolerance and r["fid_domain"] <= fid_bound]
    close = close or [reference]
    return min(close, key=lambda k: (results[k]["steps"], results[k]["fid_domain"], results[k]["guidance"]))


def main() -> None:
    parser = run_arguments(__doc__.splitlines()[0], "small")
    parser.add_argument("--generator", default=None,
                        help="another bundle to score on the run's requests (an ablation variant)")  # fmt: skip
    parser.add_argument("--without-adapter", action="store_true",
                        help="sample the bundle with its adapter removed (the U-ViT-only ablation row)")  # fmt: skip
    parser.add_argument("--split", choices=["test", "val"], default="test",
                        help="reports to generate for: test (the eval's own) or val (to choose a default)")  # fmt: skip
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50], help="step counts")
    parser.add_argument("--guidance", type=float, nargs="+", default=None,
                        help="guidance scales (default: the eval's, else the bundle's)")  # fmt: skip
    parser.add_argument("--tolerance", type=float, default=0.02, help="mAUC within which fewer steps win")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--grid", type=Path, default=None,
                        help="also write the chosen setting's per-disease grid PNG")  # fmt: skip
    args = parser.parse_args()
    cfg, run = open_run(args)
    items, targets, generator, classifier = eval_requests(cfg, run, args.split)
    if args.generator:  # same reports, seeds, classifier and real images; another trained model
        generator = Generator(args.generator)
    if args.without_adapter:  # the eval stage's own adapter-less copy of the bundle
        work = Path(tempfile.mkdtemp(prefix="sampler-steps-"))
        generator = Generator(bundle_without_adapter(generator.folder, str(work / "out"), work)[0])
    rows, real, real_feats, floor = real_reference(cfg, run, args.split, classifier)
    print(f"domain FID floor (real train vs real {args.split}, {len(real)} each): {floor}", flush=True)
    default_guidance = cfg.eval.guidance if cfg.eval.guidance is not None else generator.sampling.guidance
    settings = [(n, g) for n in sorted(args.steps) for g in (args.guidance or [default_guidance])]

    scores: dict[str, np.ndarray] = {}
    results: dict[str, dict] = {}
    drawn: dict[str, np.ndarray] = {}  # one image per report, for --grid
    per_report = cfg.eval.images_per_report
    for steps, guidance in settings:
        name = f"{steps} steps, guidance {guidance:g}"
        results[name], scores[name], drawn[name] = score(
            generator, items, targets, classifier, real_feats, per_report, steps, guidance, args.bootstrap
        )
        shown = {k: results[name][k] for k in ("mAUC", "mAUC_ci95", "fid_domain", "seconds_per_image")}
        print(name + ":", json.dumps(shown), flush=True)
    default = f"{generator.sampling.steps} steps, guidance {default_guidance:g}"
    reference = default if default in results else next(iter(results))  # the profile's default, when measured
    for name in [n for n in results if n != reference]:
        diff = paired_difference(targets, scores[reference], scores[name], args.bootstrap)
        results[name]["minus_reference"] = diff
        print(f"{name} - {reference}: {json.dumps(diff)}", flush=True)
    chosen = choose(results, args.tolerance, reference)
    record = {
        **record_header(
            "sampler_steps", "python benchmarks/sampler_steps.py " + " ".join(sys.argv[1:]), profile=args.profile
        ),  # fmt: skip
        "run": str(run),
        "generator": args.generator or str(run / "diffusion" / "generator"),
        "without_adapter": args.without_adapter,
        "split": args.split,
        "images": len(items),
        "real_images_for_fid": len(real),
        "fid_domain_floor": floor,
        "profile_default": {"steps": generator.sampling.steps, "guidance": generator.sampling.guidance},
        "tolerance": args.tolerance,
        "chosen": chosen,
        "rule": f"within {args.tolerance} mAUC of the best setting and no worse domain FID than the reference: "
        "fewest steps, then lowest domain FID",
        "reference": reference,
        "by_setting": results,
    }
    if args.grid:
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        args.grid.write_bytes(grid_for_rows(rows, list(drawn[chosen]), real, cfg.eval.grid_per_disease))
        record["grid"] = {"path": str(args.grid), "setting": chosen}
    out = write_result(record, args.out, f"sampler_steps_{args.profile}_{args.split}")
    print(f"chosen: {chosen} (the profile samples with {generator.sampling.steps} steps, guidance "
          f"{generator.sampling.guidance:g}); wrote {out}")  # fmt: skip


if __name__ == "__main__":
    main()
