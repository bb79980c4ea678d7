"""The text stage: train the squeeze on Ray Train, register ``diffcxr-text``, write embeddings.

Outputs under ``out`` (default ``<run_root>/text/``): ``init/`` (the encoder
before training: every worker and the "random squeezer" baseline load it),
``ray/`` (Ray Train checkpoints; a re-run resumes from them), ``model/`` (the
trained bundle), ``embeddings/`` (see :mod:`services.text.embed`),
``figures/loss.png`` and ``summary.json`` (held-out retrieval and sentence AUC
of the trained and the untrained encoder, truncation counts, throughput).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from diffcxr import manifest, storage
from diffcxr.config import DiffCXRConfig
from diffcxr.constants import CHEXPERT_LABELS
from diffcxr.contracts.embeddings import read_table, sentence_id
from diffcxr.errors import ConfigError, DataError
from diffcxr.figures import png_bytes, pyplot
from diffcxr.labeling.sentences import NO_FINDING_SENTENCE
from diffcxr.modelrefs import resolve_model_folder
from diffcxr.raycluster import init_ray
from diffcxr.stages import DEFAULT_CALL, StageCall, StageDir, content_key
from diffcxr.tracking import Tracker
from services.text.data import states_of, text_is_frozen, tower_pass
from services.text.embed import embed_with_ray, embedding_items, unconditional_of, write_unconditional
from services.text.evaluate import evaluate, features_from_states, load_pairs, tower_states
from services.text.model import ReportEncoder
from services.text.train import load_partial_state, train

log = logging.getLogger(__name__)
STAGE = "text"
MODEL_NAME = "diffcxr-text"
BUNDLE_DIR = "text_model"


def default_inputs(cfg: DiffCXRConfig) -> dict[str, str]:
    """What the text stage reads when run alone: the filter stage's manifest when it exists, else the data
    stage's (in the pipeline, the orchestrator wires the filter's)."""
    filtered = StageDir(cfg.run_root, "filter").path("manifest.parquet")
    manifest_uri = filtered if storage.exists(filtered) else StageDir(cfg.run_root, "data").path("manifest.parquet")
    return {"manifest": manifest_uri}


def stage_key(cfg: DiffCXRConfig, manifest_bytes: bytes) -> str:
    config = cfg.to_dict()
    digest = hashlib.sha256(manifest_bytes).hexdigest()[:16]
    return content_key(STAGE, config["text"], config["data"]["image_size"], cfg.project.seed, digest)


def kept_rows(table: Any) -> list[dict[str, Any]]:
    rows = manifest.kept_rows(table)
    if not rows:
        raise DataError("the manifest has no kept rows to train or embed")
    return rows


# --------------------------------------------------------------------------- train


def check_trainable(cfg: DiffCXRConfig) -> None:
    """Refuse a setup that would train against random frozen towers (fails before any cluster time)."""
    if cfg.text.train_parts == "squeezer" and not cfg.text.encoder_weights:
        raise ConfigError(
            "text.train_parts 'squeezer' trains only the squeeze and needs pretrained towers: set "
            "text.encoder_weights (e.g. BiomedCLIP's open_clip_pytorch_model.bin), or train more parts "
            "(text.train_parts=squeezer+heads, squeezer+text or all)"
        )


def make_init_bundle(cfg: DiffCXRConfig, uri: str, key: str) -> str:
    """The encoder before training, written once per stage key (a resumed run must start from the same one)."""
    marker = storage.join(uri, "_key")
    if storage.exists(marker) and storage.read_text(marker) == key:
        return uri
    torch.manual_seed(cfg.project.seed)
    model = ReportEncoder.from_config(cfg.text, cfg.data.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = model.save_bundle(Path(tmp, BUNDLE_DIR))
        storage.put_folder(folder, uri)
    storage.write_text(marker, key)
    return uri


def training_rows(cfg: DiffCXRConfig, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The kept train-split rows with images; refused before any cluster time when too few for a batch."""
    train_rows = [r for r in rows if r["split"] == "train" and r["image_uri"]]
    if not train_rows:
        raise DataError("the manifest has no kept train-split rows with images")
    if len(train_rows) < cfg.text.batch_size:
        raise DataError(f"text.batch_size {cfg.text.batch_size} is larger than the {len(train_rows)} training pairs; "
                        "lower it")  # fmt: skip
    return train_rows


