"""Held-out evaluation of a text model: retrieval recall and disease-sentence AUC on real pixels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffcxr.constants import EVAL_DISEASES
from diffcxr.contracts.images import read_and_decode
from diffcxr.labeling.sentences import disease_sentence
from services.text.model import ReportEncoder
from services.text.retrieval import retrieval_metrics, sentence_auc


def load_pairs(rows: list[dict[str, Any]], size: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Rows whose image decodes, and their (N, size, size) uint8 images."""
    batch = {"sample_id": np.array([r["sample_id"] for r in rows], dtype=object)}
    batch["image_uri"] = np.array([r["image_uri"] for r in rows], dtype=object)
    decoded = read_and_decode(batch, size)  # an unreadable held-out image is left out of the metric
    keep = [i for i, e in enumerate(decoded["error"]) if not e]
    return [rows[i] for i in keep], decoded["image"][keep]


@torch.no_grad()
def text_features(model: ReportEncoder, texts: list[str], batch: int = 32) -> np.ndarray:
    tokenizer = model.tokenizer()
    out = []
    for start in range(0, len(texts), batch):
        global_token, _ = model.encode(tokenizer(texts[start : start + batch]).ids)
        out.append(model.text_features(global_token).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.spec["embed_dim"]), np.float32)


@torch.no_grad()
def image_features(model: ReportEncoder, images: np.ndarray, batch: int = 64) -> np.ndarray:
    out = [model.image_features(torch.from_numpy(images[i : i + batch])).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, model.spec["embed_dim"]), np.float32)


@torch.no_grad()
def tower_states(model: ReportEncoder, texts: list[str], batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The text tower's (pooled, token states) of ``texts``: computed once when several heads share a frozen
    tower (the trained and the untrained squeezer), instead of once per head."""
    tokenizer = model.tokenizer()
    model.eval()
    parts = [model.token_states(tokenizer(texts[i : i + batch]).ids) for i in range(0, len(texts), batch)]
    return torch.cat([p for p, _ in parts]), torch.cat([s for _, s in parts])


@torch.no_grad()
def features_from_states(model: ReportEncoder, pooled: torch.Tensor, states: torch.Tensor) -> np.ndarray:
    """Text features from token states computed earlier by the same frozen tower (benchmarks reuse them)."""
    model.eval()
    return model.text_features(model.squeeze_states(pooled, states)[0]).numpy()


def probe_sentences() -> dict[str, str]:
    """One "There is {disease}." probe per evaluated disease."""
    return {d: disease_sentence({d: 1}) for d in EVAL_DISEASES}


def negated_probes() -> dict[str, str]:
    """ "There is no {disease}." per evaluated disease: the other side of a zero-shot probe."""
    return {d: f"There is no {d.lower()}." for d in EVAL_DISEASES}


def evaluate(
    model: ReportEncoder,
    rows: list[dict[str, Any]],
    images: np.ndarray,
    report_features: np.ndarray | None = None,
    sentence_features: np.ndarray | None = None,
    negated_features: np.ndarray | None = None,
) -> dict[str, Any]:
    """Retrieval R@k on the pairs and per-disease probe AUCs with their means.

    ``sentence_auc``: cos(image, "There is X.") (the disease sentence the adapter
    reads); ``contrast_auc``: cos with it minus cos with "There is no X.".
    Text features are computed from the rows/probes unless given (probes in
    :func:`probe_sentences` / :func:`negated_probes` order).
    """
    model.eval()
    img = image_features(model, images)
    if report_features is None:
        report_features = text_features(model, [r["report_text"] or "" for r in rows])
    positive, negative = probe_sentences(), negated_probes()
    if sentence_features is None:
        sentence_features = text_features(model, list(positive.values()))
    if negated_features is None:
        negated_features = text_features(model, list(negative.values()))
    pos = dict(zip(positive, sentence_features, strict=True))
    neg = dict(zip(negative, negated_features, strict=True))
    labels = {d: [r.get(d) for r in rows] for d in EVAL_DISEASES}
    plain, contrast = sentence_auc(img, labels, pos), sentence_auc(img, labels, pos, neg)

    def mean(values: dict[str, float | None]) -> float | None:
        defined = [v for v in values.values() if v is not None]
        return float(np.mean(defined)) if defined else None

    return {
        "retrieval": retrieval_metrics(img, report_features),
        "sentence_auc": plain,
        "sentence_mauc": mean(plain),
        "contrast_auc": contrast,
        "contrast_mauc": mean(contrast),
    }
