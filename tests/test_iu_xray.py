"""IU-Xray: the real reports from the torchxrayvision wheel, and an on-disk copy in Open-i's layout.

The on-disk fixtures are written by the tests (invented report text in the
``ecgen-radiology`` XML schema, generated PNGs); the image ids are real IU ids
so that the view table from the wheel applies to them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcxr import storage
from diffcxr.config import load_config
from services.data import iu_xray
from services.data.build import build_manifest
from services.data.splits import hash_split


@pytest.fixture(scope="module")
def full_wheel_manifest():
    cfg = load_config("tiny", ["data.max_reports=null"])
    return build_manifest(cfg.data)


def test_all_3955_wheel_reports_are_accounted_for(full_wheel_manifest) -> None:
    table = full_wheel_manifest.table
    assert full_wheel_manifest.reports_read == 3955
    assert len(set(table.column("report_id").to_pylist())) == 3955
    statuses = Counter(table.column("status").to_pylist())
    assert sum(statuses.values()) == table.num_rows
    assert statuses["kept"] > 3500 and statuses["quarantined"] == 0
    assert set(table.column("source").to_pylist()) == {"iu_xray_wheel"}


def test_only_frontal_views_are_kept(full_wheel_manifest) -> None:
    rows = full_wheel_manifest.table.to_pylist()
    kept_views = {r["view"] for r in rows if r["status"] == "kept"}
    assert kept_views == {"PA", "AP"}
    lateral = [r for r in rows if r["view"] == "LATERAL"]
    assert lateral and all(r["status"] == "filtered" for r in lateral)
    assert sum("non-frontal view (LATERAL)" in r["reason"] for r in lateral) > 1000
    for r in rows:
        if r["status"] == "kept":
            assert r["report_text"] and r["image_uri"] is None


def test_report_sections_and_mesh_are_parsed(full_wheel_manifest) -> None:
    rows = {r["sample_id"]: r for r in full_wheel_manifest.table.to_pylist()}
    any_row = rows["iu:CXR1_1_IM-0001-3001"]
    assert any_row["report_id"] == "iu:CXR1"
    assert any_row["findings"] and any_row["impression"]
    assert any_row["report_text"] == f"{any_row['findings']} {any_row['impression']}"
    assert any_row["mesh_terms"] == ["normal"]


def test_split_is_by_report_stable_and_near_7_1_2(full_wheel_manifest) -> None:
    rows = full_wheel_manifest.table.to_pylist()
    by_report: dict[str, set[str]] = {}
    for r in rows:
        by_report.setdefault(r["report_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_report.values()), "a report's images straddle splits"
    counts = Counter(next(iter(s)) for s in by_report.values())
    total = sum(counts.values())
    for split, fraction in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        assert abs(counts[split] / total - fraction) < 0.03
    # subsampling never moves a report to another split
    small = build_manifest(load_config("tiny", ["data.max_reports=50"]).data).table.to_pylist()
    assert all(r["split"] == next(iter(by_report[r["report_id"]])) for r in small)
    assert hash_split("iu:CXR1", (0.7, 0.1, 0.2), "salt-a") == hash_split("iu:CXR1", (0.7, 0.1, 0.2), "salt-a")


def test_max_reports_takes_the_first_reports_by_number() -> None:
    result = build_manifest(load_config("tiny", ["data.max_reports=5"]).data)
    assert sorted(set(result.table.column("report_id").to_pylist())) == sorted(f"iu:CXR{i}" for i in range(1, 6))


def test_frontal_only_off_keeps_lateral_views() -> None:
    result = build_manifest(load_config("tiny", ["data.max_reports=30", "data.frontal_only=false"]).data)
    kept_views = {r["view"] for r in result.table.to_pylist() if r["status"] == "kept"}
    assert "LATERAL" in kept_views


def test_malformed_xml_is_quarantined_not_dropped() -> None:
    good = b"""<eCitation><uId id="CXR9001"/><MedlineCitation><Article><Abstract>
      <AbstractText Label="FINDINGS">Invented findings.</AbstractText>
      <AbstractText Label="IMPRESSION">Invented impression.</AbstractText></Abstract></Article></MedlineCitation>
      <MeSH><major>normal</major></MeSH><parentImage id="CXR9001_IM-0001-1001"/></eCitation>"""
    files = [("9001.xml", good), ("broken.xml", b"<eCitation><uId id="), ("noid.xml", b"<eCitation/>")]
    rows, reports = iu_xray.report_rows(iter(files), "iu_xray", None, frontal_only=False, max_reports=None)
    assert reports == 1 and len(rows) == 3
    by_id = {r["sample_id"]: r for r in rows}
    assert by_id["iu:file:broken.xml"]["status"] == "quarantined"
    assert "malformed report XML" in by_id["iu:file:broken.xml"]["reason"]
    assert "missing <uId" in by_id["iu:file:noid.xml"]["reason"]
    assert by_id["iu:CXR9001_IM-0001-1001"]["status"] == "kept"


# ----------------------------------------------------------------------------- on disk


def _views_by_kind() -> tuple[list[str], list[str]]:
    views = iu_xray.view_table()
    frontal = sorted(k for k, v in views.items() if v == "PA")[:3]
    lateral = sorted(k for k, v in views.items() if v == "LATERAL")[:1]
    return frontal, lateral


def _report_xml(uid: str, image_ids: list[str], findings: str = "Invented findings.") -> bytes:
    images = "".join(f'<parentImage id="{i}"><caption>invented</caption></parentImage>' for i in image_ids)
    return (
        f'<?xml version="1.0"?><eCitation><uId id="{uid}"/><MedlineCitation><Article><Abstract>'
        f'<AbstractText Label="FINDINGS">{findings}</AbstractText>'
        f'<AbstractText Label="IMPRESSION">Invented impression.</AbstractText>'
        f"</Abstract></Article></MedlineCitation><MeSH><major>normal</major></MeSH>{images}</eCitation>"
    ).encode()


def _png(seed: int) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def make_iu_disk(root: str) -> dict[str, str]:
    """Write an Open-i layout under ``root``; returns image id → what the test expects."""
    (f1, f2, f3), (lat,) = _views_by_kind()
    storage.write_bytes(storage.join(root, "ecgen-radiology", "1.xml"), _report_xml("CXR1", [f1, lat]))
    storage.write_bytes(storage.join(root, "ecgen-radiology", "2.xml"), _report_xml("CXR2", [f2]))
    storage.write_bytes(storage.join(root, "ecgen-radiology", "3.xml"), _report_xml("CXR3", [f3]))
    storage.write_bytes(storage.join(root, "ecgen-radiology", "4.xml"), b"<eCitation><uId")
    png = storage.join(root, "NLMCXR_png")
    storage.write_bytes(storage.join(png, f"{f1}.png"), _png(1))
    storage.write_bytes(storage.join(png, f"{lat}.png"), _png(2))
    storage.write_bytes(storage.join(png, f"{f2}.png"), _png(3)[:60])  # truncated: corrupt
    # f3's PNG is missing
    return {f1: "kept", lat: "filtered", f2: "corrupt", f3: "missing"}


def _check_disk_manifest(table, expected: dict[str, str]) -> None:
    rows = {r["sample_id"]: r for r in table.to_pylist()}
    assert len(rows) == 5  # 4 images + 1 malformed XML: nothing dropped
    for image_id, outcome in expected.items():
        row = rows[f"iu:{image_id}"]
        assert row["source"] == "iu_xray"
        if outcome == "kept":
            assert row["status"] == "kept" and storage.is_file(row["image_uri"])
        elif outcome == "filtered":
            assert row["status"] == "filtered" and "non-frontal view (LATERAL)" in row["reason"]
        elif outcome == "corrupt":
            assert row["status"] == "quarantined" and row["reason"].startswith("corrupt image")
        else:
            assert row["status"] == "quarantined" and row["reason"] == "image file not found"
    assert rows["iu:file:4.xml"]["status"] == "quarantined"


def test_iu_on_disk_quarantines_bad_files(tmp_path: Path) -> None:
    expected = make_iu_disk(str(tmp_path / "iu"))
    cfg = load_config("tiny", ["data.source=iu_xray", f"data.root={tmp_path / 'iu'}", "data.max_reports=null"])
    _check_disk_manifest(build_manifest(cfg.data).table, expected)


@pytest.mark.s3
def test_iu_on_disk_layout_read_from_s3(s3_bucket: str) -> None:
    root = f"{s3_bucket}/datasets/iu"
    expected = make_iu_disk(root)
    cfg = load_config("tiny", ["data.source=iu_xray", f"data.root={root}", "data.max_reports=null"])
    table = build_manifest(cfg.data).table
    _check_disk_manifest(table, expected)
    assert all(u.startswith(root) for u in table.column("image_uri").to_pylist() if u)


def test_iu_root_without_xml_is_a_clear_error(tmp_path: Path) -> None:
    from diffcxr.errors import DataError

    cfg = load_config("tiny", ["data.source=iu_xray", f"data.root={tmp_path}"])
    with pytest.raises(DataError, match="no report XMLs under"):
        build_manifest(cfg.data)
