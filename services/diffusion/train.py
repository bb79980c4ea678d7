"""Two-stage denoiser training on Ray Train.

Stage ``uvit``: the U-ViT on (standardised latent, report context) pairs;
v-prediction (or ε) MSE with Min-SNR-γ weights (:mod:`.objective`), noise from
diffusers' ``DDPMScheduler`` (SD's scaled-linear betas), AdamW
(lr 2e-4, wd 0.03, betas 0.9/0.9), linear warm-up, EMA (diffusers
``EMAModel``), ``diffusion.p_uncond`` of the samples trained on the
unconditional context. Stage ``adapter``: the U-ViT frozen (its EMA weights),
only the adapter trains, on the disease sentence's context as hint;
``adapter.p_uncond`` of the samples blank both report and sentence.

Each step draws its noise, timesteps and blanking from a generator seeded by
(seed, rank, step), so a resumed run continues the same random stream. A
non-finite loss stops training naming the step and the batch's sample ids.
Rank 0 logs loss/lr to MLflow every ``log_every`` steps, a preview grid (fixed
held-out reports and seeds, EMA weights) every ``sample_every`` steps, and
checkpoints (trainable weights, EMA, optimiser, schedule, step, history) every
``checkpoint_every`` steps; a re-run with the same name resumes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffcxr import storage
from diffcxr.config import DiffCXRConfig
from diffcxr.errors import DiffCXRError
from diffcxr.figures import png_bytes, pyplot
from diffcxr.raytrain import TrainSession
from diffcxr.tracking import log_step_metrics, worker_client

log = logging.getLogger(__name__)
STAGES = ("uvit", "adapter")


class NonFiniteLoss(RuntimeError):
    """Raised on a NaN/inf loss: divergence must stop training, loudly."""


@dataclass
class TrainOutcome:
    state: dict[str, Any]  # trainable weights, EMA weights, step, history
    resumed_from: int
    seconds: float
    samples_per_second: float
    worker_niceness: int | None = None  # rank 0's, as last reported (ray.train_niceness)


def _build(stage: str, config: dict[str, Any]) -> tuple[Any, list]:
    """The network and its trainable parameters (same on every worker: built from files, not random)."""
    from services.diffusion.adapter import AdaptedUViT
    from services.diffusion.weights import load_uvit

    uvit, _ = load_uvit(storage.get_folder(config["uvit_uri"]))
    if stage == "uvit":
        uvit.train()
        return uvit, list(uvit.parameters())
    model = AdaptedUViT(uvit)
    model.train()
    return model, list(model.adapter.parameters())


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch
    import torch
    from diffusers.optimization import get_constant_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    from diffcxr.config import AdapterConfig, DiffusionConfig
    from services.diffusion.data import ShardBatches
    from services.diffusion.latents import LatentStats
    from services.diffusion.objective import denoising_loss
    from services.diffusion.schedulers import training_scheduler

    stage = config["stage"]
    dcfg, acfg = DiffusionConfig(**config["diffusion"]), AdapterConfig(**config["adapter"])
    steps = dcfg.steps if stage == "uvit" else acfg.steps
    batch_size = dcfg.batch_size if stage == "uvit" else acfg.batch_size
    p_uncond = dcfg.p_uncond if stage == "uvit" else acfg.p_uncond
    checkpoint_every = dcfg.checkpoint_every if stage == "uvit" else acfg.checkpoint_every
    session = TrainSession(config)
    rank, world = session.rank, session.world
    payload = config["payload"]
    uncond = torch.from_numpy(payload["unconditional"]).float()
    stats = LatentStats.from_spec(payload.get("latent_stats"), payload["latent_shape"][0])

    model, params = _build(stage, config)
    optimizer = torch.optim.AdamW(
        params,
        lr=dcfg.lr if stage == "uvit" else acfg.lr,
        weight_decay=dcfg.weight_decay,
        betas=tuple(dcfg.betas),
    )
    lr_schedule = get_constant_schedule_with_warmup(
        optimizer, dcfg.warmup_steps if stage == "uvit" else acfg.warmup_steps
    )
    ema = EMAModel(params, decay=dcfg.ema_decay)
    if session.restored:
        trainable(model, stage).load_state_dict(session.restored["model"])
        ema.load_state_dict(session.restored["ema"])
        optimizer.load_state_dict(session.restored["optimizer"])
        lr_schedule.load_state_dict(session.restored["lr_schedule"])
    noise_scheduler = training_scheduler(config["schedule"])
    ddp = ray.train.torch.prepare_model(model)
    per_worker = batch_size // world
    source = ShardBatches(ray.train.get_dataset_shard("train"), payload, per_worker, config["seed"], rank,
                          in_memory=config.get("shard_in_memory", False))  # fmt: skip
    tracking = config.get("tracking")
    client = worker_client(tracking) if rank == 0 and tracking else None
    preview = Preview(config, stage) if rank == 0 and config.get("preview") and client is not None else None

    def state() -> dict[str, Any]:
        return {"model": trainable(model, stage).state_dict(), "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(), "lr_schedule": lr_schedule.state_dict()}  # fmt: skip

    epoch = 0
    while session.step < steps:
        batches = 0
        for batch in source.epoch(epoch, session.resumed_from):
            batches += 1
            step = session.step
            gen = torch.Generator().manual_seed(((config["seed"] * 1_000_003 + step) * 1009 + rank) % (2**63))
            latents, context, hint = stats.normalize(batch["latent"]), batch["context"], batch["hint"]
            n = latents.shape[0]
            noise = torch.randn(latents.shape, generator=gen)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (n,), generator=gen)
            blank = torch.rand(n, generator=gen) < p_uncond
            context = torch.where(blank[:, None, None], uncond.expand_as(context), context)
            conditions = [context]
            if stage == "adapter":
                conditions.append(torch.where(blank[:, None, None], uncond.expand_as(hint), hint))
            loss = denoising_loss(
                ddp, noise_scheduler, latents, noise, timesteps, *conditions, min_snr_gamma=dcfg.min_snr_gamma
            )
            if not torch.isfinite(loss):
                log.error("%s: non-finite loss at step %d, batch %s", stage, step + 1, batch["sample_id"])
                raise NonFiniteLoss(
                    f"{stage} training diverged: loss is {float(loss)} at step {step + 1} "
                    f"(batch sample ids {batch['sample_id'][:8]}); lower the learning rate or check the inputs"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if dcfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, dcfg.grad_clip)
            optimizer.step()
            lr_schedule.step()
            ema.step(params)
            record = session.record(float(loss.detach()), per_worker * world, lr=lr_schedule.get_last_lr()[0])
            step = session.step
            session.poison(params)
            if client is not None and (step % dcfg.log_every == 0 or step == steps):
                log_step_metrics(client, tracking["run_id"], stage, record)
            if preview is not None and (step % dcfg.sample_every == 0 or step == steps):
                preview.log(client, tracking["run_id"], model, ema, params, step)
            if step % checkpoint_every == 0 or step == steps:
                # how the OS scheduler saw this worker (ray.train_niceness), reported with the checkpoint
                session.checkpoint({**record, "worker_niceness": os.getpriority(os.PRIO_PROCESS, 0)}, state)
            if step >= steps:
                break
        if batches == 0:
            raise RuntimeError(f"the dataset shard is smaller than one batch of {per_worker}")
        epoch += 1


def trainable(model: Any, stage: str) -> Any:
    """The module whose weights a checkpoint holds: the whole U-ViT, or only the adapter."""
    return model if stage == "uvit" else model.adapter


def ema_weights(model: Any, stage: str, ema_state: dict[str, Any]) -> dict[str, Any]:
    """The trainable module's state dict with the EMA shadow weights in place of the raw ones."""
    module = trainable(model, stage)
    names = [name for name, _ in module.named_parameters()]
    shadow = ema_state["shadow_params"]
    if len(shadow) != len(names):
        raise DiffCXRError(f"EMA state holds {len(shadow)} tensors for {len(names)} parameters")
    state = dict(module.state_dict())
    state.update({name: tensor.clone() for name, tensor in zip(names, shadow, strict=True)})
    return state


