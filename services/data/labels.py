"""Fill a manifest's label columns, details and disease sentences with a labeler.

Each distinct report is labeled once (a report's images share its labels), in
batches. Rows whose labels came with the dataset (``label_source`` set, e.g.
MIMIC's CheXpert CSV) keep them unless ``overwrite``; every row gets its
disease sentence from whichever labels it has. A report that a CSV labels with
invalid values is quarantined with the reason, never silently left unlabeled.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from diffcxr import manifest
from diffcxr.constants import CHEXPERT_LABELS, STATUS_QUARANTINED
from diffcxr.labeling import Labeler, ReportLabels, disease_sentence

log = logging.getLogger(__name__)


@dataclass
class LabelStats:
    reports_labeled: int = 0
    rows_labeled: int = 0
    rows_kept_labels: int = 0
    rows_without_labels: int = 0
    rows_quarantined: int = 0
    seconds: float = 0.0
    positives: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "reports_labeled": self.reports_labeled,
            "rows_labeled": self.rows_labeled,
            "rows_kept_dataset_labels": self.rows_kept_labels,
            "rows_without_labels": self.rows_without_labels,
            "rows_quarantined_by_labels": self.rows_quarantined,
            "seconds": round(self.seconds, 3),
            "positive_rows": self.positives,
        }


def _report_key(row: dict[str, Any]) -> str:
    return row["report_id"] or f"text:{row['report_text'] or ''}"


def label_manifest(
    table: pa.Table,
    labeler: Labeler,
    uncertain_policy: str = "ignore",
    overwrite: bool = False,
    batch_size: int = 256,
) -> tuple[pa.Table, LabelStats]:
    """Return the manifest with labels, ``label_details``, ``label_source`` and ``disease_sentence`` filled."""
    started = time.perf_counter()
    rows = table.to_pylist()
    stats = LabelStats()
    todo = [r for r in rows if overwrite or not r["label_source"]]
    stats.rows_kept_labels = len(rows) - len(todo)
    reports: dict[str, dict[str, Any]] = {}
    for row in todo:
        reports.setdefault(_report_key(row), row)
    keys = list(reports)
    results: dict[str, ReportLabels | None] = {}
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        out = labeler.label_reports(
            [reports[k]["report_id"] for k in chunk], [reports[k]["report_text"] for k in chunk]
        )
        results.update(zip(chunk, out, strict=True))
    stats.reports_labeled = sum(r is not None for r in results.values())
    problems: dict[str, str] = getattr(labeler, "problems", {})
    for row in todo:
        result = results[_report_key(row)]
        if row["report_id"] in problems and row["status"] != STATUS_QUARANTINED:
            row["status"], row["reason"] = STATUS_QUARANTINED, problems[row["report_id"]]
            stats.rows_quarantined += 1
        if result is None:
            stats.rows_without_labels += 1
            continue
        row.update(result.labels)
        row["label_details"] = json.dumps(result.details, sort_keys=True) if result.details else None
        row["label_source"] = labeler.name
        stats.rows_labeled += 1
    positives: Counter[str] = Counter()
    for row in rows:
        if row["label_source"]:
            row["disease_sentence"] = disease_sentence(row, uncertain_policy)
            positives.update(name for name in CHEXPERT_LABELS if row[name] == 1)
    stats.positives = dict(sorted(positives.items()))
    stats.seconds = time.perf_counter() - started
    labeled = manifest.to_table(rows)
    assert labeled.num_rows == table.num_rows, "labeling changed the row count"
    return labeled, stats
