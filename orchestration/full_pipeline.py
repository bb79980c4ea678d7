"""Diff-CXR end to end: data → filter → text → diffusion (U-ViT + adapter) → eval → register.

Run it as a Ray job (``ray job submit --working-dir . -- python orchestration/full_pipeline.py``)
or in-process (``diffcxr pipeline run``). One MLflow parent run holds a nested
run per stage; a stage whose inputs and config are unchanged since its last
successful run is skipped (its marker under ``<run_root>/<stage>/``), so a
re-run after a crash resumes where it stopped. The last stage is the promotion
gate: the new generator becomes ``champion`` only when its evaluation beats the
current champion's, else ``challenger`` (the reason is on the model version).
Progress lines carry an ETA; the parent run ends with the row accounting
(kept + filtered + quarantined = total).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script by `ray job submit`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.config import DiffCXRConfig, add_config_arguments, load_config
from diffcxr.env import apply_defaults
from diffcxr.errors import DataError, DiffCXRError, TrackingError
from diffcxr.stages import StageCall, StageDir
from diffcxr.storage import configure_s3
from diffcxr.tracking import Tracker, default_tracking_uri, is_unreachable
from orchestration.accounting import row_accounting
from orchestration.progress import Progress
from orchestration.stores import check_stores

log = logging.getLogger("diffcxr.pipeline")

#: What feeds what: each stage's inputs by name, as (the stage that produces it, that stage's output). FOLDER is
#: a producer's whole output folder (the gate reads its markers: what was registered and evaluated). This table
#: is the pipeline's graph; every stage runs as ``services.<stage>.stage.run(cfg, tracker, inputs, force=...)``.
FOLDER = "folder"
WIRING: dict[str, dict[str, tuple[str, str]]] = {
    "data": {},
    "filter": {"manifest": ("data", "manifest")},
    "text": {"manifest": ("filter", "manifest")},
    "diffusion": {
        "manifest": ("filter", "manifest"),
        "latents": ("filter", "latents"),
        "embeddings": ("text", "embeddings"),
        "text_model": ("text", "model"),
    },
    "eval": {"manifest": ("filter", "manifest"), "model": ("diffusion", "generator")},
    "register": {"text": ("text", FOLDER), "diffusion": ("diffusion", FOLDER), "eval": ("eval", FOLDER)},
}
#: Every stage, in order.
STAGES: list[str] = list(WIRING)


def stage_inputs(name: str, cfg: DiffCXRConfig, produced: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The URIs ``name`` reads: from the producers' results in this run, else from their markers in the run
    folder (a run started ``--from`` a later stage); a producer that never completed there is named."""
    inputs = {}
    for input_name, (producer, output) in WIRING[name].items():
        folder = StageDir(cfg.run_root, producer)
        if output == FOLDER:
            inputs[input_name] = folder.uri
            continue
        outputs = produced.get(producer) or (folder.marker() or {}).get("outputs", {})
        if output not in outputs:
            raise DataError(
                f"stage '{name}' reads the {producer} stage's {output}, and {producer} has not completed under "
                f"{cfg.run_root}: run it first (--from {producer})"
            )
        inputs[input_name] = outputs[output]
    return inputs


def run_stage(name: str, cfg: DiffCXRConfig, tracker: Tracker, inputs: dict[str, str], force: bool) -> dict[str, Any]:
    """One stage through its service's uniform entry point."""
    stage = importlib.import_module(f"services.{name}.stage")
    return stage.run(cfg, StageCall(tracker, inputs, force=force))


def select_stages(only: str | None, start: str | None, stop: str | None = None) -> list[str]:
    """The stages to run: one (``--only``), or from ``start`` up to and including ``stop``."""
    names = list(STAGES)
    for given, flag in ((only, "--only"), (start, "--from"), (stop, "--to")):
        if given is not None and given not in STAGES:
            raise DiffCXRError(f"{flag}: unknown stage '{given}'; stages are {', '.join(names)}")
    if only:
        return [only]
    first = names.index(start) if start else 0
    last = names.index(stop) if stop else len(names) - 1
    if last < first:
        raise DiffCXRError(f"--to: stage '{stop}' comes before --from stage '{start}'")
    return names[first : last + 1]


