"""CSV tables (plain or gzip) from any URI, with required columns checked by name."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator

from diffcxr import storage
from diffcxr.errors import DataError


def read_csv(uri: str, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV or CSV.GZ; a missing required column is an error naming it.

    Validation happens when this is called, not when iteration starts, so a bad
    file fails before any row is processed.
    """
    data = storage.read_bytes(uri)
    if uri.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataError(f"'{uri}' is not a readable gzip file: {exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"'{uri}' is not valid UTF-8 (byte offset {exc.start})") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"'{uri}' is missing column(s) {', '.join(missing)}")
    return enumerate(reader, start=2)
