"""Eval service: FID, per-disease AUC, compute and latency.

Not built yet: tracked in issue #9. The CLI group `diffcxr eval` and the pipeline
stage of the same name say so instead of pretending to run.
"""