def train_text(
    cfg: DiffCXRConfig,
    rows: list[dict[str, Any]],
    out: str,
    key: str,
    tracker: Tracker | None = None,
    num_workers: int | None = None,
    shared: Any | None = None,
) -> dict[str, Any]:
    """Train on the kept train-split pairs; write ``model/``; return the outcome (model included).
    ``shared``: the stage's :func:`~services.text.data.tower_pass`, whose train rows are the pairs."""
    from services.text.data import train_pairs, training_dataset

    train_rows = training_rows(cfg, rows)
    init_uri = make_init_bundle(cfg, storage.join(out, "init"), key)
    init_ray(cfg)
    if shared is not None:
        dataset = shared.map_batches(train_pairs, batch_format="numpy", num_cpus=0.25)
    else:
        dataset = training_dataset(train_rows, cfg, init_uri)
    tracking = tracker.worker_target() if tracker is not None else None
    outcome = train(cfg, dataset, init_uri, storage.join(out, "ray"), f"text-{key}", tracking, num_workers)
    model = ReportEncoder.load_bundle(storage.get_folder(init_uri))
    load_partial_state(model, outcome.state["model"])
    model.eval()
    model_uri = storage.join(out, "model")
    with tempfile.TemporaryDirectory() as tmp:
        storage.put_folder(model.save_bundle(Path(tmp, BUNDLE_DIR)), model_uri)
    return {"model": model, "model_uri": model_uri, "init_uri": init_uri, "outcome": outcome, "rows": len(train_rows)}


# --------------------------------------------------------------------------- embed


def disease_sentences(rows: list[dict[str, Any]]) -> dict[str, str]:
    """id → text of the distinct disease sentences of ``rows`` (what the adapter reads), sorted by text."""
    return {sentence_id(s): s for s in sorted({r["disease_sentence"] or NO_FINDING_SENTENCE for r in rows})}


def embed_manifest(
    cfg: DiffCXRConfig, rows: list[dict[str, Any]], bundle_uri: str, out: str, shared: Any | None = None
) -> dict[str, Any]:
    """Embeddings of every kept row's report and disease sentence, and the unconditional context.
    ``shared``: the stage's :func:`~services.text.data.tower_pass` over the same rows (only the squeeze runs)."""
    init_ray(cfg)
    sentences = disease_sentences(rows)
    source = shared if shared is not None else embedding_items(rows, sentences)
    folder = storage.get_folder(bundle_uri)  # once: a remote bundle is a download
    model = ReportEncoder.load_bundle(folder).eval()
    uncond = unconditional_of(model)  # one computation for unconditional.npy and every empty report
    embed_with_ray(source, bundle_uri, storage.join(out, "table"), cfg.text.embed_batch_size, cfg, uncond)
    write_unconditional(out, uncond[0])

    flags = read_table(out).select(["kind", "key", "truncated", "empty"]).to_pylist()
    reports = [f for f in flags if f["kind"] == "report"]
    truncated = sorted(f["key"] for f in reports if f["truncated"])
    empty = sorted(f["key"] for f in reports if f["empty"])
    if len(reports) != len(rows) or len(flags) - len(reports) != len(sentences):
        raise DataError(f"embedded {len(reports)} reports for {len(rows)} kept rows")
    if truncated:  # ids only: report text is never logged
        log.info(
            "text: %d of %d reports exceed %d tokens and were truncated (their beginning is kept): %s%s",
            len(truncated),
            len(rows),
            cfg.text.context_length,
            ", ".join(truncated[:10]),
            " …" if len(truncated) > 10 else "",
        )
    meta = {
        "context_shape": list(model.context_shape),
        "embed_dim": model.spec["embed_dim"],
        "dtype": "float16",
        "model_uri": bundle_uri,
        "weights_sha256": json.loads((folder / "text_model.json").read_text()).get("weights_sha256"),
        "truncation": "head: [CLS] + first context_length-2 word pieces + [SEP]",
        "counts": {"reports": len(rows), "sentences": len(sentences), "truncated": len(truncated), "empty": len(empty)},
        "truncated_sample_ids": truncated,
    }
    storage.write_text(storage.join(out, "embeddings.json"), json.dumps(meta, indent=2))
    return meta


