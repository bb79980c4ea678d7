"""The one Ray Train harness: the text, diffusion and eval-classifier trainers all use it.

Driver side, ``fit`` builds the ``TorchTrainer`` (workers and CPUs from ``cfg.ray``, checkpoints under a
storage URI, local or ``s3://``), runs it, turns a worker's error into one line the user can act on, and
returns the last checkpoint's ``state.pt``. Re-running with the same ``run_name`` and storage resumes from
that checkpoint (Ray Train restores it into ``train.get_checkpoint()``).

Worker side, :class:`TrainSession` does what every loop shares: threads, resume, step and history
bookkeeping, throughput, the rank-0 checkpoint behind a reporting barrier, and the test fault hooks
(:mod:`diffcxr.faults`). A loop keeps only its model, optimiser and loss.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffcxr import faults, storage
from diffcxr.errors import DiffCXRError

STATE_FILE = "state.pt"


def let_controller_register_checkpoint() -> None:
    """Fault-injection hooks only: Ray Train's controller registers a reported checkpoint on its next poll of
    the workers, so a hook that crashes or kills a worker right after ``report`` waits for that poll first."""
    time.sleep(2.0)


def fit(
    loop: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    cfg: Any,
    dataset: Any,
    storage_uri: str,
    run_name: str,
    what: str,
    num_workers: int | None = None,
    max_failures: int = 0,
    fault_name: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """(state of the last checkpoint, last reported metrics, seconds) of one fit or resumed fit.
    ``fault_name`` names the fit in ``DIFFCXR_FAULTS`` (default: ``what``)."""
    import torch
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    fs, path = storage.resolve(storage_uri)
    if storage.local_path(storage_uri) is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        loop,
        train_loop_config={**loop_config, "faults": faults.plan_for(fault_name or what)},
        scaling_config=ScalingConfig(
            num_workers=num_workers or cfg.ray.num_workers,
            use_gpu=cfg.ray.use_gpu,
            resources_per_worker={"CPU": cfg.ray.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=path,
            storage_filesystem=fs,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=max_failures),
            worker_runtime_env=worker_runtime_env(cfg.ray.train_niceness),
        ),
        datasets={"train": dataset},
        dataset_config=DataConfig(execution_options=ordered_ingest()),
    )
    started = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps worker errors; the user needs the cause and what to do
        cause = root_cause(exc)
        hint = (
            ""
            if "diverged" in cause
            else f"; re-run the same command to resume from the last checkpoint under {storage_uri}/{run_name}"
        )
        raise DiffCXRError(f"{what} training failed: {cause}{hint}") from None
    seconds = time.perf_counter() - started
    if result.checkpoint is None:
        raise DiffCXRError(f"{what} training under {storage_uri}/{run_name} finished without a checkpoint")
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder, STATE_FILE), map_location="cpu", weights_only=False)
    return state, dict(result.metrics or {}), seconds


def worker_runtime_env(niceness: int | None) -> dict[str, Any]:
    """The Train workers' runtime env: ``RAY_worker_niceness`` is read by each worker process as it starts
    (Ray's job manager starts job drivers at 0 the same way), so a worker asked for 0 simply stays at the
    raylet's priority instead of lowering itself to 15."""
    return {} if niceness is None else {"env_vars": {"RAY_worker_niceness": str(niceness)}}


def ordered_ingest() -> Any:
    """Ray Data options for a training shard that arrives in the dataset's own order.

    Ray Data hands out blocks as they finish by default, so two fits of the same config saw their rows in
    different orders, and the loops' seeded shuffles (which permute what arrives) trained different models.
    With ``preserve_order`` a one-worker fit is repeatable to the bit; the cost is waiting for a slow block.
    """
    from ray.train import DataConfig

    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    return options


def root_cause(exc: BaseException) -> str:
    """The line of a (Ray-wrapped) exception that names the error."""
    lines = str(exc).strip().splitlines()
    for line in reversed(lines):
        if "Error" in line or "error" in line or "diverged" in line:
            return line.strip()[:400]
    return (lines[-1] if lines else type(exc).__name__)[:400]


class TrainSession:
    """One worker's side of a fit: built first thing in a train loop from its loop config.

    After construction, :attr:`restored` is the checkpoint's state when the fit resumes (the loop loads its
    model, optimiser and schedule from it), and :attr:`step` / :attr:`history` continue from it."""

    def __init__(self, config: dict[str, Any]) -> None:
        import ray.train
        import torch

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        torch.set_num_threads(config["threads"])
        self.faults: dict[str, int] = config.get("faults") or {}
        self.restored: dict[str, Any] | None = None
        self.step, self.history, starts = 0, [], []
        checkpoint = ray.train.get_checkpoint()
        if checkpoint:
            with checkpoint.as_directory() as folder:
                self.restored = torch.load(Path(folder, STATE_FILE), map_location="cpu", weights_only=False)
            self.step, self.history = self.restored["step"], self.restored["history"]
            starts = self.restored.get("starts", [])
        self.resumed_from = self.step
        self.starts = [*starts, self.step]  # the step each attempt started at: [0] on a first attempt
        self._first_step: float | None = None
        self._samples = 0

    def record(self, loss: float, samples: int, **extra: Any) -> dict[str, Any]:
        """Count one finished step of ``samples`` images over all workers; its metrics record (rank 0 keeps
        the history). Throughput leaves out the first step (warm-up, lazy init)."""
        self.step += 1
        if self._first_step is None:
            self._first_step = time.perf_counter()
        else:
            self._samples += samples
        record = {"step": self.step, "loss": loss, **extra}
        if self._samples:
            record["samples_per_second"] = self._samples / max(time.perf_counter() - self._first_step, 1e-9)
        if self.rank == 0:
            self.history.append(record)
        return record

    def checkpoint(self, record: dict[str, Any], state: Callable[[], dict[str, Any]]) -> None:
        """Every worker reports (a barrier); rank 0 attaches ``state()`` with the step bookkeeping. Then the
        crash/kill fault hooks, if planned for this step."""
        import ray.train
        import torch

        if self.rank != 0:
            ray.train.report(dict(record))
        else:
            with tempfile.TemporaryDirectory() as folder:
                full = {**state(), "step": self.step, "history": self.history, "starts": self.starts}
                torch.save(full, Path(folder, STATE_FILE))
                ray.train.report(dict(record), checkpoint=ray.train.Checkpoint.from_directory(folder))
        if self.faults.get("crash_after_step") == self.step and self.resumed_from < self.step:
            let_controller_register_checkpoint()
            raise RuntimeError(f"injected crash after step {self.step} (fault-injection test hook)")
        if self.faults.get("kill_after_step") == self.step and len(self.starts) == 1 and self.rank == 0:
            let_controller_register_checkpoint()
            os.kill(os.getpid(), signal.SIGKILL)  # a worker process dying, as an OOM kill would

    def poison(self, params: list[Any]) -> None:
        """Fault hook: after the planned step, the weights become NaN (the next loss is non-finite)."""
        if self.faults.get("poison_after_step") == self.step:
            import torch

            with torch.no_grad():
                params[0].fill_(float("nan"))

