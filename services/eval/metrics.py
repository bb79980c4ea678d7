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
) -> dict[str, Any]:
    """AUC per disease + mAUC, domain FID to the reference (real test) features, and Inception FID when
    its features are given. ``targets`` (N, 11), NaN = excluded."""
    probs, features = classifier.run(images)
    out: dict[str, Any] = {
        "n_images": int(len(images)),
        "auc": per_disease_auc(targets, probs),
        "fid_domain": round(frechet_distance(features, reference_features), 4),
        "fid_reference_images": int(len(reference_features)),
    }
    out["mAUC"] = out["auc"]["mAUC"]
    if inception is not None and reference_inception is not None:
        out["fid_inception"] = round(frechet_distance(inception(images), reference_inception), 4)
    return out
