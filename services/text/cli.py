"""``diffcxr text train|embed``: the report encoder and its squeeze as commands."""

from __future__ import annotations

import argparse

from diffcxr.cliargs import (
    Groups,
    add_config_args,
    add_stage_flags,
    command,
    group,
    load,
    print_json,
    read_report_lines,
    tracked,
)
from diffcxr.errors import DiffCXRError
from diffcxr.stages import StageCall

TEXT_GROUP = """the report encoder and its information squeeze (AVA-TLS): train on Ray Train, embed on Ray Data

Train the squeeze contrastively (symmetric InfoNCE, Ray Train), register it as diffcxr-text, and write the squeezed
report / disease-sentence / unconditional embeddings the denoiser trains on."""


def cmd_text_train(args: argparse.Namespace) -> int:
    """train (or resume) the squeeze, evaluate retrieval on held-out pairs, register with --track

    Train on the manifest's kept train-split pairs with a TorchTrainer (ray.num_workers workers). Checkpoints every
    text.checkpoint_every steps under <out>/ray/; re-running the same command resumes from the last one. Writes
    <out>/model/ (the bundle), summary.json and figures/loss.png."""
    from services.text import stage

    cfg = load(args)
    inputs = {"manifest": args.manifest} if args.manifest else None
    tracker, context = tracked(cfg, "text", args.track)
    with context:
        if args.embed:
            outcome = stage.run(cfg, StageCall(tracker, inputs, args.out, args.force), num_workers=args.workers)
        else:
            outcome = stage.run_train(cfg, StageCall(tracker, inputs, args.out), num_workers=args.workers)
    print_json({k: v for k, v in outcome.items() if k != "key"})
    return 0


def cmd_text_embed(args: argparse.Namespace) -> int:
    """squeezed embeddings of a manifest (Ray Data) or of given reports

    With --manifest (default: the pipeline's): write embeddings/ (reports, disease sentences, the unconditional
    context) for every kept row. With TEXT arguments or --reports FILE (one report per line, UTF-8): print shapes
    and truncation, and save an (N, K, d) .npy with --out. Empty reports get the unconditional context; long reports
    keep their beginning."""
    from services.text import stage

    cfg = load(args)
    if not args.model:
        raise DiffCXRError("--model is required: a bundle folder/URI or models:/diffcxr-text@ALIAS")
    model_uri = stage.resolve_model(args.model)
    if not args.text and args.reports is None:
        print_json(stage.run_embed(cfg, model_uri, args.manifest, args.out))
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
    print_json(info)
    return 0


def add_commands(groups: Groups) -> None:
    """This service's subcommands on the root parser's ``groups``."""
    sub = group(groups, "text", TEXT_GROUP)
    p = command(sub, "train", cmd_text_train)
    p.add_argument("--workers", type=int, help="Ray Train workers (default: ray.num_workers)")
    p.add_argument("--manifest", help="input manifest URI (default: the filter's, else the data stage's)")
    p.add_argument("--out", help="output folder URI (default: <run_root>/text/)")
    p.add_argument("--embed", action="store_true", help="also write embeddings: the whole pipeline stage")
    track = "log to MLflow and register diffcxr-text (alias tracking.candidate_alias; the register stage promotes it)"
    add_stage_flags(p, track, "with --embed: re-run even if the stage is current")
    p = command(sub, "embed", cmd_text_embed)
    p.add_argument("text", nargs="*", default=None, help="report text(s) to embed")
    p.add_argument("--model", help="bundle folder/URI or models:/diffcxr-text@ALIAS (or /VERSION)")
    p.add_argument("--manifest", help="manifest URI whose kept rows to embed")
    p.add_argument("--reports", help="file with one report per line ('-' = stdin)")
    p.add_argument("--out", help="embeddings folder URI (manifest mode) or .npy URI (text mode)")
    add_config_args(p)
