"""A trivially separable condition: the smoke test of label-faithful generation.

Phantoms with and without severe cardiomegaly, each class with its own fixed
context, are what any correct report-to-image generator must learn first; an
independent judge (logistic regression on pooled pixels, fitted on *other*
freshly rendered phantoms) says whether generated images follow their class,
and the unconditional samples' mean image says whether the model draws a
chest at all. The CI test (``tests/test_generation_alignment.py``) and the
training benchmark (``benchmarks/diffusion_training.py``) both use it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from services.data import render_phantom


def phantoms(first_seed: int, count: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, size, size), labels (N,)): odd rows have severe cardiomegaly, even rows are normal."""
    images, labels = [], []
    for i in range(count):
        sick = i % 2
        findings = {"Cardiomegaly": 1} if sick else {}
        details = {"Cardiomegaly": {"laterality": None, "severity": "severe"}} if sick else None
        images.append(render_phantom(findings, details, seed=first_seed + i, size=size)[0])
        labels.append(sick)
    return np.stack(images), np.array(labels)


def class_contexts(tokens: int, dim: int, seed: int = 5) -> np.ndarray:
    """(2, tokens, dim) fixed contexts: row 0 normal, row 1 cardiomegaly (the unconditional one is zeros)."""
    return torch.randn(2, tokens, dim, generator=torch.Generator().manual_seed(seed)).numpy()


def _pooled(images: np.ndarray) -> np.ndarray:
    x = torch.as_tensor(np.asarray(images, np.float32))[:, None]
    return F.avg_pool2d(x, max(1, x.shape[-1] // 16)).flatten(1).numpy()


class Judge:
    """Logistic regression on 16×16 pooled pixels of real phantoms in [0, 1]: independent of any generator."""

    def __init__(self, size: int = 64, count: int = 128, first_seed: int = 50_000) -> None:
        images, labels = phantoms(first_seed, count, size)
        self.model = LogisticRegression(max_iter=2000).fit(_pooled(images / 255.0), labels)

    def auc(self, images: np.ndarray, labels: np.ndarray) -> float:
        """AUC of the judge's cardiomegaly score on images (N, S, S) in [0, 1] against the wanted labels."""
        return float(roc_auc_score(labels, self.model.predict_proba(_pooled(images))[:, 1]))


def mean_image_error(samples: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """(mean |mean(samples) − mean(real)|, mean |real − mean(real)|): a chest-drawing model has the first
    well below the second, the data's own spread around its mean image."""
    mean_image = real.mean(0)
    return float(np.abs(samples.mean(0) - mean_image).mean()), float(np.abs(real - mean_image).mean())
