"""Report labels as evaluation targets, and per-disease AUC that never guesses a missing label.

A manifest label is 1 (positive), 0 (negative), −1 (uncertain) or null
(unmentioned). Which of these count, and as what, is an explicit policy
(``eval.unmentioned``, ``eval.uncertain``) recorded with every number: a
label that is not known is *excluded* from its disease's AUC, never silently
read as negative. A disease whose remaining rows hold only one class has an
undefined AUC: it is reported as such with the reason, and left out of the
mean (mAUC), instead of crashing or being counted as 0.5.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from diffcxr.constants import EVAL_DISEASES


@dataclass(frozen=True)
class LabelPolicy:
    """How null (unmentioned) and −1 (uncertain) labels become targets: 'exclude' or a class."""

    unmentioned: str = "exclude"
    uncertain: str = "exclude"

    @classmethod
    def from_config(cls, eval_cfg: Any) -> LabelPolicy:
        return cls(eval_cfg.unmentioned, eval_cfg.uncertain)

    def target(self, value: Any) -> float:
        """1.0, 0.0 or NaN (excluded) for one manifest label value."""
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return {"negative": 0.0}.get(self.unmentioned, np.nan)
        value = int(value)
        if value == 1:
            return 1.0
        if value == 0:
            return 0.0
        if value == -1:
            return {"negative": 0.0, "positive": 1.0}.get(self.uncertain, np.nan)
        raise ValueError(f"label value {value!r} is not 1, 0, -1 or null")

    def describe(self) -> dict[str, str]:
        return {"unmentioned": self.unmentioned, "uncertain": self.uncertain}


def label_matrix(rows: Iterable[Mapping[str, Any]], policy: LabelPolicy) -> np.ndarray:
    """(N, 11) float32 targets in ``EVAL_DISEASES`` order (by name), NaN where excluded."""
    return np.array(
        [[policy.target(row.get(name)) for name in EVAL_DISEASES] for row in rows], dtype=np.float32
    ).reshape(-1, len(EVAL_DISEASES))


def per_disease_auc(targets: np.ndarray, scores: np.ndarray, bootstrap: int = 0, seed: int = 0) -> dict[str, Any]:
    """AUC per disease over the rows whose target is known, with counts; mAUC = mean of the defined ones.

    Returns ``{"mAUC": float | None, "defined": int, "per_disease": {name: {auc, n_pos, n_neg,
    n_excluded, reason}}}``; ``auc`` is None (with ``reason``) where only one class remains. With
    ``bootstrap`` > 0, each defined AUC gets ``ci95`` and the result ``mAUC_ci95``: percentile intervals over
    that many resamples of the rows (a disease with 3 positives has a wide one; the interval says so).
    """
    if targets.shape != scores.shape or targets.shape[1] != len(EVAL_DISEASES):
        raise ValueError(f"targets {targets.shape} and scores {scores.shape} must both be (N, {len(EVAL_DISEASES)})")
    per: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(EVAL_DISEASES):
        known = ~np.isnan(targets[:, i])
        y, s = targets[known, i], scores[known, i]
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        entry: dict[str, Any] = {"n_pos": n_pos, "n_neg": n_neg, "n_excluded": int((~known).sum())}
        if n_pos == 0 or n_neg == 0:
            entry.update(auc=None, reason=f"undefined: only {'negatives' if n_pos == 0 else 'positives'} in the set")
        else:
            entry.update(auc=round(float(roc_auc_score(y, s)), 4), reason=None)
        per[name] = entry
    defined = [e["auc"] for e in per.values() if e["auc"] is not None]
    result = {
        "mAUC": round(float(np.mean(defined)), 4) if defined else None,
        "defined": len(defined),
        "per_disease": per,
    }
    if bootstrap > 0 and defined:
        _bootstrap_intervals(targets, scores, result, bootstrap, seed)
    return result


def _rank_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged: equal to sklearn's, without its per-call
    validation (a bootstrap calls it thousands of times)."""
    ranks = rankdata(s)
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _bootstrap_intervals(targets: np.ndarray, scores: np.ndarray, result: dict[str, Any], n: int, seed: int) -> None:
    """Adds percentile 95% intervals (``ci95``) to each defined AUC and to mAUC, resampling rows with replacement;
    a resample in which a disease has one class only does not count for that disease."""
    rng = np.random.default_rng(seed)
    columns = [i for i, name in enumerate(EVAL_DISEASES) if result["per_disease"][name]["auc"] is not None]
    draws: dict[int, list[float]] = {i: [] for i in columns}
    means = []
    for _ in range(n):
        rows = rng.integers(0, len(targets), len(targets))
        aucs = []
        for i in columns:
            y, s = targets[rows, i], scores[rows, i]
            known = ~np.isnan(y)
            y, s = y[known], s[known]
            if 0 < y.sum() < len(y):
                draws[i].append(_rank_auc(y, s))
                aucs.append(draws[i][-1])
        if aucs:
            means.append(float(np.mean(aucs)))
    for i in columns:
        if draws[i]:
            lo, hi = np.percentile(draws[i], [2.5, 97.5])
            result["per_disease"][EVAL_DISEASES[i]]["ci95"] = [round(float(lo), 4), round(float(hi), 4)]
    lo, hi = np.percentile(means, [2.5, 97.5])
    result["mAUC_ci95"] = [round(float(lo), 4), round(float(hi), 4)]
