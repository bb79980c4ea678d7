"""``diffcxr diffusion train``, ``diffcxr generate`` and ``diffcxr flops``."""

from __future__ import annotations

import argparse

from diffcxr import cliargs
from diffcxr.cliargs import Groups, command, group
from diffcxr.errors import DiffCXRError
from diffcxr.stages import StageCall

DIFFUSION_GROUP = """the U-ViT denoiser and the disease-knowledge adapter: two-stage training on Ray Train

Stage 1 trains the U-ViT on (latent, squeezed report) pairs; stage 2 freezes it and trains the adapter on
disease-sentence hints. Checkpoints under <out>/ray/ (a re-run resumes), EMA weights in <out>/uvit/ and
<out>/adapter/, the generator bundle in <out>/generator/."""


def cmd_diffusion_train(args: argparse.Namespace) -> int:
    """train (or resume) the U-ViT then the adapter; build the generator; register with --track

    Inputs default to the run folder's filter (manifest, latents) and text (embeddings, model) outputs. With
    --track: MLflow metrics, preview grids every diffusion.sample_every steps, and the registered models
    diffcxr-uvit, diffcxr-adapter and diffcxr-generator (alias tracking.candidate_alias until the register stage
    promotes them)."""
    from services.diffusion import stage

    cfg = cliargs.load(args)
    inputs = {k: v for k, v in (("manifest", args.manifest), ("latents", args.latents),
              ("embeddings", args.embeddings), ("text_model", args.text_model)) if v}  # fmt: skip
    tracker, context = cliargs.tracked(cfg, "diffusion", args.track)
    with context:
        call = StageCall(tracker, inputs, args.out, args.force)
        outcome = stage.run(cfg, call, num_workers=args.workers)
    summary = outcome.get("summary", {})
    cliargs.print_json(
        {
            **{k: v for k, v in outcome.items() if k not in ("summary", "key")},
            "training_pairs": summary.get("training_pairs"),
            "registered": summary.get("registered"),
        }
    )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """report text → synthetic chest X-ray PNG (marked synthetic), seeded

    Labels the report, builds its disease sentence, encodes and squeezes both, samples with DPM-Solver++ and
    classifier-free guidance, decodes. The same report, seed, model, steps and guidance give the same image for the
    same precision, thread count and CPU instruction set (each PNG records all three). Report text is never written
    into the PNG."""
    from diffcxr import storage
    from diffcxr.bundle import resolve_bundle
    from services.diffusion.generator import Generator

    cfg = cliargs.load(args)
    reports = list(args.report or []) if args.reports is None else cliargs.read_report_lines(args.reports)
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
    generator = Generator(resolve_bundle(model, tracker), precision=args.precision)
    images = generator.generate(reports, seeds, steps=args.steps, guidance=args.guidance, sentences=args.sentence)
    outs = [args.out] if len(images) == 1 else [storage.join(args.out, f"{i:04d}_seed{im.seed}.png")
                                                for i, im in enumerate(images)]  # fmt: skip
    provenance = generator.provenance()
    for image, out in zip(images, outs, strict=True):
        storage.write_bytes(out, image.png(provenance))
    cliargs.print_json(
        [
            {
                "out": out,
                "seed": im.seed,
                "disease_sentence": im.disease_sentence,
                "steps": im.steps,
                "guidance": im.guidance,
                "precision": im.runtime["precision"],
            }
            for im, out in zip(images, outs, strict=True)
        ]  # fmt: skip
    )
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    """GFLOPs of the U-ViT (+ adapter) in the paper's thop convention, and full FLOPs

    Counts one forward at batch 1 for the profile's denoiser: thop-convention GMACs (Linear + Conv MACs, norm layers
    as thop counts them, attention matmuls not counted) and the full FLOPs of torch.utils.flop_counter; with the
    table at 32/77/128/256 context tokens next to the paper's Table III."""
    from services.diffusion.flops import table

    cfg = cliargs.load(args)
    cliargs.print_json(table(cfg, tokens=args.tokens, adapter=not args.no_adapter))
    return 0


def add_commands(groups: Groups) -> None:
    """This service's subcommands on the root parser's ``groups``."""
    sub = group(groups, "diffusion", DIFFUSION_GROUP)
    p = command(sub, "train", cmd_diffusion_train)
    p.add_argument("--manifest", help="filtered manifest URI (default: <run_root>/filter/manifest.parquet)")
    p.add_argument("--latents", help="latents folder URI (default: <run_root>/filter/latents)")
    p.add_argument("--embeddings", help="embeddings folder URI (default: <run_root>/text/embeddings)")
    p.add_argument("--text-model", help="text model bundle URI (default: <run_root>/text/model)")
    p.add_argument("--out", help="output folder URI (default: <run_root>/diffusion/)")
    p.add_argument("--workers", type=int, help="Ray Train workers (default: ray.num_workers)")
    cliargs.add_stage_flags(p, "log to MLflow and register the models", "re-run even if the stage is current")

    p = command(groups, "generate", cmd_generate)
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
    p.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"),
        help="denoiser and decoder number format (default: the bundle's, auto = bf16 only where the hardware has "
        "it and the quality check allowed it, else fp32)",
    )  # fmt: skip
    cliargs.add_config_args(p)

    p = command(groups, "flops", cmd_flops)
    p.add_argument("--tokens", type=int, help="context tokens (default: the profile's text.squeeze_tokens)")
    p.add_argument("--no-adapter", action="store_true", help="count the U-ViT alone")
    cliargs.add_config_args(p)
