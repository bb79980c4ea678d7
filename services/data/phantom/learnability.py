"""Is the phantom benchmark learnable, and is it not trivial?

A small CNN is trained to detect the 11 diseases on phantoms and scored by AUC
on held-out phantoms (it should reach ≥ 0.9 for every disease); a logistic
regression on 16×16 downsampled pixels is the "too simple" reference that
shows the task needs more than global brightness. Used by the test suite (a
small run) and by ``benchmarks/phantom_learnability.py`` (a larger one).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from torch import nn

from diffcxr.constants import EVAL_DISEASES
from services.data.phantom.render import render


def random_findings(seed: int, prevalence: float = 0.22) -> dict[str, int]:
    """Independent random positives, so every disease is frequent and co-occurrence is uninformative."""
    rng = np.random.default_rng([seed, 99])
    return {name: 1 for name in EVAL_DISEASES if rng.random() < prevalence}


def _render_one(args: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, size = args
    labels = random_findings(seed)
    image, _ = render(labels, None, seed=seed, size=size)
    return image, np.array([labels.get(n, 0) for n in EVAL_DISEASES], dtype=np.float32)


def make_dataset(first_seed: int, count: int, size: int, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, S, S), labels (N, 11)) for seeds first_seed … first_seed+count-1."""
    jobs = [(first_seed + i, size) for i in range(count)]
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
            out = list(pool.map(_render_one, jobs, chunksize=32))
    else:
        out = [_render_one(j) for j in jobs]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


class SmallCNN(nn.Module):
    """Five conv blocks and a linear head: about 150 k parameters."""

    def __init__(self, classes: int = len(EVAL_DISEASES)) -> None:
        super().__init__()

        def block(i: int, o: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

        self.features = nn.Sequential(
            block(1, 16, 2), block(16, 32, 2), block(32, 64, 2), block(64, 64, 1), block(64, 96, 2), block(96, 96, 1)
        )
        self.head = nn.Linear(96 * 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3))], dim=1))


@dataclass
class LearnabilityResult:
    cnn_auc: dict[str, float]
    simple_auc: dict[str, float]

    @property
    def cnn_min(self) -> float:
        return min(self.cnn_auc.values())


def per_disease_auc(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {name: round(float(roc_auc_score(labels[:, i], scores[:, i])), 4) for i, name in enumerate(EVAL_DISEASES)}


def train_cnn(
    x_train: np.ndarray, y_train: np.ndarray, epochs: int = 8, batch: int = 64, seed: int = 0, lr: float = 3e-3
) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN().to(memory_format=torch.channels_last)  # oneDNN's native layout: ~15 % faster steps
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(x_train) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    x = torch.from_numpy(x_train).float().div(255).unsqueeze(1).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            xb = x[idx]
            if torch.rand(1, generator=gen).item() < 0.5:  # mild augmentation: brightness jitter
                xb = (xb * (0.9 + 0.2 * torch.rand(len(idx), 1, 1, 1, generator=gen))).clamp(0, 1)
            loss = nn.functional.binary_cross_entropy_with_logits(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def predict(model: SmallCNN, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).float().div(255).unsqueeze(1).contiguous(memory_format=torch.channels_last)
    return torch.cat([torch.sigmoid(model(x[i : i + 256])) for i in range(0, len(x), 256)]).numpy()


def simple_baseline(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Logistic regression per disease on 16×16 average-pooled pixels."""

    def pool(images: np.ndarray) -> np.ndarray:
        n, s, _ = images.shape
        f = s // 16
        return images.reshape(n, 16, f, 16, f).mean((2, 4)).reshape(n, -1) / 255.0

    a, b = pool(x_train), pool(x_test)
    scores = np.zeros((len(x_test), len(EVAL_DISEASES)))
    for i in range(len(EVAL_DISEASES)):
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(a, y_train[:, i])
        scores[:, i] = clf.predict_proba(b)[:, 1]
    return scores


def evaluate(train: int, test: int, size: int, epochs: int, workers: int = 2, seed: int = 0) -> LearnabilityResult:
    """Render, train both models, score per-disease AUC on held-out phantoms (disjoint seeds)."""
    x_tr, y_tr = make_dataset(1_000_000 + seed * 100_000, train, size, workers)
    x_te, y_te = make_dataset(2_000_000 + seed * 100_000, test, size, workers)
    model = train_cnn(x_tr, y_tr, epochs=epochs, seed=seed)
    return LearnabilityResult(
        per_disease_auc(y_te, predict(model, x_te)), per_disease_auc(y_te, simple_baseline(x_tr, y_tr, x_te))
    )
