"""``diffcxr filter``: Latent Noise Filtering as a command (and ``python -m services.filter``)."""

from __future__ import annotations

import argparse

from diffcxr.cliargs import Groups, add_stage_flags, command, load, print_json


def cmd_filter(args: argparse.Namespace) -> int:
    """Latent Noise Filtering (LNFS) on Ray Data: encode images, score them, drop the noisy ones

    Encode a manifest's kept images with the frozen autoencoder (Ray Data actor pool), score them with K-means →
    latent U-Net autoencoder → discriminator, and write latents/, scores.parquet, the filtered manifest.parquet
    and figures/ under --out. Runs in a Ray job as `python -m services.filter ...`."""
    from services.filter import stage

    cfg = load(args)
    tracker = None
    if args.track:
        from diffcxr.tracking import Tracker

        tracker = Tracker.from_config(cfg)
        with tracker.run("filter", tags={"diffcxr.stage": "filter", "diffcxr.profile": cfg.project.profile}):
            outcome = stage.run(cfg, tracker, args.manifest, args.out, force=args.force)
    else:
        outcome = stage.run(cfg, None, args.manifest, args.out, force=args.force)
    print_json({k: v for k, v in outcome.items() if k != "key"})
    return 0


def add_commands(groups: Groups) -> None:
    """This service's subcommands on the root parser's ``groups``."""
    p = command(groups, "filter", cmd_filter)
    p.add_argument("--manifest", help="input manifest URI (default: <run_root>/data/manifest.parquet)")
    p.add_argument("--out", help="output folder URI (default: <run_root>/filter/, with stage skipping)")
    add_stage_flags(p, "log params, metrics and figures to MLflow", "re-run even if the stage is current")
