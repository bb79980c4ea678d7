"""Build the manifest for the configured data source.

Readers return row dicts; this module adds what is common to every source:
the hash split where a source has no official one, the image check (missing or
corrupt files are quarantined with the reason), and the accounting that proves
nothing was lost (rows in = kept + filtered + quarantined).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from diffcxr import manifest
from diffcxr.config import DataConfig, DiffCXRConfig
from diffcxr.constants import STATUS_KEPT, STATUS_QUARANTINED
from diffcxr.errors import ConfigError
from services.data import iu_xray, mimic_cxr
from services.data.images import image_problems
from services.data.splits import hash_split

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    table: pa.Table
    reports_read: int
    labels: dict[str, Any] | None = None

    @property
    def summary(self) -> dict[str, Any]:
        out = {**manifest.summary(self.table), "reports_read": self.reports_read}
        if self.labels is not None:
            out["labels"] = self.labels
        return out


def read_source(cfg: DataConfig) -> tuple[list[dict[str, Any]], int]:
    """Rows from the configured source's reader (before split and image checks)."""
    if cfg.source == "iu_xray_wheel":
        return iu_xray.read_wheel(cfg.frontal_only, cfg.max_reports)
    if cfg.source == "iu_xray":
        return iu_xray.read_disk(cfg.root or "", cfg.frontal_only, cfg.max_reports)
    if cfg.source == "mimic_cxr_jpg":
        return mimic_cxr.read_disk(cfg.root or "", cfg.reports_root, cfg.frontal_only, cfg.max_reports)
    raise ConfigError(f"data.source: unknown source '{cfg.source}'")


def assign_splits(rows: list[dict[str, Any]], cfg: DataConfig) -> None:
    """Give every row with a report id but no official split its hash split (in place)."""
    for row in rows:
        if row.get("split") is None and row.get("report_id"):
            row["split"] = hash_split(row["report_id"], cfg.split_fractions, cfg.split_salt)


def quarantine_bad_images(rows: list[dict[str, Any]]) -> int:
    """Decode each kept row's image once; quarantine the unusable ones (in place)."""
    todo = [r for r in rows if r.get("status") == STATUS_KEPT and r.get("image_uri")]
    problems = image_problems([r["image_uri"] for r in todo])
    bad = 0
    for row, problem in zip(todo, problems, strict=True):
        if problem:
            row["status"], row["reason"] = STATUS_QUARANTINED, problem
            bad += 1
    return bad


def build_manifest(cfg: DataConfig) -> BuildResult:
    """Read, split, check and validate: the manifest table for ``cfg``."""
    rows, reports = read_source(cfg)
    rows_in = len(rows)
    assign_splits(rows, cfg)
    if cfg.verify_images:
        bad = quarantine_bad_images(rows)
        if bad:
            log.warning("%d image(s) quarantined as missing or unreadable", bad)
    table = manifest.to_table(rows)
    assert table.num_rows == rows_in, "manifest lost rows"  # accounting invariant
    return BuildResult(table, reports)


def build_labeled_manifest(cfg: DiffCXRConfig) -> BuildResult:
    """The data stage's product: the manifest of ``cfg.data`` labeled by ``cfg.labeler``."""
    from diffcxr.labeling.factory import make_labeler
    from services.data.labels import label_manifest

    result = build_manifest(cfg.data)
    table, stats = label_manifest(
        result.table,
        make_labeler(cfg.labeler),
        cfg.labeler.uncertain_policy,
        cfg.labeler.overwrite,
        cfg.labeler.batch_size,
    )
    return BuildResult(table, result.reports_read, stats.as_dict())
