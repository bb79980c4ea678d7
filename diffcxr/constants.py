"""Names shared by every stage: the label vocabulary, splits and row statuses.

Labels are always addressed by *name*. CheXbert's output order and MIMIC's
alphabetical CSV order differ, and mapping by column index is a known bug in
public code of this method, so no code here exposes a positional label list
except ``CHEXPERT_LABELS`` itself, which is only a canonical display order.
"""

from __future__ import annotations

#: The 14 CheXpert observations, in the canonical (alphabetical) display order.
CHEXPERT_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

#: The 11 diseases the paper evaluates (per-disease AUC) and turns into sentences.
EVAL_DISEASES: tuple[str, ...] = (
    "Atelectasis",
    "Consolidation",
    "Pneumothorax",
    "Edema",
    "Pleural Effusion",
    "Pneumonia",
    "Cardiomegaly",
    "Lung Lesion",
    "Fracture",
    "Lung Opacity",
    "Enlarged Cardiomediastinum",
)

#: Allowed label values; ``None`` (null) means "not mentioned".
LABEL_VALUES: frozenset[int] = frozenset({1, 0, -1})

SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Every manifest row ends in exactly one of these: nothing is silently dropped.
STATUS_KEPT = "kept"
STATUS_FILTERED = "filtered"
STATUS_QUARANTINED = "quarantined"
STATUSES: tuple[str, ...] = (STATUS_KEPT, STATUS_FILTERED, STATUS_QUARANTINED)

FRONTAL_VIEWS: frozenset[str] = frozenset({"PA", "AP"})

DATA_SOURCES: tuple[str, ...] = ("iu_xray_wheel", "iu_xray", "mimic_cxr_jpg")
