"""Labels users already have as a CSV shipped with a dataset (CheXbert weights: ``chexbert.py``).

Produces ``ReportLabels`` by observation *name*, so the manifest looks the same
whichever labeler filled it. Laterality/severity details are not in such files;
the rule labeler's detail extraction adds them for positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from diffcxr.constants import CHEXPERT_LABELS
from diffcxr.csvio import read_csv
from diffcxr.labeling.base import ReportLabels, parse_label_cell
from diffcxr.labeling.rules import RuleLabeler


def with_details(labels: ReportLabels, text: str | None) -> ReportLabels:
    """Add laterality/severity for this labeler's positives from the rule labeler's reading."""
    if text:
        found = RuleLabeler().label_text(text).details
        labels.details = {name: found[name] for name in labels.positives() if name in found}
    return labels


class CsvLabeler:
    """Labels from a CheXpert-format CSV keyed by report (e.g. MIMIC's ``mimic-cxr-2.0.0-chexpert.csv``).

    ``id_column`` holds the report key; ``id_prefix`` turns it into the manifest's
    ``report_id`` (MIMIC: ``study_id`` 50414267 with prefix ``mimic:s``). Rows with
    invalid values are reported in ``problems`` (report id → reason) so the
    caller can quarantine them instead of dropping them.
    """

    def __init__(self, uri: str, id_column: str = "study_id", id_prefix: str = "") -> None:
        self.name = f"csv:{Path(uri).name}"
        self.labels: dict[str, dict[str, int | None]] = {}
        self.problems: dict[str, str] = {}
        for line, row in read_csv(uri, (id_column, *CHEXPERT_LABELS)):
            report_id = f"{id_prefix}{row[id_column].strip()}"
            try:
                self.labels[report_id] = {name: parse_label_cell(row[name]) for name in CHEXPERT_LABELS}
            except ValueError as exc:
                self.problems[report_id] = f"invalid label row (line {line} of {Path(uri).name}): {exc}"

    def label_reports(self, report_ids: Sequence[str | None], texts: Sequence[str | None]) -> list[ReportLabels | None]:
        out: list[ReportLabels | None] = []
        for report_id, text in zip(report_ids, texts, strict=True):
            values = self.labels.get(report_id or "")
            out.append(with_details(ReportLabels(dict(values)), text) if values is not None else None)
        return out
