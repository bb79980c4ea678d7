"""``diffcxr eval``: the paper's measurements of a generator as a command."""

from __future__ import annotations

import argparse
from typing import Any

from diffcxr.cliargs import Groups, add_stage_flags, command, load, print_json, tracked
from diffcxr.errors import DiffCXRError
from diffcxr.stages import StageCall


def parse_variant(text: str) -> dict[str, Any]:
    """``NAME:FLAGS=URI`` (FLAGS: ``none`` or a '+'-joined subset of lnfs, ava_tls, dkim) → an EvalVariant dict."""
    head, sep, model = text.partition("=")
    name, _, flags = head.partition(":")
    if not sep or not name or not model or not flags:
        raise DiffCXRError(
            f"--variant '{text}': expected NAME:FLAGS=URI, e.g. 'baseline:none=runs/a/diffusion/generator'"
        )
    given = set() if flags == "none" else set(flags.split("+"))
    unknown = given - {"lnfs", "ava_tls", "dkim"}
    if unknown:
        raise DiffCXRError(f"--variant '{text}': unknown flags {sorted(unknown)}; use none or lnfs+ava_tls+dkim")
    return {"name": name, "model": model, **{f: f in given for f in ("lnfs", "ava_tls", "dkim")}}


def cmd_eval(args: argparse.Namespace) -> int:
    """FID, per-disease AUC (mAUC), GFLOPs, latency, the paper's tables II/IV/V/VI and an HTML report

    Evaluate a generator: generate for held-out (test split) reports on a Ray Data actor pool, score images with the
    reference classifier (torchxrayvision densenet121-res224-all when its weights are given, else a DenseNet-121
    trained here on Ray Train), compute per-disease AUC, mAUC, domain FID with its real-vs-real floor, Inception FID
    when its weights exist, GFLOPs, s/image and images/s, the ablation (the model without its adapter and any
    --variant) and the downstream experiment, and write report.html, results.json and tables.json to --out. With
    --track everything goes to MLflow."""
    from services.eval import stage

    cfg = load(args)
    if args.variant:
        from diffcxr.config import EvalVariant

        variants = [*cfg.eval.variants, *(EvalVariant(**parse_variant(v)) for v in args.variant)]
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"variants": variants})})
    inputs = {k: v for k, v in (("manifest", args.manifest), ("model", args.model)) if v}
    tracker, context = tracked(cfg, "eval", args.track)
    with context:
        outcome = stage.run(cfg, StageCall(tracker, inputs, args.out, args.force))
    results = outcome.get("summary", {})
    main = results.get("models", {}).get("model", {})
    print_json(
        {
            **{k: v for k, v in outcome.items() if k not in ("summary", "key")},
            "classifier": results.get("classifier", {}).get("kind"),
            "mAUC": main.get("mAUC", results.get("mAUC")),
            "fid_domain": main.get("fid_domain", results.get("fid_domain")),
            "fid_floor": results.get("fid_floor"),
            "fid_inception": main.get("fid_inception"),
            "calibration": results.get("calibration"),
        }
    )
    return 0


def add_commands(groups: Groups) -> None:
    """This service's subcommands on the root parser's ``groups``."""
    p = command(groups, "eval", cmd_eval)
    p.add_argument("--model", help="generator: bundle folder/URI or models:/NAME@ALIAS (default: the run's bundle)")
    p.add_argument("--manifest", help="manifest URI (default: <run_root>/filter/manifest.parquet)")
    p.add_argument("--out", help="output folder URI (default: <run_root>/eval/)")
    p.add_argument(
        "--variant",
        action="append",
        metavar="NAME:FLAGS=URI",
        help="another trained variant for the ablation table; FLAGS = none or lnfs+ava_tls+dkim (repeatable)",
    )
    add_stage_flags(p, "log metrics, tables and the report to MLflow", "re-run even if the stage is current")
