"""Downstream experiment (paper Table VI): does synthetic data stand in for missing real data?

For each fraction f of the real train images (a seeded permutation, so the
1 % set is inside the 10 % set), one classifier is trained on the real subset
alone and one on the real subset plus one synthetic image for every
*remaining* train report (labelled with that report's labels). Both are
scored by mAUC on the real test images. All classifiers are the same
architecture and step budget (``eval.downstream_steps``), trained on Ray Train.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from services.eval.classifier import OwnDenseNet
from services.eval.classifier_train import data_id, train_classifier
from services.eval.labels import per_disease_auc
from services.eval.tables import MEASURED


def run_downstream(
    cfg: Any,
    real: tuple[np.ndarray, np.ndarray, list[str]],
    synthetic: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    work: Path,
    ray_storage: str,
    key: str,
    policy: dict[str, str],
) -> list[dict[str, Any]]:
    """Rows of Table VI. ``real`` = (images, targets, sample ids) of the train split; ``synthetic`` = one
    generated image per train row (same order) and its targets; ``test`` = real test images and targets."""
    images, targets, ids = real
    synth_images, synth_targets = synthetic
    n = len(images)
    order = np.random.default_rng(cfg.project.seed).permutation(n)
    rows = []
    for fraction in sorted(cfg.eval.downstream_fractions):
        k = max(1, math.ceil(fraction * n))
        chosen, rest = order[:k], order[k:]
        tag = f"{fraction * 100:g}pct"
        row: dict[str, Any] = {"real_fraction": fraction, "real_images": int(k), "synthetic_images": int(len(rest)),
                               "source": MEASURED}  # fmt: skip
        row["mAUC_real_only"], row["real_only"] = _fit_and_score(
            cfg, images[chosen], targets[chosen], [ids[i] for i in chosen], test, work / f"real-{tag}",
            ray_storage, f"downstream-real-{tag}-{key}", policy,
        )  # fmt: skip
        if len(rest):
            mixed_images = np.concatenate([images[chosen], synth_images[rest]])
            mixed_targets = np.concatenate([targets[chosen], synth_targets[rest]])
            mixed_ids = [ids[i] for i in chosen] + [f"synthetic:{ids[i]}" for i in rest]
            row["mAUC_with_synthetic"], row["with_synthetic"] = _fit_and_score(
                cfg, mixed_images, mixed_targets, mixed_ids, test, work / f"mixed-{tag}",
                ray_storage, f"downstream-mixed-{tag}-{key}", policy,
            )  # fmt: skip
        else:
            row["mAUC_with_synthetic"], row["with_synthetic"] = None, None
        rows.append(row)
    return rows


def _fit_and_score(
    cfg: Any,
    images: np.ndarray,
    targets: np.ndarray,
    ids: list[str],
    test: tuple[np.ndarray, np.ndarray],
    folder: Path,
    ray_storage: str,
    run_name: str,
    policy: dict[str, str],
) -> tuple[float | None, dict[str, Any]]:
    trained = train_classifier(
        cfg, images, targets, folder, ray_storage, run_name, cfg.eval.downstream_steps, data_id(ids, policy)
    )
    auc = per_disease_auc(test[1], OwnDenseNet.load(trained.folder).predict(test[0]))
    return auc["mAUC"], {"auc": auc, "classifier": trained.spec}
