"""MIMIC-CXR-JPG on disk → manifest rows, with its official split and CheXpert labels.

Expected layout (PhysioNet's, unchanged) under ``data.root``::

    mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id, subject_id, study_id, ViewPosition, ...
    mimic-cxr-2.0.0-split.csv[.gz]      dicom_id, study_id, subject_id, split (train/validate/test)
    mimic-cxr-2.0.0-chexpert.csv[.gz]   subject_id, study_id, <14 observations by name>
    files/p10/p10000032/s50414267/<dicom_id>.jpg

Reports come from MIMIC-CXR (not -JPG): ``files/pXX/pSUBJECT/sSTUDY.txt`` under
``data.reports_root`` (default ``data.root``) or inside ``mimic-cxr-reports.zip``.
Labels are read by column *name*, never by position (the CSV is alphabetical,
CheXbert's output order is not). A bad row is quarantined with the reason; a
missing file or column is an error naming it.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from diffcxr import storage
from diffcxr.constants import CHEXPERT_LABELS, FRONTAL_VIEWS, STATUS_FILTERED, STATUS_KEPT, STATUS_QUARANTINED
from diffcxr.csvio import read_csv
from diffcxr.errors import DataError, StorageError
from diffcxr.labeling.base import decode_report, parse_label_cell

SOURCE = "mimic_cxr_jpg"
_SPLIT_NAMES = {"train": "train", "validate": "val", "val": "val", "test": "test"}
_SECTION = re.compile(r"^\s*([A-Z][A-Z /&]+):", re.MULTILINE)


def _table_uri(root: str, stem: str) -> str:
    for suffix in (".csv.gz", ".csv"):
        uri = storage.join(root, f"{stem}{suffix}")
        if storage.is_file(uri):
            return uri
    raise DataError(f"data.root: '{stem}.csv.gz' not found under '{root}' (MIMIC-CXR-JPG layout)")


def split_sections(report: str) -> dict[str, str]:
    """Upper-case ``HEADER:`` sections of a free-text MIMIC report."""
    matches = list(_SECTION.finditer(report))
    sections: dict[str, str] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(report)
        body = " ".join(report[match.end() : end].split())
        if body:
            sections[match.group(1).strip()] = body
    return sections


class ReportStore:
    """Finds ``sSTUDY.txt`` reports in a folder tree or in ``mimic-cxr-reports.zip``."""

    def __init__(self, root: str, reports_root: str | None) -> None:
        self.folder = reports_root or root
        self.zip: zipfile.ZipFile | None = None
        zip_uri = storage.join(self.folder, "mimic-cxr-reports.zip")
        if storage.is_file(zip_uri):
            self.zip = zipfile.ZipFile(io.BytesIO(storage.read_bytes(zip_uri)))
            self.names = {name.rsplit("/", 1)[-1]: name for name in self.zip.namelist() if name.endswith(".txt")}

    def read(self, subject_id: str, study_id: str) -> str:
        rel = f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}.txt"
        if self.zip is not None:
            name = self.names.get(f"s{study_id}.txt")
            if name is None:
                raise FileNotFoundError(f"report {rel} not in mimic-cxr-reports.zip")
            return decode_report(self.zip.read(name))
        try:
            data = storage.read_bytes(storage.join(self.folder, rel))
        except StorageError:
            raise FileNotFoundError(f"report {rel} not found under '{self.folder}'") from None
        return decode_report(data)


def read_disk(
    root: str, reports_root: str | None = None, frontal_only: bool = True, max_reports: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Manifest rows for MIMIC-CXR-JPG at ``root`` and how many studies (reports) they cover."""
    meta_uri = _table_uri(root, "mimic-cxr-2.0.0-metadata")
    split_uri = _table_uri(root, "mimic-cxr-2.0.0-split")
    label_uri = _table_uri(root, "mimic-cxr-2.0.0-chexpert")

    splits: dict[str, str] = {}
    for _, row in read_csv(split_uri, ("dicom_id", "split")):
        splits[row["dicom_id"].strip()] = row["split"].strip()

    labels: dict[str, dict[str, int | None] | str] = {}
    for line, row in read_csv(label_uri, ("study_id", *CHEXPERT_LABELS)):
        study = row["study_id"].strip()
        try:
            labels[study] = {name: parse_label_cell(row[name]) for name in CHEXPERT_LABELS}
        except ValueError as exc:
            labels[study] = f"invalid label row (line {line} of chexpert CSV): {exc}"

    rows: list[dict[str, Any]] = []
    studies: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for line, row in read_csv(meta_uri, ("dicom_id", "subject_id", "study_id", "ViewPosition")):
        ids = [row[k].strip() for k in ("dicom_id", "subject_id", "study_id")]
        if not all(ids) or not all(i.replace("-", "").isalnum() for i in ids):
            rows.append(
                {
                    "sample_id": f"mimic:metadata-line-{line}",
                    "source": SOURCE,
                    "status": STATUS_QUARANTINED,
                    "reason": f"malformed metadata row (line {line}): dicom_id/subject_id/study_id missing",
                }
            )
            continue
        studies.setdefault(ids[2], []).append((line, row))

    study_ids = sorted(studies)
    if max_reports is not None:
        study_ids = study_ids[:max_reports]
    reports = ReportStore(root, reports_root)
    for study in study_ids:
        first = studies[study][0][1]
        subject = first["subject_id"].strip()
        base: dict[str, Any] = {"report_id": f"mimic:s{study}", "patient_id": f"mimic:p{subject}", "source": SOURCE}
        problem: str | None = None
        try:
            text = reports.read(subject, study)
            sections = split_sections(text)
            base["findings"] = sections.get("FINDINGS")
            base["impression"] = sections.get("IMPRESSION")
            base["report_text"] = " ".join(p for p in (base["findings"], base["impression"]) if p) or None
        except FileNotFoundError as exc:
            problem = f"missing report: {exc}"
        except DataError as exc:
            problem = f"unreadable report s{study}.txt: {exc}"
        study_labels = labels.get(study)
        if isinstance(study_labels, str):
            problem = problem or study_labels
        elif study_labels is not None:
            base.update(study_labels)
            base["label_source"] = "mimic-cxr-2.0.0-chexpert.csv"
        for _, row in studies[study]:
            dicom = row["dicom_id"].strip()
            view = (row["ViewPosition"] or "").strip().upper() or None
            raw_split = splits.get(dicom)
            split = _SPLIT_NAMES.get((raw_split or "").lower())
            status, reason = STATUS_KEPT, None
            if problem:
                status, reason = STATUS_QUARANTINED, problem
            elif raw_split is None:
                status, reason = STATUS_QUARANTINED, "image not in the official split file"
            elif split is None:
                status, reason = STATUS_QUARANTINED, f"unknown split value {raw_split!r} in the split file"
            elif not base.get("report_text"):
                status, reason = STATUS_FILTERED, "empty report: no findings or impression"
            elif frontal_only and view not in FRONTAL_VIEWS:
                status, reason = STATUS_FILTERED, f"non-frontal view ({view or 'unknown'}): frontal views only"
            rows.append(
                {
                    **base,
                    "sample_id": f"mimic:{dicom}",
                    "image_uri": storage.join(
                        root, "files", f"p{subject[:2]}", f"p{subject}", f"s{study}", f"{dicom}.jpg"
                    ),
                    "view": view,
                    "split": split,
                    "status": status,
                    "reason": reason,
                }
            )
    return rows, len(study_ids)
