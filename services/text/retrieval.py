"""How well text and image features agree: retrieval recall and per-disease AUC.

Image↔report retrieval on held-out pairs (R@1/5/10 both ways: the true partner
is the one pair with the same sample id) and disease-sentence→image AUC: for each
disease, cosine similarity of every image with "There is {disease}." scored
against the image's label. Chance is R@k = k/N and AUC = 0.5.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def recall_at_k(similarity: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """``similarity`` (N, N) with the true partner on the diagonal; rows are queries."""
    n = similarity.shape[0]
    truth = similarity[np.arange(n), np.arange(n)][:, None]
    rank = (similarity > truth).sum(axis=1)  # 0 = the partner ranks first (ties count in its favour)
    return {f"R@{k}": float((rank < k).mean()) for k in ks}


def retrieval_metrics(image_features: np.ndarray, text_features: np.ndarray) -> dict[str, float]:
    """Image→report and report→image recall, plus their mean R@k (features are unit-norm)."""
    sim = image_features.astype(np.float32) @ text_features.astype(np.float32).T
    i2t, t2i = recall_at_k(sim), recall_at_k(sim.T)
    out = {f"image_to_report_{k}": v for k, v in i2t.items()}
    out.update({f"report_to_image_{k}": v for k, v in t2i.items()})
    out.update({f"mean_{k}": (i2t[k] + t2i[k]) / 2 for k in i2t})
    out["pairs"] = float(sim.shape[0])
    out["chance_R@1"] = 1.0 / sim.shape[0]
    return out


def sentence_auc(
    image_features: np.ndarray,
    labels: dict[str, list[int | None]],
    sentence_features: dict[str, np.ndarray],
    negative_features: dict[str, np.ndarray] | None = None,
) -> dict[str, float | None]:
    """Per disease: AUC of cos(image, "There is {disease}.") against positive (1) vs not (0/None/-1).

    With ``negative_features`` ("There is no {disease}.") the score is the
    difference of the two similarities: CLIP-style zero-shot classification,
    which cancels what the two sentences share (the disease word itself).
    Diseases without both classes among the images get None (AUC undefined).
    """
    out: dict[str, float | None] = {}
    image = image_features.astype(np.float32)
    for disease, values in labels.items():
        y = np.array([1 if v == 1 else 0 for v in values])
        if disease not in sentence_features or y.min() == y.max():
            out[disease] = None
            continue
        score = image @ sentence_features[disease].astype(np.float32)
        if negative_features is not None:
            score = score - image @ negative_features[disease].astype(np.float32)
        out[disease] = float(roc_auc_score(y, score))
    return out
