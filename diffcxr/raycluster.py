"""Joining a Ray cluster the same way from every stage, job or not."""

from __future__ import annotations

import os

from diffcxr.config import DiffCXRConfig


def init_ray(cfg: DiffCXRConfig) -> None:
    """Join the job's cluster (``ray job submit``), ``ray.address``, or start a local one.

    Outside a job, the S3/MLflow settings of this process are passed to the workers;
    inside a job the job's runtime environment already carries them (and Ray refuses
    a second definition of the same variables).
    """
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "DIFFCXR_", "MLFLOW_", "HF_", "TRANSFORMERS_"))}
    options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    in_job = bool(os.environ.get("RAY_JOB_ID") or os.environ.get("RAY_SUBMISSION_ID") or os.environ.get("RAY_ADDRESS"))
    if in_job:
        ray.init(address=address, **options)
        return
    try:
        ray.init(address=address, runtime_env={"env_vars": env}, **options)
    except (RuntimeError, ValueError) as exc:
        if "runtime env" not in str(exc).lower():
            raise
        ray.init(address=address, **options)
