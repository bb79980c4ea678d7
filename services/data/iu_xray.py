"""IU-Xray (Open-i, Indiana University) → manifest rows.

Two sources share one parser:

* ``iu_xray_wheel``: the 3,955 report XMLs shipped inside the installed
  ``torchxrayvision`` wheel (``data/NLMCXR_reports.tgz``), no images. Read at run
  time only: the texts are CC BY-NC-ND and must never be committed.
* ``iu_xray``: a user's copy on disk, ``ROOT/ecgen-radiology/*.xml`` plus the
  Open-i PNGs in ``ROOT/NLMCXR_png/`` (or ``ROOT/png/``, ``ROOT/images/``, ``ROOT``).

View positions come from the DICOM metadata table in the same wheel
(``nlmcxr_dicom_metadata.csv.gz``, column ``View Position``); where that is blank
the wheel's t-SNE derived view (``nlmcxr_tsne_pa.csv.gz``) is used; where both are
blank the view is unknown. Only frontal views (PA/AP) are kept for training, as
in the paper; the others stay in the manifest as ``filtered`` with the reason.
"""

from __future__ import annotations

import csv
import gzip
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from diffcxr import storage
from diffcxr.constants import FRONTAL_VIEWS, STATUS_FILTERED, STATUS_KEPT, STATUS_QUARANTINED
from diffcxr.errors import DataError

SOURCE_WHEEL = "iu_xray_wheel"
SOURCE_DISK = "iu_xray"
PNG_DIR_CANDIDATES = ("NLMCXR_png", "png", "images", ".")
_LATERAL_NAMES = {"LL", "RL", "LATERAL", "LARGE LATERAL", "L"}


@dataclass
class IUReport:
    """One parsed ``ecgen-radiology`` report."""

    uid: str
    findings: str | None
    impression: str | None
    mesh_terms: list[str] = field(default_factory=list)
    image_ids: list[str] = field(default_factory=list)

    @property
    def report_id(self) -> str:
        return f"iu:{self.uid}"

    @property
    def text(self) -> str:
        parts = [p for p in (self.findings, self.impression) if p]
        return " ".join(parts)

    @property
    def number(self) -> int:
        digits = "".join(ch for ch in self.uid if ch.isdigit())
        return int(digits) if digits else 0


def _clean(text: str | None) -> str | None:
    text = " ".join((text or "").split())
    return text or None


