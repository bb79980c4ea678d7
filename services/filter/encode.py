"""Manifest → latents, on Ray Data: read + decode in tasks, encode in an actor pool, write Parquet shards.

Each actor loads the frozen autoencoder once and encodes batches. Unreadable
files are not errors of the job: their row carries the reason and is
quarantined by the caller. Latent rows: ``sample_id``, ``latent`` (float16
bytes), ``shape``, ``dtype``, ``autoencoder_id``, ``scale_factor``, ``error``.
CPU fractions come from ``ray.data_cpus_per_actor`` so that encoding coexists
with other work on a small machine (2 train workers × 1 CPU plus an actor pool
on 2 CPUs would wait forever).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from diffcxr import storage
from diffcxr.config import AutoencoderConfig, DiffCXRConfig
from diffcxr.contracts.images import read_and_decode
from diffcxr.raycluster import init_ray, map_with_actor_pool


class EncodeActor:
    """Ray Data actor: loads the autoencoder once, encodes batches of grayscale images."""

    def __init__(self, autoencoder: dict[str, Any], threads: int = 1) -> None:
        import torch

        from diffcxr.autoencoders.frozen import load_autoencoder

        torch.set_num_threads(max(1, threads))
        self.ae = load_autoencoder(AutoencoderConfig(**autoencoder))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        latents = encode_images(self.ae, batch["image"], batch["error"])
        return {
            "sample_id": batch["sample_id"],
            "latent": latents,
            "error": batch["error"],
            "autoencoder_id": np.array([self.ae.id] * len(latents), dtype=object),
        }


def encode_images(ae: Any, images: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """float16 latent bytes per row (b'' for rows with an error)."""
    import torch

    ok = np.array([not e for e in errors])
    out = np.array([b""] * len(images), dtype=object)
    if ok.any():
        x = torch.from_numpy(np.ascontiguousarray(images[ok])).float().div(255).unsqueeze(1).repeat(1, 3, 1, 1)
        z = ae.encode(x).numpy().astype(np.float16)
        for i, latent in zip(np.nonzero(ok)[0], z, strict=True):
            out[i] = latent.tobytes()
    return out


def encode_with_ray(rows: list[dict[str, Any]], cfg: DiffCXRConfig, out_uri: str) -> float:
    """Encode ``rows`` (sample_id, image_uri) with Ray Data and write Parquet shards under ``out_uri``.

    Returns the wall time in seconds. Ray must be initialised by the caller.
    """
    import ray

    size = cfg.data.image_size
    started = time.perf_counter()
    blocks = max(2, min(64, len(rows) // max(1, cfg.filter.encode_batch_size)))
    ds = ray.data.from_items(
        [{"sample_id": r["sample_id"], "image_uri": r["image_uri"]} for r in rows], override_num_blocks=blocks
    )
    ds = ds.map_batches(
        read_and_decode,
        fn_kwargs={"size": size},
        batch_size=cfg.filter.encode_batch_size,
        batch_format="numpy",
        num_cpus=0.25,
    )
    autoencoder = {"autoencoder": cfg.autoencoder.model_dump(mode="json")}
    ds = map_with_actor_pool(ds, EncodeActor, autoencoder, cfg, cfg.filter.encode_batch_size)
    fs, path = storage.resolve(out_uri)
    storage.delete(out_uri)
    ds.write_parquet(path, filesystem=fs)
    return time.perf_counter() - started


def encode_in_process(rows: list[dict[str, Any]], cfg: DiffCXRConfig, batch: int = 32) -> tuple[list[Any], float]:
    """The same work in one plain loop (no Ray): the baseline for the throughput benchmark."""
    from diffcxr.autoencoders.frozen import load_autoencoder

    ae = load_autoencoder(cfg.autoencoder)
    started = time.perf_counter()
    out = []
    for i in range(0, len(rows), batch):
        chunk = {
            "sample_id": np.array([r["sample_id"] for r in rows[i : i + batch]], dtype=object),
            "image_uri": np.array([r["image_uri"] for r in rows[i : i + batch]], dtype=object),
        }
        decoded = read_and_decode(chunk, cfg.data.image_size)
        out += list(encode_images(ae, decoded["image"], decoded["error"]))
    return out, time.perf_counter() - started


__all__ = ["EncodeActor", "encode_in_process", "encode_with_ray", "init_ray"]
