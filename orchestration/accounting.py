"""Every input row accounted for at the end of a pipeline run: kept + filtered + quarantined = total.

The data stage turns each report/image into manifest rows with a status; the
filter stage re-labels rows but must neither add nor lose any. This module reads
both manifests of a run folder and states the balance (with the top reasons),
and whether any row went missing between the stages, for the parent MLflow run.
"""

from __future__ import annotations

from typing import Any

from diffcxr import manifest, storage
from diffcxr.constants import STATUSES
from diffcxr.stages import StageDir


def row_accounting(run_root: str) -> dict[str, Any] | None:
    """The balance of the run folder's latest manifest (filter's if it ran, else data's); None before data."""
    data_uri = StageDir(run_root, "data").path("manifest.parquet")
    filter_uri = StageDir(run_root, "filter").path("manifest.parquet")
    if not storage.exists(data_uri):
        return None
    data = manifest.read(data_uri)
    final_uri = filter_uri if storage.exists(filter_uri) else data_uri
    final = manifest.read(final_uri) if final_uri != data_uri else data
    summary = manifest.summary(final)
    counts = {status: int(summary["status"].get(status, 0)) for status in STATUSES}
    data_ids = set(data.column("sample_id").to_pylist())
    final_ids = set(final.column("sample_id").to_pylist())
    return {
        "manifest": final_uri,
        "total": final.num_rows,
        **counts,
        "balanced": sum(counts.values()) == final.num_rows,
        "data_stage_rows": data.num_rows,
        "lost_between_stages": sorted(data_ids - final_ids)[:20],
        "added_between_stages": sorted(final_ids - data_ids)[:20],
        "top_reasons": summary["top_reasons"],
    }