def parse_report(xml: bytes) -> IUReport:
    """Parse one report XML; raises ``ValueError`` with the reason when it is malformed."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise ValueError(f"malformed report XML: {exc}") from None
    uid_node = root.find("uId")
    uid = uid_node.attrib.get("id") if uid_node is not None else None
    if not uid:
        raise ValueError("malformed report XML: missing <uId id=...>")
    sections = {(node.attrib.get("Label") or "").upper(): _clean(node.text) for node in root.iter("AbstractText")}
    mesh = sorted({(n.text or "").strip() for n in root.findall("./MeSH/major") if (n.text or "").strip()})
    images = [n.attrib["id"] for n in root.findall("./parentImage") if n.attrib.get("id")]
    return IUReport(uid, sections.get("FINDINGS"), sections.get("IMPRESSION"), mesh, images)


# ----------------------------------------------------------------------------- wheel files


def wheel_data_dir() -> Path:
    """The ``data`` folder of the installed torchxrayvision (no import of the package itself)."""
    from importlib.util import find_spec

    spec = find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("torchxrayvision is not installed: it ships the IU-Xray reports (pip install torchxrayvision)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (folder / "NLMCXR_reports.tgz").is_file():
        raise DataError(f"torchxrayvision at {folder.parent} has no data/NLMCXR_reports.tgz")
    return folder


def iter_wheel_xml() -> Iterator[tuple[str, bytes]]:
    """(file name, XML bytes) for every report in the wheel's tarball."""
    with tarfile.open(wheel_data_dir() / "NLMCXR_reports.tgz", "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".xml"):
                handle = tar.extractfile(member)
                yield Path(member.name).name, handle.read() if handle else b""


def iter_disk_xml(root: str) -> Iterator[tuple[str, bytes]]:
    """(file name, XML bytes) for ``ROOT/ecgen-radiology/*.xml``; an empty folder is an error, raised now."""
    folder = storage.join(root, "ecgen-radiology")
    files = storage.list_files(folder, suffix=".xml")
    if not files:
        raise DataError(f"data.root: no report XMLs under '{folder}' (expected ecgen-radiology/*.xml)")
    return ((Path(uri).name, storage.read_bytes(uri)) for uri in files)


@lru_cache(maxsize=1)
def view_table() -> dict[str, str]:
    """image id → normalised view ('PA', 'AP', 'LATERAL'), from the wheel's metadata tables."""
    folder = wheel_data_dir()
    views: dict[str, str] = {}
    with gzip.open(folder / "nlmcxr_tsne_pa.csv.gz", "rt", newline="") as f:
        for row in csv.DictReader(f):
            views[row["imageid"]] = normalise_view(row.get("tsne-view"))
    with gzip.open(folder / "nlmcxr_dicom_metadata.csv.gz", "rt", newline="") as f:
        for row in csv.DictReader(f):
            view = normalise_view(row.get("View Position"))
            if view:
                views[row["imageid"]] = view
    return {k: v for k, v in views.items() if v}


def normalise_view(raw: str | None) -> str | None:
    value = (raw or "").strip().upper()
    if value in FRONTAL_VIEWS:
        return value
    if value in _LATERAL_NAMES:
        return "LATERAL"
    return None


def _find_png_dir(root: str) -> str:
    for name in PNG_DIR_CANDIDATES:
        folder = root if name == "." else storage.join(root, name)
        if storage.list_files(folder, suffix=".png", recursive=False):
            return folder
    raise DataError(f"data.root: no PNG images found under '{root}' (looked in {', '.join(PNG_DIR_CANDIDATES)})")


# ----------------------------------------------------------------------------- rows


def report_rows(
    xml_files: Iterator[tuple[str, bytes]],
    source: str,
    image_dir: str | None,
    frontal_only: bool,
    max_reports: int | None,
) -> tuple[list[dict[str, Any]], int]:
    """Manifest rows (without split) for the reports, and how many reports were read.

    One row per image. A report without images gets one row (filtered); a
    malformed XML gets one row (quarantined) named after its file.
    """
    parsed: list[IUReport] = []
    rows: list[dict[str, Any]] = []
    for name, data in xml_files:
        try:
            parsed.append(parse_report(data))
        except ValueError as exc:
            rows.append(
                {"sample_id": f"iu:file:{name}", "source": source, "status": STATUS_QUARANTINED, "reason": str(exc)}
            )
    parsed.sort(key=lambda r: (r.number, r.uid))
    if max_reports is not None:
        parsed = parsed[:max_reports]
    views = view_table()
    for report in parsed:
        base = {
            "report_id": report.report_id,
            "patient_id": report.report_id,  # IU-Xray is de-identified per report
            "report_text": report.text or None,
            "findings": report.findings,
            "impression": report.impression,
            "mesh_terms": report.mesh_terms,
            "source": source,
        }
        if not report.image_ids:
            rows.append(
                {
                    **base,
                    "sample_id": f"{report.report_id}:no-image",
                    "status": STATUS_FILTERED,
                    "reason": "report has no image",
                }
            )
            continue
        for image_id in report.image_ids:
            view = views.get(image_id)
            status, reason = STATUS_KEPT, None
            if not report.text:
                status, reason = STATUS_FILTERED, "empty report: no findings or impression"
            elif frontal_only and view not in FRONTAL_VIEWS:
                status = STATUS_FILTERED
                reason = f"non-frontal view ({view or 'unknown'}): frontal views only"
            rows.append(
                {
                    **base,
                    "sample_id": f"iu:{image_id}",
                    "image_uri": storage.join(image_dir, f"{image_id}.png") if image_dir else None,
                    "view": view,
                    "status": status,
                    "reason": reason,
                }
            )
    return rows, len(parsed)


def read_wheel(frontal_only: bool = True, max_reports: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """Rows for the IU reports in the installed torchxrayvision wheel (no images)."""
    return report_rows(iter_wheel_xml(), SOURCE_WHEEL, None, frontal_only, max_reports)


def read_disk(root: str, frontal_only: bool = True, max_reports: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """Rows for an Open-i IU-Xray copy on disk (XML folder + PNG folder)."""
    return report_rows(iter_disk_xml(root), SOURCE_DISK, _find_png_dir(root), frontal_only, max_reports)
