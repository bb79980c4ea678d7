"""Scores of one image set: per-disease AUC against report labels, domain FID, Inception FID.

Everything is computed by the same function for generated images, for real
held-out images (the calibration reference) and for the sanity controls, so
the numbers in one table are comparable by construction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from services.eval.classifier import ReferenceClassifier
from services.eval.fid import InceptionFeatures, frechet_distance
from services.eval.labels import per_disease_auc


def image_metrics(
    classifier: ReferenceClassifier,
    images: np.ndarray,
    targets: np.ndarray,
    reference_features: np.ndarray,
    inception: InceptionFeatures | None = None,
    reference_inception: np.ndarray | None = None,
    fid_index: np.ndarray | None = None,
    scores: tuple[np.ndarray, np.ndarray] | None = None,
    bootstrap: int = 0,
) -> dict[str, Any]:
    """AUC per disease + mAUC over all ``images``, domain FID to the reference (real test) features, and
    Inception FID when its features are given. ``targets`` (N, 11), NaN = excluded. ``fid_index`` picks the
    images the FIDs use (one per report, so that both sets have the same size: FID is biased by size).
    ``scores``: the classifier's (probabilities, features) of ``images`` when the caller already has them."""
    probs, features = scores if scores is not None else classifier.run(images)
    pick = np.arange(len(images)) if fid_index is None else fid_index
    out: dict[str, Any] = {
        "n_images": int(len(images)),
        "auc": per_disease_auc(targets, probs, bootstrap=bootstrap),
        "fid_domain": round(frechet_distance(features[pick], reference_features), 4),
        "fid_images": int(len(pick)),
        "fid_reference_images": int(len(reference_features)),
    }
    out["mAUC"] = out["auc"]["mAUC"]
    if "mAUC_ci95" in out["auc"]:
        out["mAUC_ci95"] = out["auc"]["mAUC_ci95"]
    if inception is not None and reference_inception is not None:
        out["fid_inception"] = round(frechet_distance(inception(images[pick]), reference_inception), 4)
    return out
