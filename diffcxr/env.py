"""Process environment every Diff-CXR entry point sets before touching Ray, MLflow or S3.

Each variable here fixes a problem met on real machines (see docs/ARCHITECTURE.md
and ../shared/ENVIRONMENT.md): Ray advertising an external interface, hub look-ups
from transformers, MLflow's job workers, S3 clients falling back to EC2 metadata.
Values already set by the user win.
"""

from __future__ import annotations

import os

DEFAULTS: dict[str, str] = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "AWS_EC2_METADATA_DISABLED": "true",
    # Ray 2.60 turns on token auth for any local ray.init() and writes ~/.ray/auth_token, after which a
    # later `ray start` requires tokens that `ray job submit` clients do not send. The clusters Diff-CXR
    # starts bind to 127.0.0.1 only; set RAY_AUTH_MODE=token yourself for a shared cluster.
    "RAY_AUTH_MODE": "disabled",
    # Ray Train's controller polls its workers every 2 s by default, and each fit waits on that poll to
    # schedule the worker group, to see the first report and to see the loop end: 4-5 s per fit here
    # (a no-op fit: 18.7 s at 2 s, 14.0 s at 0.5 s). A poll is a tiny actor call; a late answer is only
    # counted as missed after 10 minutes, so a busy worker is not failed by the shorter interval.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    # torch's OpenMP threads spin at every barrier before they sleep. A Diff-CXR node always runs several torch
    # processes at once (a Train worker beside Ray Data tasks and actors, three Serve deployments, pytest
    # workers), and a spinning thread burns the core another process's thread needs: two of tiny's U-ViT
    # trainings (2 threads each) on 2 cores made 1.12 steps/s each spinning, 2.1 with PASSIVE; one alone
    # 3.83 vs 3.72 (benchmarks/omp_wait_policy.py). libgomp reads it when torch loads: set before `import torch`.
    "OMP_WAIT_POLICY": "PASSIVE",
}


def apply_defaults() -> None:
    """Set every default that the user has not set already."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
