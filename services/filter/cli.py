"""``diffcxr filter``: Latent Noise Filtering as a command (and ``python -m services.filter``)."""

from __future__ import annotations

import argparse

from diffcxr.cliargs import Groups, add_stage_flags, command, load, print_json, tracked
from diffcxr.stages import StageCall


def cmd_filter(args: argparse.Namespace) -> int:
    """Latent Noise Filtering (LNFS) on Ray Data: encode images, score them, drop the noisy ones

    Encode a manifest's kept images with the frozen autoencoder (Ray Data actor pool), score them with K-means →
    latent U-Net autoencoder → discriminator, and write latents/, scores.parquet, the filtered manifest.parquet
    and figures/ under --out. Runs in a Ray job as `python -m services.filter ...`."""
    from services.filter import stage

    cfg = load(args)
    inputs = {"manifest": args.manifest} if args.manifest else None
    tracker, context = tracked(cfg, "filter", args.track)
    with context:
        outcome = stage.run(cfg, StageCall(tracker, inputs, args.out, args.force))
    print_json({k: v for k, v in outcome.items() if k != "key"})
    return 0


def add_commands(groups: Groups) -> None:
    """This service's subcommands on the root parser's ``groups``."""
    p = command(groups, "filter", cmd_filter)
    p.add_argument("--manifest", help="input manifest URI (default: <run_root>/data/manifest.parquet)")
    p.add_argument("--out", help="output folder URI (default: <run_root>/filter/, with stage skipping)")
    add_stage_flags(p, "log params, metrics and figures to MLflow", "re-run even if the stage is current")
