"""Saving and loading U-ViT and adapter weights with their configuration.

A model folder holds ``<name>.json`` (the :class:`UViTConfig` under ``config``, the noise schedule, the latent
space, the dtype and the sha256 of the weights) and ``<name>.safetensors``, written and read by
:mod:`diffcxr.modelio`; folders of the ``.pt`` era still load. Either part rebuilds from its own folder: the
adapter's JSON records the U-ViT config it copies, and ``uvit_sha256`` ties it to the U-ViT it was trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffcxr import modelio
from diffcxr.errors import DataError
from diffcxr.modelio import M, check_state, read_spec
from services.diffusion.adapter import AdaptedUViT, DiseaseAdapter
from services.diffusion.uvit import UViT, UViTConfig

UVIT = "uvit"
ADAPTER = "adapter"
__all__ = ["ADAPTER", "UVIT", "check_state", "load_adapted", "load_adapter", "load_uvit", "model_meta",
           "read_spec", "save_model"]  # fmt: skip


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


def save_model(model: UViT | DiseaseAdapter, folder: str | Path, name: str, meta: dict[str, Any]) -> Path:
    """Write ``<name>.safetensors`` and ``<name>.json``: ``meta`` plus the model's own :class:`UViTConfig`
    (a ``meta['config']`` that disagrees with the model is a caller's bug, refused)."""
    config = model.config.to_dict()
    if meta.get("config", config) != config:
        raise ValueError(f"meta['config'] {meta['config']} is not the model's config {config}")
    return modelio.save(model, folder, name, config, {k: v for k, v in meta.items() if k != "config"})


def _load(model_of: Callable[[UViTConfig], M], folder: str | Path, name: str) -> tuple[M, dict[str, Any]]:
    state, spec = modelio.load_state(folder, name)
    if not isinstance(spec.get("config"), dict):
        raise DataError(f"'{folder}': {name}.json has no 'config' to rebuild the network from")
    model = model_of(UViTConfig(**spec["config"]))
    return modelio.fill(model, state, f"'{folder}' ({name})"), spec


def load_uvit(folder: str | Path) -> tuple[UViT, dict[str, Any]]:
    """The U-ViT in eval mode and its spec (config, schedule, latent space, sha256), from its folder alone."""
    return _load(UViT, folder, UVIT)


def load_adapter(folder: str | Path) -> tuple[DiseaseAdapter, dict[str, Any]]:
    """The adapter alone, from its folder (its JSON holds the U-ViT config the copy was made of)."""
    return _load(DiseaseAdapter, folder, ADAPTER)


def load_adapted(uvit_folder: str | Path, adapter_folder: str | Path) -> tuple[AdaptedUViT, dict[str, Any]]:
    """Frozen U-ViT + adapter; refuses an adapter trained on top of a different U-ViT."""
    uvit, uvit_spec = load_uvit(uvit_folder)
    spec = read_spec(adapter_folder, ADAPTER)
    if spec.get("uvit_sha256") and spec["uvit_sha256"] != uvit_spec["weights_sha256"]:
        raise DataError(
            f"adapter '{adapter_folder}' was trained on U-ViT {spec['uvit_sha256'][:12]} but '{uvit_folder}' holds "
            f"{uvit_spec['weights_sha256'][:12]}"
        )
    state, spec = modelio.load_state(adapter_folder, ADAPTER)
    adapter = modelio.fill(DiseaseAdapter(uvit), state, f"'{adapter_folder}' ({ADAPTER})")
    return AdaptedUViT(uvit, adapter).eval(), spec
