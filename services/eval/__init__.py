"""Eval service: the paper's measurements of a generator (per-disease AUC and mAUC with a reference
classifier, domain and Inception FID, GFLOPs, latency), Tables II/IV/V/VI and an HTML report.

Entry points: ``diffcxr eval`` and the pipeline's ``eval`` stage (:mod:`services.eval.stage`).
"""

from diffcxr.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {"run_eval": "stage:run"})