class Preview:
    """Rank 0's sample grid: fixed held-out reports and seeds, EMA weights, decoded, logged to MLflow."""

    def __init__(self, config: dict[str, Any], stage: str) -> None:
        import torch

        from diffcxr.autoencoders.frozen import load_autoencoder
        from diffcxr.config import AutoencoderConfig, SamplingConfig
        from services.diffusion.latents import LatentStats

        self.stage = stage
        self.spec = config["preview"]
        self.schedule = config["schedule"]
        self.sampling = SamplingConfig(**config["sampling"])
        self.latent_shape = tuple(config["payload"]["latent_shape"])
        self.uncond = torch.from_numpy(config["payload"]["unconditional"]).float()
        self.stats = LatentStats.from_spec(config["payload"].get("latent_stats"), self.latent_shape[0])
        self.ae = load_autoencoder(AutoencoderConfig(**config["autoencoder"]))

    def log(self, client: Any, run_id: str, model: Any, ema: Any, params: list, step: int) -> None:
        import torch

        from services.diffusion.sampling import sample_latents

        try:
            ema.store(params)
            ema.copy_to(params)
            model.eval()
            contexts = torch.from_numpy(self.spec["contexts"])
            hints = torch.from_numpy(self.spec["hints"]) if self.stage == "adapter" else None

            def denoiser(x, t, c, h):  # noqa: ANN001, ANN202
                return model(x, t, c) if h is None else model(x, t, c, h)

            latents = sample_latents(
                denoiser, self.schedule, contexts, self.uncond, self.spec["seeds"], self.latent_shape,
                self.sampling.steps, self.sampling.guidance, hint=hints, uncond_hint=self.uncond,
            )  # fmt: skip
            images = self.ae.decode(self.stats.denormalize(latents)).mean(1).clamp(0, 1).numpy()
            png = grid_png(images, self.spec["labels"], f"{self.stage} step {step} (EMA)")
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp, f"{self.stage}_step_{step:07d}.png")
                path.write_bytes(png)
                client.log_artifact(run_id, str(path), "diffusion/samples")
        except Exception as exc:  # a preview must never kill training
            log.warning("could not log the %s preview grid at step %d: %s", self.stage, step, exc)
        finally:
            ema.restore(params)
            model.train()


