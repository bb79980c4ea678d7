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
}


def apply_defaults() -> None:
    """Set every default that the user has not set already."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