def _tracking_failure(exc: BaseException, tracker: Tracker, stage: str | None, cfg: DiffCXRConfig) -> TrackingError:
    """The error a person sees when MLflow went away mid-run: where, after what, and that nothing is lost."""
    where = f"during stage '{stage}'" if stage else "while opening the pipeline run"
    return TrackingError(
        f"MLflow at {tracker.tracking_uri} became unreachable {where} and did not come back within "
        f"{cfg.tracking.retries} retries (backoff from {cfg.tracking.backoff_s:g} s): {type(exc).__name__}. Nothing "
        f"is lost: finished stages, their outputs and training checkpoints are kept under {cfg.run_root}; re-run "
        "the same command once the server is back and it resumes where it stopped"
    )


def _log_rows(tracker: Tracker, cfg: DiffCXRConfig) -> dict[str, Any] | None:
    """Row accounting of the run folder in the parent run (metrics rows.*, artefact rows.json)."""
    rows = row_accounting(cfg.run_root)
    if rows is None:
        return None
    tracker.log_metrics({f"rows.{k}": rows[k] for k in ("total", "kept", "filtered", "quarantined")})
    tracker.set_tags({"rows.balanced": str(rows["balanced"] and not rows["lost_between_stages"]).lower()})
    tracker.log_dict(rows, "rows.json")
    return rows


def cluster_nodes(cfg: DiffCXRConfig) -> int:
    """Alive nodes of the Ray cluster this run joins; 1 when it will start its own local Ray."""
    import os

    import ray

    from diffcxr.raycluster import init_ray

    joins = cfg.ray.address or any(os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_JOB_ID", "RAY_SUBMISSION_ID"))
    if not joins and not ray.is_initialized():
        return 1
    init_ray(cfg)
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def run_pipeline(cfg: DiffCXRConfig, stages: list[str], force: bool = False) -> dict[str, Any]:
    """Run ``stages`` in order under one MLflow parent run; returns per-stage outcomes.

    MLflow is checked before any work (:func:`check_reachable` in the tracker); a server lost mid-run is
    retried with backoff (``tracking.retries``) and then reported as a :class:`TrackingError` naming the
    stage, with every finished output and checkpoint left in storage for the re-run.
    """
    import torch

    configure_s3(cfg.storage.s3_endpoint, cfg.storage.s3_region)
    torch.set_num_threads(cfg.ray.main_threads)  # the driver scores between Ray phases, alone on its cores
    for line in check_stores(cfg, cfg.tracking.uri or default_tracking_uri(), cluster_nodes(cfg)):
        print(line, flush=True)
    tracker = Tracker.from_config(cfg)
    outcomes: dict[str, Any] = {}
    tags = {"diffcxr.profile": cfg.project.profile, "diffcxr.run_root": cfg.run_root}
    progress = Progress(cfg.run_root, cfg.project.profile, stages)
    current: str | None = None
    try:
        with tracker.run(f"pipeline-{cfg.project.profile}", tags={**tags, "diffcxr.stage": "pipeline"}) as parent:
            outcomes["mlflow_run_id"] = parent.info.run_id
            tracker.log_config(cfg)
            total = len(stages)
            for index, name in enumerate(stages, start=1):
                current, prefix = name, f"[{index}/{total}] {name}"
                started = time.time()
                with progress.stage(prefix, name), tracker.run(name, nested=True,
                                                               tags={**tags, "diffcxr.stage": name}):  # fmt: skip
                    result = run_stage(name, cfg, tracker, stage_inputs(name, cfg, outcomes), force)
                    seconds = time.time() - started
                    tracker.log_metrics({f"{name}.seconds": seconds})
                    tracker.set_tags({"diffcxr.skipped": str(result.get("skipped", False)).lower()})
                skipped = bool(result.get("skipped"))
                if not skipped:
                    progress.record(name, seconds)
                tracker.log_metrics({f"stage_seconds.{name}": seconds})  # "done" only once all of it is tracked
                status = "skipped (current)" if skipped else "done"
                print(f"{prefix}: {status} in {seconds:.1f} s", flush=True)
                outcomes[name] = {"status": status, "seconds": round(seconds, 1),
                                  **{k: v for k, v in result.items() if k != "summary"}}  # fmt: skip
            current = None
            outcomes["rows"] = _log_rows(tracker, cfg)
    except DiffCXRError:
        raise
    except Exception as exc:
        if is_unreachable(exc):
            raise _tracking_failure(exc, tracker, current, cfg) from None
        raise
    outcomes["tracking_uri"] = tracker.tracking_uri
    return outcomes


def _promotion(uri: str) -> dict[str, Any]:
    import json

    from diffcxr import storage

    return json.loads(storage.read_text(uri))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="full_pipeline.py", description=__doc__.splitlines()[0])
    add_config_arguments(parser, "--config", "-p", "--profile")
    parser.add_argument("--only", help=f"run just this stage ({', '.join(STAGES)})")
    parser.add_argument("--from", dest="start", help="start at this stage")
    parser.add_argument("--to", dest="stop", help="stop after this stage")
    parser.add_argument("--force", action="store_true", help="re-run the selected stages even if current")
    return parser


