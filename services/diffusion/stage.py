"""The diffusion stage: train the U-ViT, then the adapter, on Ray Train; build and register the generator.

Inputs (defaults from the run folder): the filter stage's manifest and
latents, the text stage's embeddings and model. Outputs under ``out``
(default ``<run_root>/diffusion/``): ``init/`` (the untrained U-ViT every
worker starts from), ``ray/`` (Ray Train checkpoints: a re-run resumes),
``uvit/`` and ``adapter/`` (EMA weights + JSON spec; each is skipped on a
re-run once written for the same key), ``generator/`` (the self-contained
bundle), ``figures/`` (loss curves, a sample per disease) and
``summary.json``. With a tracker: metrics, figures, and the registered models
``diffcxr-uvit``, ``diffcxr-adapter`` and the pyfunc ``diffcxr-generator``.
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
from diffcxr.constants import EVAL_DISEASES
from diffcxr.contracts.embeddings import read_embeddings
from diffcxr.errors import DataError
from diffcxr.figures import png_bytes, pyplot
from diffcxr.labeling.sentences import NO_FINDING_SENTENCE
from diffcxr.raycluster import init_ray
from diffcxr.stages import DEFAULT_CALL, StageCall, StageDir, content_key
from diffcxr.tracking import Tracker
from services.diffusion.adapter import AdaptedUViT
from services.diffusion.data import build_training_set, preview_set
from services.diffusion.generator import Generator, GeneratorPyfunc, build_bundle
from services.diffusion.train import TrainOutcome, ema_weights, grid_png, train
from services.diffusion.uvit import UViT, uvit_config
from services.diffusion.weights import ADAPTER, UVIT, load_uvit, model_meta, read_spec, save_model

log = logging.getLogger(__name__)
STAGE = "diffusion"
UVIT_MODEL = "diffcxr-uvit"
ADAPTER_MODEL = "diffcxr-adapter"
GENERATOR_MODEL = "diffcxr-generator"


def default_inputs(cfg: DiffCXRConfig) -> dict[str, str]:
    filt, text = StageDir(cfg.run_root, "filter"), StageDir(cfg.run_root, "text")
    return {
        "manifest": filt.path("manifest.parquet"),
        "latents": filt.path("latents"),
        "embeddings": text.path("embeddings"),
        "text_model": text.path("model"),
    }


def stage_key(cfg: DiffCXRConfig, manifest_bytes: bytes, embeddings_meta: str) -> str:
    config = cfg.to_dict()
    digest = hashlib.sha256(manifest_bytes + embeddings_meta.encode()).hexdigest()[:16]
    sections = {k: config[k] for k in ("diffusion", "adapter", "sampling", "autoencoder", "labeler")}
    return content_key(STAGE, sections, config["data"]["image_size"], cfg.project.seed, digest)


def _done(folder_uri: str, name: str, key: str) -> bool:
    marker = storage.join(folder_uri, "_key")
    return storage.exists(storage.join(folder_uri, f"{name}.json")) and (
        storage.exists(marker) and storage.read_text(marker) == key
    )


def _write_model(model: torch.nn.Module, uri: str, name: str, meta: dict[str, Any], key: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage.put_folder(save_model(model, Path(tmp, name), name, meta), uri)
    storage.write_text(storage.join(uri, "_key"), key)


def run(cfg: DiffCXRConfig, call: StageCall = DEFAULT_CALL, num_workers: int | None = None) -> dict[str, Any]:
    """The whole stage. Skipped when manifest, embeddings and config are unchanged. (Tests inject faults
    into the two fits through ``DIFFCXR_FAULTS``, see :mod:`diffcxr.faults`.)"""
    paths = call.paths(default_inputs(cfg))
    stage, out = call.folder(cfg.run_root, STAGE)
    tracker = call.tracker
    manifest_bytes = storage.read_bytes(paths["manifest"])
    embeddings_meta = storage.read_text(storage.join(paths["embeddings"], "embeddings.json"))
    key = stage_key(cfg, manifest_bytes, embeddings_meta)
    reused = call.reuse(stage, key)
    if reused:
        return reused
    started = time.perf_counter()
    rows = manifest.kept_rows(manifest.parse(manifest_bytes, paths["manifest"]))
    train_rows = [r for r in rows if r["split"] == "train" and r["image_uri"]]
    heldout = manifest.heldout_rows(rows)
    if not train_rows:
        raise DataError(f"manifest '{paths['manifest']}' has no kept train-split rows with images")
    embeddings = read_embeddings(paths["embeddings"])
    data = build_training_set(
        train_rows, paths["latents"], embeddings, cfg.latent_shape, normalize=cfg.diffusion.normalize_latents
    )
    if not data.autoencoder_id.startswith(cfg.autoencoder.kind):
        raise DataError(
            f"latents under {paths['latents']} come from '{data.autoencoder_id}' but autoencoder.kind is "
            f"'{cfg.autoencoder.kind}'"
        )
    preview = preview_set(heldout or train_rows, embeddings, cfg.diffusion.preview_reports)
    net_cfg = uvit_config(cfg, data.context_shape)
    init_ray(cfg)
    import ray.data

    dataset = ray.data.from_arrow(data.table)
    tracking = tracker.worker_target() if tracker is not None else None
    meta = {
        **model_meta(cfg, net_cfg, data.context_shape, data.autoencoder_id),
        "text_weights_sha256": embeddings.meta.get("weights_sha256"),
        "stage_key": key,
        "latent_stats": data.latent_stats.to_dict() if data.latent_stats else None,
    }
    common = {"payload": data.payload(), "tracking": tracking, "preview": preview, "num_workers": num_workers}

    def fit(part: str, start_uri: str) -> TrainOutcome:
        run_name, ray_uri = f"{part}-{key}", storage.join(out, "ray")
        return train(cfg, part, dataset, start_uri, run_name=run_name, storage_uri=ray_uri, **common)

    uvit_uri, uvit_outcome = _stage_uvit(cfg, out, key, net_cfg, meta, fit)
    adapter_uri, adapter_outcome = _stage_adapter(cfg, out, key, uvit_uri, meta, fit)
    outcomes = {"uvit": uvit_outcome, "adapter": adapter_outcome}
    histories = _histories(out, outcomes)
    # each part fetched once (an s3:// run root would download it for the summary, registry and bundle alike)
    folders = {
        "uvit": storage.get_folder(uvit_uri),
        "adapter": storage.get_folder(adapter_uri) if adapter_uri else None,
    }
    summary: dict[str, Any] = {
        "train_rows": len(train_rows),
        "training_pairs": data.table.num_rows,
        "not_trained_on": data.missing,
        "distinct_sentences": len(data.sentence_ids),
        "uvit": read_spec(folders["uvit"], UVIT),
        "adapter": read_spec(folders["adapter"], ADAPTER) if folders["adapter"] else None,
    }
    for name in ("uvit", "adapter"):
        if summary[name]:
            summary[name] = {k: v for k, v in summary[name].items() if k not in ("config", "schedule")}
    figures = {"loss": _loss_figure(histories)}
    storage.write_bytes(storage.join(out, "figures", "loss.png"), figures["loss"])

    registered: dict[str, Any] = {}
    if tracker is not None:
        registered = _register_parts(tracker, cfg, folders, summary, key)
    generator_uri = storage.join(out, "generator")
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_bundle(
            Path(tmp, "generator"), storage.get_folder(paths["text_model"]), folders["uvit"], folders["adapter"],
            cfg.autoencoder, cfg.labeler, cfg.sampling,
            cfg.data.image_size, versions=registered,
        )  # fmt: skip
        samples_png, sample_rows = _per_disease_figure(Generator(folder), heldout or train_rows, cfg)
        figures["samples"] = samples_png
        storage.put_folder(folder, generator_uri)
        if tracker is not None:
            registered["generator"] = _register_generator(tracker, cfg, folder, key)
    storage.write_bytes(storage.join(out, "figures", "samples_per_disease.png"), samples_png)
    summary.update(
        {"samples_per_disease": sample_rows, "registered": registered, "seconds": round(time.perf_counter() - started)}
    )
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=2, default=str))
    if tracker is not None:
        _track(tracker, cfg, summary, figures, key)
    outputs = {"uvit": uvit_uri, "generator": generator_uri}
    if adapter_uri:
        outputs["adapter"] = adapter_uri
    if stage:
        stage.complete(key, outputs, {"summary": {k: summary[k] for k in ("training_pairs", "registered")}})
    return {"skipped": False, **outputs, "summary": summary, "key": key}


def _stage_uvit(
    cfg: DiffCXRConfig, out: str, key: str, net_cfg: Any, meta: dict[str, Any], fit: Any
) -> tuple[str, TrainOutcome | None]:
    """Stage 1: the U-ViT from a seeded initialisation; its EMA weights are what the folder keeps."""
    init_uri, uvit_uri = storage.join(out, "init"), storage.join(out, UVIT)
    if not _done(init_uri, UVIT, key):
        torch.manual_seed(cfg.project.seed)
        _write_model(UViT(net_cfg), init_uri, UVIT, {**meta, "trained_steps": 0}, key)
    if _done(uvit_uri, UVIT, key):
        return uvit_uri, None
    outcome = fit("uvit", init_uri)
    uvit, _ = load_uvit(storage.get_folder(init_uri))
    uvit.load_state_dict(ema_weights(uvit, "uvit", outcome.state["ema"]))
    _write_model(uvit, uvit_uri, UVIT, {**meta, **_train_meta(outcome)}, key)
    return uvit_uri, outcome


def _stage_adapter(
    cfg: DiffCXRConfig, out: str, key: str, uvit_uri: str, meta: dict[str, Any], fit: Any
) -> tuple[str | None, TrainOutcome | None]:
    """Stage 2: the adapter on the frozen U-ViT (None when ``adapter.enabled`` is off)."""
    adapter_uri = storage.join(out, ADAPTER) if cfg.adapter.enabled else None
    if adapter_uri is None or _done(adapter_uri, ADAPTER, key):
        return adapter_uri, None
    outcome = fit("adapter", uvit_uri)
    uvit, uvit_spec = load_uvit(storage.get_folder(uvit_uri))
    adapted = AdaptedUViT(uvit)
    adapted.adapter.load_state_dict(ema_weights(adapted, "adapter", outcome.state["ema"]))
    adapter_meta = {**meta, **_train_meta(outcome), "uvit_sha256": uvit_spec["weights_sha256"]}
    _write_model(adapted.adapter, adapter_uri, ADAPTER, adapter_meta, key)
    return adapter_uri, outcome


def _train_meta(outcome: TrainOutcome) -> dict[str, Any]:
    history = outcome.state["history"]
    return {
        "trained_steps": outcome.state["step"],
        "resumed_from_step": outcome.resumed_from,
        "final_loss": history[-1]["loss"] if history else None,
        "train_seconds": round(outcome.seconds, 2),
        "samples_per_second": round(outcome.samples_per_second, 2),
        "worker_niceness": outcome.worker_niceness,
        "history": [h for h in history if h["step"] % 10 == 0 or h is history[-1]],
    }


def _histories(out: str, outcomes: dict[str, TrainOutcome | None]) -> dict[str, list[dict[str, float]]]:
    """Loss histories of the stages (from this run, or from the saved specs of a resumed one)."""
    result = {}
    for name in ("uvit", "adapter"):
        outcome = outcomes.get(name)
        if outcome is not None:
            result[name] = outcome.state["history"]
            continue
        uri = storage.join(out, name)
        if storage.exists(storage.join(uri, f"{name}.json")):
            result[name] = json.loads(storage.read_text(storage.join(uri, f"{name}.json"))).get("history", [])
    return result


def _loss_figure(histories: dict[str, list[dict[str, float]]]) -> bytes:
    plt = pyplot()

    fig, axes = plt.subplots(1, max(1, len(histories)), figsize=(4.5 * max(1, len(histories)), 3), dpi=110)
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, (name, history) in zip(axes, histories.items(), strict=False):
        ax.plot([h["step"] for h in history], [h["loss"] for h in history], lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("ε-MSE")
        ax.set_title(f"{name} training loss")
    fig.tight_layout()
    return png_bytes(fig)


def _per_disease_figure(
    generator: Generator, rows: list[dict[str, Any]], cfg: DiffCXRConfig
) -> tuple[bytes, list[dict[str, Any]]]:
    """One generated image per disease (a held-out report that has it) and one without findings."""
    picks: list[tuple[str, dict[str, Any]]] = []
    for disease in EVAL_DISEASES:
        row = next((r for r in sorted(rows, key=lambda r: r["sample_id"]) if r.get(disease) == 1), None)
        if row is not None:
            picks.append((disease, row))
    normal = next((r for r in rows if (r["disease_sentence"] or NO_FINDING_SENTENCE) == NO_FINDING_SENTENCE), None)
    if normal is not None:
        picks.append(("No Finding", normal))
    images = generator.generate([r["report_text"] or "" for _, r in picks], [cfg.project.seed] * len(picks))
    png = grid_png([i.pixels / 255.0 for i in images], [name for name, _ in picks], "one sample per disease")
    rows_out = [
        {"disease": name, "sample_id": r["sample_id"], "disease_sentence": img.disease_sentence}
        for (name, r), img in zip(picks, images, strict=True)
    ]
    return png, rows_out


def _register_parts(
    tracker: Tracker, cfg: DiffCXRConfig, folders: dict[str, Path | None], summary: dict[str, Any], key: str
) -> dict[str, Any]:
    registered = {}
    for name, model_name in (("uvit", UVIT_MODEL), ("adapter", ADAPTER_MODEL)):
        if folders[name] is None:
            continue
        spec = summary[name]
        metadata = {
            "kind": name,
            "stage_key": key,
            "weights_sha256": spec["weights_sha256"],
            "latent_shape": spec["latent_shape"],
            "context_shape": spec["context_shape"],
            "autoencoder_id": spec["autoencoder_id"],
            "scale_factor": spec["scale_factor"],
            "trained_steps": spec.get("trained_steps"),
            "final_loss": spec.get("final_loss"),
        }
        version = tracker.register_bundle(
            model_name, {"bundle": folders[name]}, metadata, alias=cfg.tracking.candidate_alias
        )
        registered[name] = {"name": model_name, "version": version}
    return registered


def _register_generator(tracker: Tracker, cfg: DiffCXRConfig, folder: Path, key: str) -> dict[str, Any]:
    spec = json.loads((folder / "generator.json").read_text())
    metadata = {
        "kind": "generator",
        "stage_key": key,
        "text_sha256": spec["text"]["weights_sha256"],
        "uvit_sha256": spec["uvit"]["weights_sha256"],
        "adapter_sha256": spec["adapter"]["weights_sha256"] if spec.get("adapter") else None,
        "autoencoder_id": spec["autoencoder"]["id"],
        "scale_factor": spec["autoencoder"]["scale_factor"],
        "latent_shape": spec["autoencoder"]["latent_shape"],
        "sampling": spec["sampling"],
        "registry": spec["registry"],
    }
    version = tracker.register_bundle(
        GENERATOR_MODEL,
        {"bundle": folder},
        metadata,
        alias=cfg.tracking.candidate_alias,
        python_model=GeneratorPyfunc(),
    )
    return {"name": GENERATOR_MODEL, "version": version, "alias": cfg.tracking.candidate_alias}


def _track(tracker: Tracker, cfg: DiffCXRConfig, summary: dict[str, Any], figures: dict[str, bytes], key: str) -> None:
    config = cfg.to_dict()
    tracker.log_params({"diffusion": config["diffusion"], "adapter": config["adapter"], "diffusion.key": key})
    metrics = {"diffusion.training_pairs": summary["training_pairs"]}
    for name in ("uvit", "adapter"):
        spec = summary.get(name) or {}
        for field in ("trained_steps", "final_loss", "train_seconds", "samples_per_second", "resumed_from_step"):
            if spec.get(field) is not None:
                metrics[f"{name}.{field}"] = spec[field]
    tracker.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        for name, png in figures.items():
            Path(tmp, f"{name}.png").write_bytes(png)
            tracker.log_artifact(str(Path(tmp, f"{name}.png")), "diffusion")
    tracker.log_dict(summary, "diffusion/summary.json")
