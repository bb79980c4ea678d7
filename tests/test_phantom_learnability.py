"""The phantom benchmark is learnable (a small CNN reaches AUC ≥ 0.9 for every disease) and not trivial.

About 2.5 minutes on 2 CPU cores: 3,000 training and 600 held-out phantoms at
128 px (disjoint seeds), 20 epochs. It is the only evidence that the renderer's
disease signatures are faithful enough to learn, so it runs in CI.
"""

from __future__ import annotations

import numpy as np

from diffcxr.constants import EVAL_DISEASES
from services.data.phantom.learnability import evaluate


def test_small_cnn_learns_every_disease_and_pixels_alone_do_not() -> None:
    result = evaluate(train=3000, test=600, size=128, epochs=20, workers=2)
    assert set(result.cnn_auc) == set(EVAL_DISEASES)
    failing = {name: auc for name, auc in result.cnn_auc.items() if auc < 0.9}
    assert not failing, f"CNN AUC below 0.9: {failing}"
    # not trivial: logistic regression on 16x16 pixels is clearly worse on average and fails some diseases
    assert np.mean(list(result.simple_auc.values())) < np.mean(list(result.cnn_auc.values())) - 0.05
    assert sum(auc < 0.8 for auc in result.simple_auc.values()) >= 3
