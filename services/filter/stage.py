"""The filter stage: manifest → latents (Ray Data) → LNFS scores → filtered manifest, figures, MLflow.

Outputs under ``out`` (default ``<run_root>/filter/``): ``latents/`` (Parquet
shards), ``scores.parquet`` (``sample_id``, the three scores, ``combined``,
``stage``, ``decision``, ``reason``), ``manifest.parquet`` (the input manifest
with dropped rows ``filtered`` and unreadable images ``quarantined``, each with
its reason) and ``figures/``. Rows in = kept + dropped + quarantined, asserted.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import time
from typing import Any

import numpy as np
import pyarrow as pa

from diffcxr import manifest, storage
from diffcxr.config import DiffCXRConfig
from diffcxr.constants import STATUS_FILTERED, STATUS_KEPT, STATUS_QUARANTINED
from diffcxr.contracts.latents import read_latents
from diffcxr.errors import DataError
from diffcxr.stages import DEFAULT_CALL, StageCall, StageDir, content_key
from diffcxr.tracking import Tracker
from services.filter.encode import encode_with_ray, init_ray
from services.filter.lnfs import run_lnfs
from services.filter.report import detection_metrics, embedding_figure, image_grid

log = logging.getLogger(__name__)
STAGE = "filter"


def default_inputs(cfg: DiffCXRConfig) -> dict[str, str]:
    """What the filter reads when run alone: the data stage's manifest in the run folder."""
    return {"manifest": StageDir(cfg.run_root, "data").path("manifest.parquet")}


def stage_key(cfg: DiffCXRConfig, manifest_bytes: bytes) -> str:
    config = cfg.to_dict()
    digest = hashlib.sha256(manifest_bytes).hexdigest()[:16]
    return content_key(
        STAGE, config["filter"], config["autoencoder"], config["data"]["image_size"], cfg.project.seed, digest
    )


