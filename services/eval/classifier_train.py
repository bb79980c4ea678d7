"""Train our own reference classifier (torchvision DenseNet-121, 11 outputs) on Ray Train.

Used where torchxrayvision's weights cannot be obtained, and for the
downstream experiment (paper Table VI), which trains the same classifier on
1 / 10 / 100 % of the real images with and without synthetic ones.

The loss is a *masked* BCE: a label the policy excludes (NaN target) adds
nothing, so an unmentioned finding is never taught as negative unless the
policy says so. Batches are drawn by a generator seeded with (seed, rank,
step), so a resumed fit continues the same stream; checkpoints hold weights,
optimizer, schedule and history (the shared harness, :mod:`diffcxr.raytrain`, resumes them).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffcxr.constants import EVAL_DISEASES
from diffcxr.errors import DataError
from diffcxr.hashing import sha256_file
from diffcxr.raytrain import TrainSession
from services.eval.classifier import OWN_FILE, OWN_SPEC


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.nn.functional as F
    from diffusers.optimization import get_cosine_schedule_with_warmup

    from services.eval.classifier import own_densenet, own_preprocess

    session = TrainSession(config)
    rank, world = session.rank, session.world
    torch.manual_seed(config["seed"])  # the same initial weights on every worker
    steps, per_worker, size = config["steps"], max(1, config["batch_size"] // world), config["image_size"]

    images, targets = [], []
    for batch in ray.train.get_dataset_shard("train").iter_batches(batch_size=256, batch_format="numpy"):
        images += [np.frombuffer(b, np.uint8).reshape(h, w) for b, h, w in zip(*_cols(batch), strict=True)]
        targets.append(np.stack(batch["target"]).astype(np.float32))
    if not images:
        raise RuntimeError("a classifier worker received no training images")
    x_all, y_all = np.stack(images), torch.from_numpy(np.concatenate(targets))

    model = own_densenet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=1e-4)
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 20), steps)
    if session.restored:
        model.load_state_dict(session.restored["model"])
        optimizer.load_state_dict(session.restored["optimizer"])
        scheduler.load_state_dict(session.restored["scheduler"])
    ddp = ray.train.torch.prepare_model(model)
    ddp.train()
    device = ray.train.torch.get_device()
    every = max(1, steps // 3)
    started = time.perf_counter()

    def state() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}

    while session.step < steps:
        step = session.step
        gen = torch.Generator().manual_seed(config["seed"] * 1_000_003 + rank * 7919 + step)
        idx = torch.randint(len(x_all), (per_worker,), generator=gen)
        x = own_preprocess(x_all[idx.numpy()], size)
        x = x * (0.9 + 0.2 * torch.rand(len(idx), 1, 1, 1, generator=gen))  # mild exposure jitter
        x, y = x.to(device), y_all[idx].to(device)
        known = ~torch.isnan(y)
        loss_all = F.binary_cross_entropy_with_logits(ddp(x), torch.nan_to_num(y), reduction="none")
        loss = (loss_all * known).sum() / known.sum().clamp(min=1)
        if not torch.isfinite(loss):
            raise RuntimeError(f"classifier training diverged: loss is {float(loss)} at step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        record = session.record(float(loss.detach()), per_worker * world, seconds=time.perf_counter() - started)
        if session.step % every == 0 or session.step == steps:
            session.checkpoint(record, state)


def _cols(batch: dict[str, Any]) -> tuple[Any, Any, Any]:
    return batch["image"], batch["height"], batch["width"]


@dataclass
class TrainedClassifier:
    folder: Path
    spec: dict[str, Any]


def train_classifier(
    cfg: Any,
    images: np.ndarray,
    targets: np.ndarray,
    out_folder: str | Path,
    storage_uri: str,
    run_name: str,
    steps: int,
    data_id: dict[str, Any],
) -> TrainedClassifier:
    """Fit on uint8 images (N, H, W) and (N, 11) targets (NaN = excluded); write ``classifier.pt`` + spec."""
    import ray.data
    import torch

    from diffcxr.raytrain import fit
    from services.eval.classifier import own_densenet

    if len(images) == 0:
        raise DataError(f"classifier '{run_name}': no training images")
    if targets.shape != (len(images), len(EVAL_DISEASES)):
        raise DataError(f"classifier '{run_name}': targets {targets.shape} do not match {len(images)} images")
    rows = [
        {"image": img.tobytes(), "height": img.shape[0], "width": img.shape[1], "target": t}
        for img, t in zip(images, targets, strict=True)
    ]
    size = cfg.eval.classifier_image_size or cfg.data.image_size
    if cfg.eval.classifier_cpus:  # nothing else trains while the eval stage runs: let the fit use the CPUs
        cpus = cfg.eval.classifier_cpus
        ray_cfg = cfg.ray.model_copy(update={"cpus_per_worker": cpus, "threads_per_worker": max(1, int(cpus))})
        cfg = cfg.model_copy(update={"ray": ray_cfg})
    loop_config = {
        "steps": steps, "batch_size": cfg.eval.classifier_batch_size, "lr": cfg.eval.classifier_lr,
        "image_size": size, "seed": cfg.project.seed, "threads": cfg.ray.train_threads,
    }  # fmt: skip
    state, _, seconds = fit(
        train_loop, loop_config, cfg, ray.data.from_items(rows), storage_uri, run_name, f"classifier '{run_name}'",
        fault_name="classifier",
    )  # fmt: skip
    net = own_densenet()
    net.load_state_dict(state["model"])
    folder = Path(out_folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / OWN_FILE)
    spec = {
        "kind": "own-densenet121",
        "architecture": "torchvision densenet121, 1-channel stem, 11 sigmoid outputs",
        "classes": list(EVAL_DISEASES),
        "image_size": size,
        "trained_steps": state["step"],
        "final_loss": state["history"][-1]["loss"] if state["history"] else None,
        "train_seconds": round(seconds, 1),
        "train_data": data_id,
        "weights_sha256": sha256_file(folder / OWN_FILE),
    }
    (folder / OWN_SPEC).write_text(json.dumps(spec, indent=2))
    return TrainedClassifier(folder, spec)


def data_id(sample_ids: list[str], policy: dict[str, str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a classifier was trained on: row count, a digest of the sample ids, the label policy."""
    import hashlib

    digest = hashlib.sha256("\n".join(sorted(sample_ids)).encode()).hexdigest()[:16]
    return {"rows": len(sample_ids), "sample_ids_sha256": digest, "label_policy": policy, **(extra or {})}
