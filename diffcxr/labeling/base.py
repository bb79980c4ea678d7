"""The labeler interface and its result type, shared by every labeler."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from diffcxr.constants import CHEXPERT_LABELS, LABEL_VALUES
from diffcxr.errors import DataError


@dataclass
class ReportLabels:
    """Labels of one report: every CheXpert observation by name, plus details of positive findings.

    ``labels[name]`` is 1 (positive), 0 (negative), -1 (uncertain) or None (not mentioned).
    ``details[name]`` holds ``laterality`` (left/right/bilateral) and ``severity``
    (tiny/small/moderate/large/mild/severe) where the report states them.
    """

    labels: dict[str, int | None]
    details: dict[str, dict[str, str | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.labels) - set(CHEXPERT_LABELS)
        if unknown:
            raise DataError(f"unknown label name(s): {', '.join(sorted(unknown))}")
        for name in CHEXPERT_LABELS:
            value = self.labels.setdefault(name, None)
            if value is not None and value not in LABEL_VALUES:
                raise DataError(f"label '{name}' has value {value!r}; allowed: 1, 0, -1, null")

    @classmethod
    def empty(cls) -> ReportLabels:
        return cls(dict.fromkeys(CHEXPERT_LABELS))

    def positives(self) -> list[str]:
        return [name for name in CHEXPERT_LABELS if self.labels[name] == 1]

    def to_json(self, disease_sentence: str) -> dict[str, Any]:
        return {
            "labels": {name: self.labels[name] for name in CHEXPERT_LABELS},
            "disease_sentence": disease_sentence,
            "details": self.details,
        }


class Labeler(Protocol):
    """Anything that labels reports. ``name`` is recorded in the manifest's ``label_source``."""

    name: str

    def label_reports(self, report_ids: Sequence[str | None], texts: Sequence[str | None]) -> list[ReportLabels | None]:
        """One result per report, in order; None where this labeler has no labels for it."""
        ...


def decode_report(data: bytes | str) -> str:
    """Report text from bytes, strictly UTF-8: bad bytes are an error naming their position.

    Silently replacing bytes could turn a report's words into different ones, so
    ingestion refuses them instead.
    """
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates from a mis-decoded argv/file
            raise DataError(f"report text is not valid UTF-8 (character {exc.start})") from None
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"report text is not valid UTF-8: bad byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from None


def parse_label_cell(value: str | None) -> int | None:
    """A CheXpert-style CSV cell (``1.0``, ``0``, ``-1.0``, blank) → 1/0/-1/None; ValueError otherwise."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"label value {text!r} is not 1, 0, -1 or blank") from None
    if number not in (1.0, 0.0, -1.0):
        raise ValueError(f"label value {text!r} is not 1, 0, -1 or blank")
    return int(number)