def scores_table(rows: list[dict[str, Any]]) -> pa.Table:
    schema = pa.schema(
        [
            ("sample_id", pa.string()),
            ("kmeans_distance", pa.float32()),
            ("recon_error", pa.float32()),
            ("disc_score", pa.float32()),
            ("combined", pa.float32()),
            ("stage", pa.string()),
            ("decision", pa.string()),
            ("reason", pa.string()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def run(cfg: DiffCXRConfig, call: StageCall = DEFAULT_CALL) -> dict[str, Any]:
    """Encode, score and filter ``inputs["manifest"]``; write latents, scores and the filtered manifest."""
    manifest_uri = call.paths(default_inputs(cfg))["manifest"]
    stage, out = call.folder(cfg.run_root, STAGE)
    tracker = call.tracker
    manifest_bytes = storage.read_bytes(manifest_uri)  # read once: a missing URI fails here, naming it
    key = stage_key(cfg, manifest_bytes)
    reused = call.reuse(stage, key)
    if reused:
        return reused
    started = time.perf_counter()
    table = manifest.parse(manifest_bytes, manifest_uri)
    rows = table.to_pylist()
    candidates = [r for r in rows if r["status"] == STATUS_KEPT and r["image_uri"]]
    if not candidates:
        raise DataError(f"manifest '{manifest_uri}' has no kept rows with images to filter")
    init_ray(cfg)
    latents_uri = storage.join(out, "latents")
    encode_seconds = encode_with_ray(candidates, cfg, latents_uri)
    ids, latents, errors, ae_id = read_latents(latents_uri, cfg.latent_shape)
    result = run_lnfs(latents, cfg.filter, cfg.project.seed)
    reasons = result.reasons()

    by_id = {r["sample_id"]: r for r in rows}
    score_rows = []
    applied = result.dropped if cfg.filter.enabled else np.zeros_like(result.dropped)  # disabled: score, keep
    for i, sid in enumerate(ids):
        dropped = bool(applied[i])
        score_rows.append(
            {
                "sample_id": sid,
                "kmeans_distance": float(result.kmeans_distance[i]),
                "recon_error": float(result.recon_error[i]),
                "disc_score": float(result.disc_score[i]),
                "combined": float(result.combined[i]),
                "stage": str(result.stage[i]),
                "decision": "dropped" if dropped else "kept",
                "reason": (reasons[i] if cfg.filter.enabled else f"filter disabled; LNFS: {reasons[i]}")
                if result.dropped[i]
                else None,
            }
        )
        if dropped:
            by_id[sid]["status"], by_id[sid]["reason"] = STATUS_FILTERED, reasons[i]
    for sid, error in errors.items():
        score_rows.append({"sample_id": sid, "decision": "quarantined", "reason": error})
        by_id[sid]["status"], by_id[sid]["reason"] = STATUS_QUARANTINED, f"unreadable image: {error}"
    counts = {
        "in": len(candidates),
        "kept": int(len(ids) - applied.sum()),
        "dropped": int(applied.sum()),
        "quarantined": len(errors),
    }
    assert counts["in"] == counts["kept"] + counts["dropped"] + counts["quarantined"], counts

    scores_uri, manifest_out = storage.join(out, "scores.parquet"), storage.join(out, "manifest.parquet")
    storage.write_parquet(scores_table(score_rows), scores_uri)
    manifest.write(manifest.to_table(rows), manifest_out)
    figures = _figures(out, latents, result, ids, by_id, cfg)
    noise = [by_id[sid]["noise_kind"] for sid in ids]
    evaluation = detection_metrics(result, noise) if any(noise) else {}
    summary = {
        "counts": counts,
        "enabled": cfg.filter.enabled,
        "lnfs_flagged": int(result.dropped.sum()),  # what LNFS would drop; == dropped when enabled
        "autoencoder_id": ae_id,
        "encode_seconds": round(encode_seconds, 2),
        "seconds": round(time.perf_counter() - started, 2),
        "evaluation": evaluation,
    }
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=2))
    if tracker is not None:
        _track(tracker, cfg, summary, figures, scores_uri, manifest_out)
    outputs = {"manifest": manifest_out, "scores": scores_uri, "latents": latents_uri}
    if stage:
        stage.complete(key, outputs, {"summary": summary})
    log.info("filter: %s%s", counts, "" if cfg.filter.enabled else f" (disabled: LNFS flagged {result.dropped.sum()})")
    return {"skipped": False, **outputs, "summary": summary, "key": key}


def _figures(out: str, latents, result, ids, by_id, cfg: DiffCXRConfig) -> dict[str, Any]:  # noqa: ANN001
    order = sorted((i for i in range(len(ids)) if result.dropped[i]), key=lambda i: -result.combined[i])
    kept = [i for i in range(len(ids)) if not result.dropped[i]]
    sample = random.Random(cfg.project.seed).sample(kept, min(16, len(kept)))
    grid = image_grid([by_id[ids[i]]["image_uri"] for i in order[:32]], [by_id[ids[i]]["image_uri"] for i in sample])
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    storage.write_bytes(storage.join(out, "figures", "dropped_vs_kept.png"), buf.getvalue())
    fig = embedding_figure(latents, result, cfg.filter.embedding, cfg.project.seed)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    storage.write_bytes(storage.join(out, "figures", "embedding.png"), buf.getvalue())
    return {"grid": grid, "embedding": fig}


def _track(
    tracker: Tracker,
    cfg: DiffCXRConfig,
    summary: dict[str, Any],
    figures: dict[str, Any],
    scores_uri: str,
    manifest_uri: str,
) -> None:
    import matplotlib.pyplot as plt

    config = cfg.to_dict()
    tracker.log_params(
        {
            "filter": config["filter"],
            "autoencoder": config["autoencoder"],
            "filter.autoencoder_id": summary["autoencoder_id"],
            "filter.manifest_uri": manifest_uri,
        }
    )
    metrics = {f"filter.{k}": v for k, v in summary["counts"].items()}
    metrics["filter.encode_seconds"] = summary["encode_seconds"]
    metrics.update({f"filter.eval_{k}": v for k, v in summary["evaluation"].items() if isinstance(v, int | float)})
    tracker.log_metrics(metrics)
    tracker.log_image(figures["grid"], "filter/dropped_vs_kept.png")
    tracker.log_figure(figures["embedding"], "filter/embedding.png")
    plt.close(figures["embedding"])
    tracker.log_artifact(scores_uri, "filter")
    tracker.log_dict(summary, "filter/summary.json")
