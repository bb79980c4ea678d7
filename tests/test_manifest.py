"""The manifest contract: columns by name, valid values, every non-kept row explained."""

from __future__ import annotations

import pyarrow as pa
import pytest

from diffcxr import manifest
from diffcxr.constants import CHEXPERT_LABELS, EVAL_DISEASES
from diffcxr.errors import DataError

DESIGN_COLUMNS = [
    "sample_id",
    "image_uri",
    "report_text",
    "findings",
    "impression",
    "view",
    "split",
    "source",
    "disease_sentence",
    "noise_kind",
]


def _row(i: int, **kw: object) -> dict[str, object]:
    return {"sample_id": f"s{i}", "report_id": f"r{i}", "source": "test", "split": "train", **kw}


def test_schema_has_the_design_columns_and_labels_by_name() -> None:
    for column in DESIGN_COLUMNS + list(CHEXPERT_LABELS) + ["status", "reason"]:
        assert column in manifest.COLUMNS
    assert set(EVAL_DISEASES) <= set(CHEXPERT_LABELS) and len(CHEXPERT_LABELS) == 14
    assert manifest.MANIFEST_SCHEMA.field("Edema").type == pa.int8()


def test_rows_fill_missing_columns_with_null() -> None:
    table = manifest.to_table([_row(1, Edema=1, Cardiomegaly=-1)])
    row = table.to_pylist()[0]
    assert row["Edema"] == 1 and row["Cardiomegaly"] == -1 and row["Fracture"] is None
    assert row["status"] == "kept"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([_row(1), _row(1)], "'sample_id' has duplicates"),
        ([_row(1, status="lost")], "'status' has invalid values \\['lost'\\]"),
        ([_row(1, split="training")], "'split' has invalid values"),
        ([_row(1, Edema=2)], "'Edema' has invalid values \\[2\\]"),
        ([_row(1, status="filtered")], "'reason' is empty for 1 non-kept row"),
        ([_row(1, colour="red")], "unknown manifest column"),
        ([_row(1, Edema="yes")], "do not match the schema"),
    ],
)
def test_contract_violations_name_the_column(rows: list[dict[str, object]], message: str) -> None:
    with pytest.raises(DataError, match=message):
        manifest.to_table(rows)


def test_kept_and_summary(tmp_path) -> None:
    table = manifest.to_table(
        [
            _row(1),
            _row(2, split="test"),
            _row(3, status="filtered", reason="non-frontal view (LATERAL): frontal views only"),
            _row(4, status="quarantined", reason="corrupt image: truncated"),
        ]
    )
    assert manifest.kept(table).num_rows == 2
    assert manifest.kept(table, "test").column("sample_id").to_pylist() == ["s2"]
    summary = manifest.summary(table)
    assert summary["status"] == {"filtered": 1, "kept": 2, "quarantined": 1}
    assert summary["top_reasons"] == {"filtered: non-frontal view (LATERAL)": 1, "quarantined: corrupt image": 1}
    uri = str(tmp_path / "m.parquet")
    manifest.write(table, uri)
    assert manifest.read(uri).equals(table)


def test_read_rejects_a_table_missing_columns(tmp_path) -> None:
    from diffcxr import storage

    uri = str(tmp_path / "bad.parquet")
    storage.write_parquet(pa.table({"sample_id": ["a"]}), uri)
    with pytest.raises(DataError, match="missing column"):
        manifest.read(uri)