# --------------------------------------------------------------------------- the stage


def run_train(
    cfg: DiffCXRConfig,
    call: StageCall = DEFAULT_CALL,
    num_workers: int | None = None,
    manifest_bytes: bytes | None = None,
    key: str | None = None,
    rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train (or resume), evaluate on held-out pairs, write ``model/`` and ``summary.json``, register.
    (Tests inject faults into the fit through ``DIFFCXR_FAULTS``, see :mod:`diffcxr.faults`.)"""
    check_trainable(cfg)
    manifest_uri = call.paths(default_inputs(cfg))["manifest"]
    _, out = call.folder(cfg.run_root, STAGE)
    tracker = call.tracker
    manifest_bytes = manifest_bytes if manifest_bytes is not None else storage.read_bytes(manifest_uri)
    key = key or stage_key(cfg, manifest_bytes)
    started = time.perf_counter()
    rows = rows if rows is not None else kept_rows(manifest.parse(manifest_bytes, manifest_uri))
    training_rows(cfg, rows)
    init_ray(cfg)
    shared = tower_pass(rows, disease_sentences(rows), cfg, make_init_bundle(cfg, storage.join(out, "init"), key))
    trained = train_text(cfg, rows, out, key, tracker, num_workers, shared)
    model, outcome = trained["model"], trained["outcome"]
    heldout, images = load_pairs(manifest.heldout_rows(rows, with_image=True), cfg.data.image_size)
    evaluation = {}
    if not heldout:
        log.warning("text: the manifest has no held-out (test split) rows with images: retrieval is not evaluated")
    if heldout:
        baseline = ReportEncoder.load_bundle(storage.get_folder(trained["init_uri"]))
        report_features: dict[str, Any] = {"trained": None, "untrained": None}
        if text_is_frozen(cfg.text.train_parts):  # one tower pass serves both squeezers
            pooled, states = (
                states_of(shared, [r["sample_id"] for r in heldout])
                if shared is not None
                else tower_states(model, [r["report_text"] or "" for r in heldout])
            )
            report_features = {"trained": features_from_states(model, pooled, states),
                               "untrained": features_from_states(baseline, pooled, states)}  # fmt: skip
        evaluation = {
            "trained": evaluate(model, heldout, images, report_features["trained"]),
            "untrained": evaluate(baseline, heldout, images, report_features["untrained"]),
        }
    history = outcome.state["history"]
    summary = {
        "manifest": manifest_uri,
        "train_pairs": trained["rows"],
        "heldout_pairs": len(heldout),
        "steps": outcome.state["step"],
        "resumed_from_step": outcome.resumed_from,
        "attempt_starts": outcome.state.get("starts", []),  # the step each attempt began at: restarts, resumes
        "final_loss": history[-1]["loss"] if history else None,
        "train_seconds": round(outcome.seconds, 2),
        "samples_per_second": round(outcome.samples_per_second, 2),
        "context_shape": list(model.context_shape),
        "evaluation": evaluation,
        "seconds": round(time.perf_counter() - started, 2),
    }
    loss_png = _loss_figure(history)
    storage.write_bytes(storage.join(out, "figures", "loss.png"), loss_png)
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=2))
    if tracker is not None:
        summary["registered"] = _track(tracker, cfg, summary, trained["model_uri"], key, loss_png)
    return {"model": trained["model_uri"], "summary": summary, "key": key, "tower_pass": shared}


def run_embed(
    cfg: DiffCXRConfig, model_uri: str, manifest_uri: str | None = None, out_uri: str | None = None
) -> dict[str, Any]:
    """Embeddings of a manifest's kept rows with the bundle at ``model_uri``."""
    manifest_uri = manifest_uri or default_inputs(cfg)["manifest"]
    out = out_uri or StageDir(cfg.run_root, STAGE).path("embeddings")
    rows = kept_rows(manifest.read(manifest_uri))
    meta = embed_manifest(cfg, rows, model_uri, out)
    return {"embeddings": out, "counts": meta["counts"], "context_shape": meta["context_shape"]}


def run(cfg: DiffCXRConfig, call: StageCall = DEFAULT_CALL, num_workers: int | None = None) -> dict[str, Any]:
    """The whole stage: train, evaluate, register, embed. Skipped when manifest and config are unchanged."""
    manifest_uri = call.paths(default_inputs(cfg))["manifest"]
    stage, out = call.folder(cfg.run_root, STAGE)
    tracker = call.tracker
    manifest_bytes = storage.read_bytes(manifest_uri)
    key = stage_key(cfg, manifest_bytes)
    reused = call.reuse(stage, key)
    if reused:
        return reused
    rows = kept_rows(manifest.parse(manifest_bytes, manifest_uri))
    call = StageCall(tracker, {"manifest": manifest_uri}, out)
    trained = run_train(cfg, call, num_workers, manifest_bytes, key, rows)
    embeddings_uri = storage.join(out, "embeddings")
    meta = embed_manifest(cfg, rows, trained["model"], embeddings_uri, trained["tower_pass"])
    summary = {**trained["summary"], "embeddings": meta["counts"]}
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=2))
    if tracker is not None:
        tracker.log_metrics({f"text.embedded_{k}": v for k, v in meta["counts"].items()})
    outputs = {"model": trained["model"], "embeddings": embeddings_uri}
    if stage:
        stage.complete(key, outputs, {"summary": summary})
    return {"skipped": False, **outputs, "summary": summary, "key": key}


