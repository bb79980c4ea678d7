"""Joining a Ray cluster the same way from every stage, job or not."""

from __future__ import annotations

import os
from typing import Any

from diffcxr.config import DiffCXRConfig


def init_ray(cfg: DiffCXRConfig | None = None, address: str | None = None) -> None:
    """Join the job's cluster (``ray job submit``), ``ray.address``, or start a local one.

    Outside a job, the S3/MLflow settings (and the OpenMP wait policy) of this process are passed to the workers;
    inside a job the job's runtime environment already carries them (and Ray refuses
    a second definition of the same variables).
    """
    import ray

    if ray.is_initialized():
        return
    address = address or (cfg.ray.address if cfg is not None else None) or os.environ.get("RAY_ADDRESS")
    passed = ("AWS_", "DIFFCXR_", "MLFLOW_", "HF_", "TRANSFORMERS_", "OMP_WAIT_POLICY")  # OMP_: see diffcxr/env.py
    env = {k: v for k, v in os.environ.items() if k.startswith(passed)}
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


def check_pool_leaves_room(cfg: DiffCXRConfig, needed: float = 0.25) -> None:
    """Refuse an actor pool that would take every CPU: the read/decode tasks feeding it could never
    run and Ray Data would wait forever (seen with 2 actors × 1 CPU on a 2-CPU cluster)."""
    import ray

    from diffcxr.errors import ConfigError

    total = float(ray.cluster_resources().get("CPU", 0.0))
    pool = cfg.ray.data_pool_size * cfg.ray.data_cpus_per_actor
    if total and pool + needed > total:
        raise ConfigError(
            f"ray.data_pool_size × ray.data_cpus_per_actor = {pool:g} CPUs leaves less than {needed:g} of this "
            f"cluster's {total:g} CPUs for the tasks that feed the pool; lower one of them"
        )


def map_with_actor_pool(ds: Any, actor_cls: type, kwargs: dict[str, Any], cfg: DiffCXRConfig, batch_size: int) -> Any:
    """``ds.map_batches(actor_cls)`` on the configured actor pool: ``ray.data_pool_size`` actors of
    ``ray.data_cpus_per_actor`` CPUs, each built once with ``kwargs`` plus ``threads`` (``ray.actor_threads``),
    so a model is loaded once per actor, not per batch. Refuses a pool that would starve its feeders."""
    import ray.data

    check_pool_leaves_room(cfg)
    return ds.map_batches(
        actor_cls,
        fn_constructor_kwargs={**kwargs, "threads": cfg.ray.actor_threads},
        compute=ray.data.ActorPoolStrategy(size=cfg.ray.data_pool_size),
        num_cpus=cfg.ray.data_cpus_per_actor,
        batch_size=batch_size,
        batch_format="numpy",
    )
