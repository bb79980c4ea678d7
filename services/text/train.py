"""Contrastive training of the information squeeze (AVA-TLS) on Ray Train.

``TorchTrainer`` runs :func:`train_loop` on N workers (DDP; gloo on CPU, NCCL
on GPU). Loss: symmetric InfoNCE between image features and the projected
squeezed token 0, with a fixed logit scale (open_clip's ``ClipLoss``, features
gathered across workers so every worker sees the global batch's negatives).
AdamW + cosine schedule (diffusers). Rank 0 checkpoints every
``text.checkpoint_every`` steps; re-running with the same run name and storage
resumes from the latest checkpoint, and ``text.max_failures`` lets Ray restart a
crashed worker group by itself. Resume, bookkeeping and checkpoints are the shared harness's
(:class:`diffcxr.raytrain.TrainSession`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from diffcxr import storage
from diffcxr.config import DiffCXRConfig
from diffcxr.errors import DiffCXRError
from diffcxr.raytrain import TrainSession
from diffcxr.tracking import log_step_metrics, worker_client

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    state: dict[str, Any]  # model weights, step, history
    resumed_from: int  # step the last fit() started at (0 = fresh)
    seconds: float
    samples_per_second: float


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch
    import torch
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from open_clip.loss import ClipLoss

    from diffcxr.config import TextConfig
    from services.text.data import text_is_frozen
    from services.text.model import ReportEncoder

    text = TextConfig(**config["text"])
    session = TrainSession(config)
    rank, world = session.rank, session.world
    torch.manual_seed(config["seed"] * 1000 + rank)

    model = ReportEncoder.load_bundle(storage.get_folder(config["init_uri"]))  # a private copy: it trains
    params = model.set_trainable(text.train_parts)
    optimizer = torch.optim.AdamW(params, lr=text.lr, weight_decay=text.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, text.warmup_steps, text.steps)
    if session.restored:
        load_partial_state(model, session.restored["model"])
        optimizer.load_state_dict(session.restored["optimizer"])
        scheduler.load_state_dict(session.restored["scheduler"])
    frozen = text_is_frozen(text.train_parts)
    model.train()
    if frozen:
        model.clip.text.eval()  # no dropout in a tower whose states were precomputed
    ddp = ray.train.torch.prepare_model(model)
    loss_fn = ClipLoss(gather_with_grad=True, rank=rank, world_size=world)
    per_worker = text.batch_size // world
    shard = ray.train.get_dataset_shard("train")
    tracking = config.get("tracking")
    client = worker_client(tracking) if rank == 0 and tracking else None

    def state() -> dict[str, Any]:
        return {"model": trainable_state(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict()}  # fmt: skip

    epoch = 0
    while session.step < text.steps:
        batches = 0
        for batch in shard.iter_torch_batches(
            batch_size=per_worker,
            drop_last=True,
            local_shuffle_buffer_size=4 * per_worker,
            local_shuffle_seed=config["seed"] + 7919 * epoch + rank,
            dtypes=None,
        ):
            batches += 1
            inputs = (
                {"ids": batch["ids"]}
                if not frozen
                else {"pooled": batch["pooled"].float(), "states": batch["states"].float()}
            )
            image_features, text_features = ddp(batch["image"], **inputs)
            loss = loss_fn(image_features, text_features, text.logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            record = session.record(float(loss.detach()), per_worker * world, lr=scheduler.get_last_lr()[0])
            step = session.step
            if client is not None and (step % text.log_every == 0 or step == text.steps):
                log_step_metrics(client, tracking["run_id"], "text", record)
            if step % text.checkpoint_every == 0 or step == text.steps:
                session.checkpoint(record, state)
            if step >= text.steps:
                break
        if batches == 0:
            raise RuntimeError("a training epoch produced no batch: the dataset shard is smaller than a batch")
        epoch += 1


def trainable_state(model: Any) -> dict[str, Any]:
    """The weights that can change (trainable parameters and buffers): frozen ones stay in the init bundle,
    so a squeezer-only checkpoint of BiomedCLIP is a few MB instead of 800."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name for name, _ in model.named_buffers()}
    return {k: v for k, v in model.state_dict().items() if k in trainable or k in buffers}


def load_partial_state(model: Any, state: dict[str, Any]) -> None:
    """Load a :func:`trainable_state` on top of the init bundle; every key must belong to the model."""
    unexpected = set(state) - set(model.state_dict())
    if unexpected:
        raise DiffCXRError(f"checkpoint does not fit the model (unexpected keys {sorted(unexpected)[:3]})")
    model.load_state_dict(state, strict=False)


def train(
    cfg: DiffCXRConfig,
    dataset: Any,
    init_uri: str,
    storage_uri: str,
    run_name: str,
    tracking: dict[str, str] | None = None,
    num_workers: int | None = None,
) -> TrainOutcome:
    """Fit (or resume) on Ray Train; returns the final state read back from the last checkpoint."""
    from diffcxr.raytrain import fit

    workers = num_workers or cfg.ray.num_workers
    if cfg.text.batch_size % workers:
        raise DiffCXRError(f"text.batch_size {cfg.text.batch_size} is not divisible by {workers} Ray Train workers")
    loop_config = {
        "text": cfg.text.model_dump(mode="json"),
        "init_uri": init_uri,
        "seed": cfg.project.seed,
        "threads": cfg.ray.train_threads,
        "tracking": tracking,
    }
    state, metrics, seconds = fit(
        train_loop, loop_config, cfg, dataset, storage_uri, run_name, "text", workers, cfg.text.max_failures
    )
    resumed_from = state["starts"][-1] if state.get("starts") else 0
    sps = float(metrics.get("samples_per_second", 0.0))
    return TrainOutcome(state=state, resumed_from=resumed_from, seconds=seconds, samples_per_second=sps)
