"""Benchmark: the paper's Table II on phantoms, every ablation variant at every training seed, mean ± spread.

Run by hand on a finished reference run (the profile's pipeline, e.g. ``bash infra/run_local.sh --profile
small``): ``.venv/bin/python benchmarks/table_ii.py -p small --run var/runs/small --seeds 0 1``. Training is
long (small on 2 cores, per seed: full and without LNFS ~35 min each, unsqueezed ~100 min); ``--dry-run``
prints the plan, and a variant whose generator exists is never retrained, so an interrupted table resumes.

Variants, each a pipeline run to the end of the diffusion stage (``python -m infra.launch ... --to
diffusion``) under ``--root``, on a copy of the reference run's data stage — every variant and seed trains on
the same phantoms with the same injected noise; a training seed is ``project.seed`` of every later stage:

* ``full``: the profile (LNFS, squeezed text tokens, disease adapter); at the reference seed (``--reference-seed``,
  the project.seed the reference run was made with) it is the reference run itself, not retrained;
* ``no_lnfs``: ``filter.enabled=false`` (the filter scores every row and drops none);
* ``unsqueezed``: ``text.squeeze_tokens=0`` (all ``text.context_length`` token states reach the U-ViT); it
  starts from the same seed's ``full`` filter stage, since only the text tokens differ.

``--existing VARIANT:SEED=RUN_ROOT`` names a run made earlier by hand the same way. Each variant's generator
and its adapter-less copy (the U-ViT alone) are then scored on the reference run's held-out test requests
(its reports, per-image seeds, reference classifier and real images) at the profile's sampler, as the eval
stage and ``sampler_steps.py`` score (same numbers): mAUC with a bootstrap interval and domain FID at equal
set sizes. Per row: every seed, the mean and the spread (max − min); per module (adapter, LNFS, squeeze):
the paired difference per seed and whether the paper's direction (higher mAUC, lower FID) holds in every seed.

Writes ``benchmarks/results/table_ii_<profile>_<date>.json``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
from diffusion_flops import record_header, write_result  # noqa: E402
from sampler_steps import paired_difference, real_reference, score  # noqa: E402
from seed_control import eval_requests, open_run, run_arguments  # noqa: E402

from services.diffusion.generator import Generator  # noqa: E402
from services.eval.stage import bundle_without_adapter  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


class Variant(NamedTuple):
    """How a variant's run differs from the profile: its overrides, the flags of its Table II row, the stage
    it starts at, and the variant (of the same seed) whose stages before that it copies (None: the reference's
    data stage)."""

    overrides: list[str]
    lnfs: bool
    ava_tls: bool
    start: str
    base: str | None


VARIANTS = {
    "full": Variant([], True, True, "filter", None),
    "no_lnfs": Variant(["filter.enabled=false"], False, True, "filter", None),
    "unsqueezed": Variant(["text.squeeze_tokens=0"], True, False, "text", "full"),
}
# module -> (row with it, row without it): the paper's direction is higher mAUC and lower FID with it
MODULES = {
    "disease adapter (DKIM)": ("full", "full without adapter"),
    "latent noise filtering (LNFS)": ("full", "no_lnfs"),
    "squeezed text tokens (AVA-TLS)": ("full", "unsqueezed"),
}


@dataclass
class Training:
    """One (variant, seed) of the table: where its run lives and, unless it exists, how to make it."""

    variant: str
    seed: int
    root: Path
    start: str
    copy_from: Path
    copy_stages: list[str]
    overrides: list[str] = field(default_factory=list)

    @property
    def generator(self) -> Path:
        return self.root / "diffusion" / "generator"

    def command(self, profile: str, user_overrides: list[str]) -> list[str]:
        sets = [*user_overrides, f"project.run_root={self.root}", f"project.seed={self.seed}", *self.overrides]
        return [sys.executable, "-m", "infra.launch", "--profile", profile, "--state", f"{self.root}-mlflow",
                *[a for s in sets for a in ("--set", s)], "--from", self.start, "--to", "diffusion"]  # fmt: skip


def plan(
    reference: Path, reference_seed: int, seeds: list[int], variants: list[str], root: Path,
    existing: dict[tuple[str, int], Path],
) -> list[Training]:  # fmt: skip
    """The runs of the table in training order: per seed, a variant before one that copies its stages."""

    def root_of(variant: str, seed: int) -> Path:
        if (variant, seed) in existing:
            return existing[(variant, seed)]
        return reference if variant == "full" and seed == reference_seed else root / f"{variant}-seed{seed}"

    runs: list[Training] = []
    for seed in seeds:
        for variant in sorted(variants, key=lambda v: VARIANTS[v].base is not None):
            spec = VARIANTS[variant]
            base = spec.base
            source = reference if base is None else root_of(base, seed)
            if base is not None and base not in variants and source != reference and (base, seed) not in existing:
                raise SystemExit(f"--variants: '{variant}' starts from its seed's '{base}' run; add '{base}'")
            copied = ["data"] if base is None else ["data", "filter"]
            runs.append(Training(variant, seed, root_of(variant, seed), spec.start, source, copied, spec.overrides))
    return runs


def train(run: Training, profile: str, user_overrides: list[str], log_dir: Path) -> None:
    """Make one variant's run (copy the stages it shares, then the launcher to the end of diffusion)."""
    if run.root == run.copy_from:
        raise SystemExit(f"{run.variant} seed {run.seed}: {run.root} has no generator and is the run it would copy")
    for stage in run.copy_stages:
        if not (run.root / stage).exists():
            if not (run.copy_from / stage).exists():
                raise SystemExit(f"{run.variant} seed {run.seed}: {run.copy_from / stage} is missing (made first?)")
            partial = run.root / f".{stage}.copying"  # a copy cut short is never taken for the stage
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(run.copy_from / stage, partial)
            partial.rename(run.root / stage)
    log = log_dir / f"table_ii_{run.variant}_seed{run.seed}.log"
    print(f"training {run.variant} seed {run.seed} in {run.root} (log {log})", flush=True)
    with log.open("w") as out:
        done = subprocess.run(run.command(profile, user_overrides), cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0 or not run.generator.is_dir():
        raise SystemExit(f"{run.variant} seed {run.seed}: training failed (exit {done.returncode}); see {log}")


def summarise(by_row: dict[str, dict[int, dict[str, Any]]], targets: np.ndarray, scores: dict, boot: int) -> dict:
    """Rows with mean and spread over seeds; modules with their per-seed paired differences and directions."""
    rows = {}
    for name, by_seed in by_row.items():
        auc = [r["mAUC"] for r in by_seed.values() if r["mAUC"] is not None]
        fid = [r["fid_domain"] for r in by_seed.values()]
        rows[name] = {
            "seeds": sorted(by_seed),
            "mAUC_mean": round(float(np.mean(auc)), 4) if auc else None,
            "mAUC_spread": round(float(np.ptp(auc)), 4) if auc else None,
            "fid_domain_mean": round(float(np.mean(fid)), 3),
            "fid_domain_spread": round(float(np.ptp(fid)), 3),
            "by_seed": {str(s): r for s, r in sorted(by_seed.items())},
        }
    modules = {}
    for module, (with_it, without) in MODULES.items():
        both = set(by_row.get(with_it, {})) & set(by_row.get(without, {}))
        seeds = sorted(s for s in both if None not in (by_row[with_it][s]["mAUC"], by_row[without][s]["mAUC"]))
        if not seeds:
            continue
        per_seed = {}
        for s in seeds:
            a, b = by_row[without][s], by_row[with_it][s]
            per_seed[str(s)] = {
                "mAUC_gain": round(b["mAUC"] - a["mAUC"], 4),
                "mAUC_gain_paired": paired_difference(targets, scores[(without, s)], scores[(with_it, s)], boot),
                "fid_domain_change": round(b["fid_domain"] - a["fid_domain"], 3),
            }
        modules[module] = {
            "rows": [with_it, without],
            "seeds": seeds,
            "by_seed": per_seed,
            "paper_direction_mAUC_every_seed": all(v["mAUC_gain"] > 0 for v in per_seed.values()),
            "paper_direction_fid_every_seed": all(v["fid_domain_change"] < 0 for v in per_seed.values()),
        }
    return {"rows": rows, "modules": modules}


def _existing(values: list[str]) -> dict[tuple[str, int], Path]:
    out = {}
    for value in values:
        try:
            key, path = value.split("=", 1)
            variant, seed = key.split(":")
            out[(variant, int(seed))] = Path(path).resolve()
        except ValueError:
            raise SystemExit(f"--existing: expected VARIANT:SEED=RUN_ROOT, got '{value}'") from None
        if variant not in VARIANTS:
            raise SystemExit(f"--existing: unknown variant '{variant}'; variants are {', '.join(VARIANTS)}")
    return out


def main() -> None:
    parser = run_arguments(__doc__.splitlines()[0], "small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (project.seed)")
    parser.add_argument("--reference-seed", type=int, default=0, help="the project.seed of the reference run")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--root", type=Path, default=None, help="where new variant runs go (default: <run>-table2)")
    parser.add_argument("--existing", action="append", default=[], metavar="VARIANT:SEED=RUN_ROOT",
                        help="a variant run made earlier the same way (repeatable)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the profile's eval/sampling)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance (default: the profile's eval/sampling)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--dry-run", action="store_true", help="print the runs to make and their commands, then stop")
    args = parser.parse_args()
    user = list(args.overrides)  # what every run is made with; the table sets root and seed per run
    for given in user:
        if given.split("=", 1)[0].strip() in ("project.seed", "project.run_root"):
            raise SystemExit(
                f"--set {given}: the table sets this per run; use --seeds, --reference-seed, --run, --root"
            )
    args.overrides = [*user, f"project.seed={args.reference_seed}"]  # scoring: the reference run's own requests
    cfg, reference = open_run(args)
    reference = reference.resolve()
    needed = [reference / "diffusion" / "generator", reference / "eval" / "classifier",
              reference / "filter" / "manifest.parquet"]  # fmt: skip
    if missing := [str(p) for p in needed if not p.exists()]:
        raise SystemExit(f"--run {reference}: not a finished reference run (missing {', '.join(missing)})")
    existing = _existing(args.existing)
    if unused := [f"{v}:{s}" for v, s in existing if v not in args.variants or s not in args.seeds]:
        raise SystemExit(f"--existing {', '.join(unused)}: not among --variants {args.variants} / --seeds {args.seeds}")
    root = (args.root or reference.with_name(reference.name + "-table2")).resolve()
    runs = plan(reference, args.reference_seed, args.seeds, args.variants, root, existing)
    for run in runs:
        todo = "to train: " + " ".join(run.command(args.profile, user))
        state = "exists" if run.generator.is_dir() else todo
        print(f"{run.variant} seed {run.seed}: {run.root} ({state})", flush=True)
    if args.dry_run:
        return
    root.mkdir(parents=True, exist_ok=True)
    for run in runs:
        if not run.generator.is_dir():
            train(run, args.profile, user, root)

    items, targets, _, classifier = eval_requests(cfg, reference, "test")
    _, real, real_feats, floor = real_reference(cfg, reference, "test", classifier)
    # one sampler for every row, the profile's (a bundle keeps the default of the day it was trained)
    steps = args.steps or cfg.eval.steps or cfg.sampling.steps
    guidance = next(g for g in (args.guidance, cfg.eval.guidance, cfg.sampling.guidance) if g is not None)
    by_row: dict[str, dict[int, dict[str, Any]]] = {}
    scores: dict[tuple[str, int], np.ndarray] = {}
    per_report = cfg.eval.images_per_report
    work = Path(tempfile.mkdtemp(prefix="table-ii-"))
    for run in runs:
        model = Generator(run.generator)
        rows = [(run.variant, model)]
        if model.has_adapter:
            bare = bundle_without_adapter(run.generator, str(work / f"{run.variant}-{run.seed}"), work)[0]
            rows.append((f"{run.variant} without adapter", Generator(bare)))
        variant = VARIANTS[run.variant]
        for name, generator in rows:
            result, scores[(name, run.seed)], _ = score(
                generator, items, targets, classifier, real_feats, per_report, steps, guidance, args.bootstrap
            )
            result.update(run=str(run.root), lnfs=variant.lnfs, ava_tls=variant.ava_tls, dkim=generator.has_adapter)
            by_row.setdefault(name, {})[run.seed] = result
            shown = {k: result[k] for k in ("mAUC", "mAUC_ci95", "fid_domain")}
            print(f"{name} seed {run.seed}: {json.dumps(shown)}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    record = {
        **record_header("table_ii", "python benchmarks/table_ii.py " + " ".join(sys.argv[1:]), profile=args.profile),
        "reference_run": str(reference),
        "requests": {"split": "test", "images": len(items), "real_images_for_fid": len(real)},
        "sampler": {"steps": steps, "guidance": guidance},
        "fid_domain_floor": floor,
        "training_seeds": args.seeds,
        **summarise(by_row, targets, scores, args.bootstrap),
    }
    out = write_result(record, args.out, f"table_ii_{args.profile}")
    for module, m in record["modules"].items():
        print(f"{module}: mAUC {m['paper_direction_mAUC_every_seed']}, FID {m['paper_direction_fid_every_seed']} "
              f"(paper's direction in every seed)")  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
