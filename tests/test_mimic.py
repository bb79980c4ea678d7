"""MIMIC-CXR-JPG on disk: official split, labels by name, reports as files or zip, bad rows quarantined.

The fixture is written by the test in PhysioNet's exact layout with invented
ids, report text and images. The label CSV's columns are deliberately shuffled:
a reader that maps labels by position fails here.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcxr.config import load_config
from diffcxr.constants import CHEXPERT_LABELS
from diffcxr.errors import DataError
from services.data.build import build_manifest
from services.data.mimic_cxr import split_sections

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  Invented indication.

 FINDINGS:  Invented finding one.
 Invented finding two.

 IMPRESSION:  Invented impression.
"""

# dicom id, subject, study, view, split, expected outcome
IMAGES = [
    ("d1a", "10000001", "50000001", "PA", "train", "kept"),
    ("d1b", "10000001", "50000001", "LATERAL", "train", "filtered"),
    ("d2a", "10000002", "50000002", "AP", "validate", "kept"),
    ("d3a", "10000003", "50000003", "PA", "test", "quarantined:invalid label"),
    ("d4a", "10000004", "50000004", "PA", "train", "quarantined:missing report"),
    ("d5a", "10000005", "50000005", "PA", "train", "quarantined:image file not found"),
    ("d6a", "10000006", "50000006", "PA", "train", "quarantined:corrupt image"),
    ("d7a", "10000007", "50000007", "PA", None, "quarantined:not in the official split"),
    ("d8a", "10000008", "50000008", "PA", "training", "quarantined:unknown split value 'training'"),
]


def _gz_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(gzip.compress(buf.getvalue().encode()))


def _jpg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 40), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def make_mimic(root: Path, reports_as_zip: bool = False) -> None:
    root.mkdir(parents=True)
    meta = [[d, s, st, v, "CHEST", 40, 40] for d, s, st, v, _, _ in IMAGES]
    meta.append(["", "10000009", "50000009", "PA", "CHEST", 40, 40])  # malformed: no dicom_id
    _gz_csv(
        root / "mimic-cxr-2.0.0-metadata.csv.gz",
        ["dicom_id", "subject_id", "study_id", "ViewPosition", "PerformedProcedureStepDescription", "Rows", "Columns"],
        meta,
    )
    _gz_csv(
        root / "mimic-cxr-2.0.0-split.csv.gz",
        ["dicom_id", "study_id", "subject_id", "split"],
        [[d, st, s, sp] for d, s, st, _, sp, _ in IMAGES if sp],
    )
    columns = list(CHEXPERT_LABELS)
    random.Random(3).shuffle(columns)  # by-name mapping must not care about column order
    labels = {
        "50000001": {"Edema": "1.0", "Pleural Effusion": "-1.0", "No Finding": "", "Cardiomegaly": "0.0"},
        "50000002": {"No Finding": "1.0"},
        "50000003": {"Edema": "2.0"},
    }
    _gz_csv(
        root / "mimic-cxr-2.0.0-chexpert.csv.gz",
        ["subject_id", "study_id", *columns],
        [["1" + st[1:], st, *[values.get(c, "") for c in columns]] for st, values in labels.items()],
    )
    reports = {}
    for i, (d, s, st, _, _, outcome) in enumerate(IMAGES):
        folder = root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}"
        folder.mkdir(parents=True, exist_ok=True)
        if "image file not found" not in outcome:
            data = _jpg(i)
            (folder / f"{d}.jpg").write_bytes(data[:50] if "corrupt" in outcome else data)
        if "missing report" not in outcome:
            reports[f"files/p{s[:2]}/p{s}/s{st}.txt"] = REPORT
    if reports_as_zip:
        with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w") as zf:
            for name, text in reports.items():
                zf.writestr(f"mimic-cxr-reports/{name}", text)
    else:
        for name, text in reports.items():
            (root / name).write_text(text)


@pytest.mark.parametrize("reports_as_zip", [False, True])
def test_mimic_rows_labels_split_and_quarantine(tmp_path: Path, reports_as_zip: bool) -> None:
    make_mimic(tmp_path / "mimic", reports_as_zip)
    cfg = load_config("tiny", ["data.source=mimic_cxr_jpg", f"data.root={tmp_path / 'mimic'}"])
    result = build_manifest(cfg.data)
    rows = {r["sample_id"]: r for r in result.table.to_pylist()}
    assert len(rows) == len(IMAGES) + 1 and result.reports_read == 8  # rows in = rows out
    for dicom, _, _, _, split, outcome in IMAGES:
        row = rows[f"mimic:{dicom}"]
        status, _, reason = outcome.partition(":")
        assert row["status"] == status, (dicom, row["reason"])
        if reason:
            assert reason in row["reason"], (dicom, row["reason"])
        if split in ("train", "validate", "test"):
            assert row["split"] == {"validate": "val"}.get(split, split)
    assert rows["mimic:metadata-line-11"]["status"] == "quarantined"

    d1 = rows["mimic:d1a"]
    assert d1["report_id"] == "mimic:s50000001" and d1["patient_id"] == "mimic:p10000001"
    assert (d1["Edema"], d1["Pleural Effusion"], d1["Cardiomegaly"], d1["No Finding"]) == (1, -1, 0, None)
    assert d1["label_source"] == "mimic-cxr-2.0.0-chexpert.csv"
    assert d1["findings"] == "Invented finding one. Invented finding two."
    assert d1["impression"] == "Invented impression."
    assert d1["image_uri"].endswith("files/p10/p10000001/s50000001/d1a.jpg")
    assert rows["mimic:d2a"]["No Finding"] == 1 and rows["mimic:d2a"]["Edema"] is None


def test_mimic_dataset_labels_are_kept_and_the_rest_labeled_from_text(tmp_path: Path) -> None:
    from services.data.build import build_labeled_manifest

    make_mimic(tmp_path / "mimic")
    cfg = load_config("tiny", ["data.source=mimic_cxr_jpg", f"data.root={tmp_path / 'mimic'}"])
    rows = {r["sample_id"]: r for r in build_labeled_manifest(cfg).table.to_pylist()}
    d1 = rows["mimic:d1a"]  # study with a CheXpert CSV row: its labels stay, by name
    assert d1["label_source"] == "mimic-cxr-2.0.0-chexpert.csv" and d1["Edema"] == 1
    assert d1["disease_sentence"] == "There is edema."  # the uncertain effusion is left out (paper policy)
    d6 = rows["mimic:d6a"]  # no CSV row: labeled from its (invented) report text
    assert d6["label_source"] == "rules-v1" and d6["disease_sentence"] == "There is no finding."


def test_mimic_missing_table_or_column_is_named(tmp_path: Path) -> None:
    root = tmp_path / "mimic"
    make_mimic(root)
    cfg = load_config("tiny", ["data.source=mimic_cxr_jpg", f"data.root={root}"])
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(DataError, match="'mimic-cxr-2.0.0-split.csv.gz' not found"):
        build_manifest(cfg.data)
    _gz_csv(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id"], [["d1a", "50000001"]])
    with pytest.raises(DataError, match="missing column\\(s\\) split"):
        build_manifest(cfg.data)


def test_report_sections() -> None:
    sections = split_sections(REPORT)
    assert sections["INDICATION"] == "Invented indication."
    assert sections["FINDINGS"] == "Invented finding one. Invented finding two."
