"""Reproducible train/val/test split by report id, for datasets without an official split.

A report's split depends only on its id and a salt (a hash, not a shuffle), so
it never changes when reports are added, removed or subsampled, and every image
of a report (and so of a patient, in IU-Xray) lands in the same split: no
leakage of one study's views between train and test.
"""

from __future__ import annotations

import hashlib

from diffcxr.constants import SPLITS


def split_fraction_point(report_id: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by (salt, report_id)."""
    digest = hashlib.sha256(f"{salt}:{report_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_split(report_id: str, fractions: tuple[float, float, float], salt: str) -> str:
    """'train' | 'val' | 'test' for a report id, with the given fractions."""
    point = split_fraction_point(report_id, salt)
    cumulative = 0.0
    for name, fraction in zip(SPLITS, fractions, strict=True):
        cumulative += fraction
        if point < cumulative:
            return name
    return SPLITS[-1]