def grid_png(images: Any, labels: list[str], title: str) -> bytes:
    """Grayscale images (N, H, W) in [0, 1] as one captioned PNG (captions: disease sentences)."""
    plt = pyplot()

    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.6), dpi=100, squeeze=False)
    for ax, image, label in zip(axes[0], images, labels, strict=True):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(label.replace("There is ", "").replace(". ", ",\n")[:60], fontsize=6)
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def train(
    cfg: DiffCXRConfig,
    stage: str,
    dataset: Any,
    uvit_uri: str,
    payload: dict[str, Any],
    storage_uri: str,
    run_name: str,
    tracking: dict[str, str] | None = None,
    preview: dict[str, Any] | None = None,
    num_workers: int | None = None,
) -> TrainOutcome:
    """Fit (or resume) one stage on Ray Train; returns the last checkpoint's state."""
    from diffcxr.raytrain import fit
    from services.diffusion.schedulers import schedule_of

    if stage not in STAGES:
        raise DiffCXRError(f"stage must be one of {STAGES}, got '{stage}'")
    workers = num_workers or cfg.ray.num_workers
    batch = cfg.diffusion.batch_size if stage == "uvit" else cfg.adapter.batch_size
    section = "diffusion" if stage == "uvit" else "adapter"
    if batch % workers:
        raise DiffCXRError(f"{section}.batch_size {batch} is not divisible by {workers} Ray Train workers")
    if dataset.count() < batch:
        raise DiffCXRError(f"{section}.batch_size {batch} exceeds the {dataset.count()} training pairs")
    loop_config = {
        "stage": stage,
        "diffusion": cfg.diffusion.model_dump(mode="json"),
        "adapter": cfg.adapter.model_dump(mode="json"),
        "sampling": cfg.sampling.model_dump(mode="json"),
        "autoencoder": cfg.autoencoder.model_dump(mode="json"),
        "schedule": schedule_of(cfg.diffusion),
        "uvit_uri": uvit_uri,
        "payload": payload,
        "preview": preview,
        "seed": cfg.project.seed,
        "threads": cfg.ray.train_threads,
        "shard_in_memory": dataset.size_bytes() / workers <= cfg.diffusion.shard_in_memory_mb * 2**20,
        "tracking": tracking,
    }
    state, metrics, seconds = fit(
        train_loop, loop_config, cfg, dataset, storage_uri, run_name, stage, workers, cfg.diffusion.max_failures
    )
    sps = float(metrics.get("samples_per_second", 0.0))
    niceness = metrics.get("worker_niceness")
    return TrainOutcome(state=state, resumed_from=state["starts"][-1], seconds=seconds, samples_per_second=sps,
                        worker_niceness=None if niceness is None else int(niceness))  # fmt: skip