def _stop_requested(signum: int, frame: object) -> None:
    """``ray job stop`` sends SIGTERM: unwind like Ctrl-C, so the MLflow runs are closed, not left running."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    apply_defaults()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_requested)
    try:
        cfg = load_config(args.profile, args.overrides)
        outcomes = run_pipeline(cfg, select_stages(args.only, args.start, args.stop), force=args.force)
    except DiffCXRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nstopped: finished stages and checkpoints are kept; run the same command to resume", file=sys.stderr)
        return 130
    print("\nDone. Where to look:")
    print(f"  MLflow:     {outcomes['tracking_uri']} (run {outcomes['mlflow_run_id']})")
    print(f"  run folder: {cfg.run_root}")
    times = ", ".join(
        f"{n} {o['seconds']:.0f} s" for n, o in outcomes.items() if isinstance(o, dict) and "seconds" in o
    )
    print(f"  stage times: {times}")
    rows = outcomes.get("rows")
    if rows:
        balance = "balanced" if rows["balanced"] and not rows["lost_between_stages"] else "NOT BALANCED"
        print(f"  rows:       {rows['total']} = {rows['kept']} kept + {rows['filtered']} filtered + "
              f"{rows['quarantined']} quarantined ({balance}; reasons in MLflow rows.json)")  # fmt: skip
    if "manifest" in outcomes.get("data", {}):
        print(f"  manifest:   {outcomes['data']['manifest']}  (diffcxr data summary <uri>)")
    if "embeddings" in outcomes.get("text", {}):
        print(f"  text model: {outcomes['text']['model']}")
        print(f"  embeddings: {outcomes['text']['embeddings']}")
    if "generator" in outcomes.get("diffusion", {}):
        print(f"  generator:  {outcomes['diffusion']['generator']}")
        print("              try: diffcxr generate --report 'Small left pleural effusion.' --seed 7 --out cxr.png")
        print(f"              serve: diffcxr serve --model {outcomes['diffusion']['generator']}  (docs/SERVING.md)")
    if "report" in outcomes.get("eval", {}):
        print(f"  evaluation: {outcomes['eval']['report']}  (open in a browser; numbers in results.json and MLflow)")
        print(f"  samples:    {outcomes['eval']['report'].rsplit('/', 1)[0]}/figures/grid.png")
    register = outcomes.get("register", {})
    if "promotion" in register:
        promotion = _promotion(register["promotion"])
        print(f"  registry:   {promotion['model']} version {promotion['version']} is @{promotion['alias']}: "
              f"{promotion['reason']}")  # fmt: skip
        uri = f"models:/{promotion['model']}@{promotion['alias']}"
        if promotion.get("promoted"):
            print(f"              serve it: diffcxr serve --model {uri}")
        else:
            print(f"              not promoted; to try it anyway: diffcxr serve --model {uri}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
