"""Saving and loading U-ViT and adapter weights with their configuration.

A model folder holds ``<name>.json`` (the :class:`UViTConfig`, the noise
schedule, the latent space, the dtype and the sha256 of the weights) and
``<name>.pt`` (the state dict). Loading builds the network from the JSON and
then checks every tensor against it, so a checkpoint that does not fit its
config fails at load naming the tensor and both shapes (or dtypes) — never
later as an obscure matmul error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffcxr.errors import DataError
from diffcxr.hashing import sha256_file
from services.diffusion.adapter import AdaptedUViT, DiseaseAdapter
from services.diffusion.uvit import UViT, UViTConfig

UVIT = "uvit"
ADAPTER = "adapter"


def check_state(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> None:
    """Every key present on both sides with the same shape and dtype; the error names both."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise DataError(
            f"{source}: checkpoint does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for key, tensor in state.items():
        want = expected[key]
        if tuple(tensor.shape) != tuple(want.shape):
            raise DataError(
                f"{source}: '{key}' has shape {tuple(tensor.shape)} in the checkpoint but the config builds "
                f"{tuple(want.shape)}"
            )
        if tensor.dtype != want.dtype:
            raise DataError(
                f"{source}: '{key}' has dtype {tensor.dtype} in the checkpoint but the model uses {want.dtype}"
            )


def model_meta(cfg: Any, net_cfg: UViTConfig, context_shape: tuple[int, int], autoencoder_id: str) -> dict[str, Any]:
    """What a U-ViT or adapter folder records beside its weights: architecture, latent and context spaces,
    noise schedule and the autoencoder whose latents it denoises (checked again when a bundle is built)."""
    from services.diffusion.schedulers import schedule_of

    return {
        "config": net_cfg.to_dict(),
        "latent_shape": list(net_cfg.latent_shape),
        "context_shape": list(context_shape),
        "schedule": schedule_of(cfg.diffusion),
        "autoencoder_id": autoencoder_id,
        "scale_factor": cfg.autoencoder.scale_factor,
    }


def save_model(model: nn.Module, folder: str | Path, name: str, meta: dict[str, Any]) -> Path:
    """Write ``<name>.pt`` and ``<name>.json`` (``meta`` plus the weights' sha256)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.pt"
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, weights)
    spec = {**meta, "dtype": "float32", "weights_sha256": sha256_file(weights)}
    (folder / f"{name}.json").write_text(json.dumps(spec, indent=2, sort_keys=True))
    return folder


def read_spec(folder: str | Path, name: str) -> dict[str, Any]:
    path = Path(folder, f"{name}.json")
    if not path.is_file():
        raise DataError(f"'{folder}' is not a {name} model folder (no {name}.json)")
    return json.loads(path.read_text())


def _load_state(folder: Path, name: str, spec: dict[str, Any]) -> dict[str, torch.Tensor]:
    weights = folder / f"{name}.pt"
    if not weights.is_file():
        raise DataError(f"'{folder}': {name}.pt is missing")
    if spec.get("weights_sha256") and sha256_file(weights) != spec["weights_sha256"]:
        raise DataError(f"'{weights}': sha256 differs from {name}.json (corrupt or replaced file)")
    return torch.load(weights, map_location="cpu", weights_only=True)


def load_uvit(folder: str | Path) -> tuple[UViT, dict[str, Any]]:
    """The U-ViT in eval mode and its spec (config, schedule, latent space, sha256)."""
    folder = Path(folder)
    spec = read_spec(folder, UVIT)
    model = UViT(UViTConfig(**spec["config"]))
    state = _load_state(folder, UVIT, spec)
    check_state(state, model, f"{folder}/{UVIT}.pt")
    model.load_state_dict(state)
    return model.eval(), spec


def load_adapted(uvit_folder: str | Path, adapter_folder: str | Path) -> tuple[AdaptedUViT, dict[str, Any]]:
    """Frozen U-ViT + adapter; refuses an adapter trained on top of a different U-ViT."""
    uvit, uvit_spec = load_uvit(uvit_folder)
    folder = Path(adapter_folder)
    spec = read_spec(folder, ADAPTER)
    if spec.get("uvit_sha256") and spec["uvit_sha256"] != uvit_spec["weights_sha256"]:
        raise DataError(
            f"adapter '{folder}' was trained on U-ViT {spec['uvit_sha256'][:12]} but '{uvit_folder}' holds "
            f"{uvit_spec['weights_sha256'][:12]}"
        )
    adapter = DiseaseAdapter(uvit)
    state = _load_state(folder, ADAPTER, spec)
    check_state(state, adapter, f"{folder}/{ADAPTER}.pt")
    adapter.load_state_dict(state)
    return AdaptedUViT(uvit, adapter).eval(), spec