def _loss_figure(history: list[dict[str, float]]) -> bytes:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("symmetric InfoNCE")
    ax.set_title("text: squeeze training loss")
    fig.tight_layout()
    return png_bytes(fig)


def _track(
    tracker: Tracker, cfg: DiffCXRConfig, summary: dict[str, Any], model_uri: str, key: str, loss_png: bytes
) -> dict[str, Any]:
    config = cfg.to_dict()
    tracker.log_params({"text": config["text"], "text.manifest_uri": summary["manifest"], "text.key": key})
    metrics = {
        "text.steps": summary["steps"],
        "text.resumed_from_step": summary["resumed_from_step"],
        "text.train_seconds": summary["train_seconds"],
    }
    for name, result in summary["evaluation"].items():
        metrics.update({f"text.{name}.{k}": v for k, v in result["retrieval"].items()})
        for metric in ("sentence_mauc", "contrast_mauc"):  # not `key`: that is the stage key, used below
            if result[metric] is not None:
                metrics[f"text.{name}.{metric}"] = result[metric]
    tracker.log_metrics({k.replace("@", "_at_"): v for k, v in metrics.items()})
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "loss.png").write_bytes(loss_png)
        tracker.log_artifact(str(Path(tmp, "loss.png")), "text")
    tracker.log_dict(summary, "text/summary.json")
    folder = storage.get_folder(model_uri)
    spec = json.loads((folder / "text_model.json").read_text())
    metadata = {
        "kind": "text",
        "stage_key": key,
        "encoder": spec["encoder"],
        "context_shape": summary["context_shape"],
        "embed_dim": spec["embed_dim"],
        "squeeze_tokens": spec["squeeze_tokens"],
        "context_length": spec["context_length"],
        "image_size": spec["image_size"],
        "weights_sha256": spec["weights_sha256"],
        "model_uri": model_uri,
        "labels": list(CHEXPERT_LABELS),
    }
    trained = summary["evaluation"].get("trained", {})
    if trained:
        metadata["heldout_mean_R_at_1"] = trained["retrieval"]["mean_R@1"]
    version = tracker.register_bundle(MODEL_NAME, {"bundle": folder}, metadata, alias=cfg.tracking.candidate_alias)
    return {"name": MODEL_NAME, "version": version, "alias": cfg.tracking.candidate_alias}


def load_registered(tracker: Tracker, alias_or_version: str | int, name: str = MODEL_NAME) -> ReportEncoder:
    """A registered text model by alias (``champion``) or version number."""
    ref = (
        f"models:/{name}/{alias_or_version}"
        if str(alias_or_version).isdigit()
        else f"models:/{name}@{alias_or_version}"
    )
    return ReportEncoder.load_bundle(resolve_model(ref, tracker))


def resolve_model(ref: str, tracker: Tracker | None = None) -> str:
    """A bundle folder URI from ``ref``: a folder/URI, or ``models:/diffcxr-text@alias`` / ``models:/name/3``."""
    return resolve_model_folder(ref, "text_model.json", "text-model bundle", tracker, local=False)
