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
import pyarrow.parquet as pq

from diffcxr import storage
from diffcxr.config import AutoencoderConfig, DiffCXRConfig
from diffcxr.raycluster import init_ray, map_with_actor_pool
from services.filter.decode import UnreadableImage, decode_image


def read_and_decode(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Ray Data task: URIs → (B, size, size) uint8 images and an error per row ('' when fine)."""
    images = np.zeros((len(batch["sample_id"]), size, size), dtype=np.uint8)
    errors = []
    for i, uri in enumerate(batch["image_uri"]):
        try:
            images[i] = decode_image(storage.read_bytes(str(uri)), size)
            errors.append("")
        except UnreadableImage as exc:
            errors.append(str(exc))
        except Exception as exc:  # a missing/unreadable file is that row's problem, never the job's
            errors.append(f"cannot read image: {exc}")
    return {"sample_id": batch["sample_id"], "image": images, "error": np.array(errors, dtype=object)}


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


def read_latents(uri: str, latent_shape: tuple[int, int, int]) -> tuple[list[str], np.ndarray, dict[str, str], str]:
    """(sample ids with latents, latents (N, C, h, w) float32, {sample_id: error} for failures, autoencoder id)."""
    fs, path = storage.resolve(uri)
    table = pq.read_table(path, filesystem=fs, columns=["sample_id", "latent", "error", "autoencoder_id"])
    ids, latents, errors, ae_ids = [], [], {}, set()
    for sid, blob, err, ae_id in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True):
        if err:
            errors[sid] = err
            continue
        ids.append(sid)
        ae_ids.add(ae_id)
        latents.append(np.frombuffer(blob, dtype=np.float16).reshape(latent_shape))
    order = sorted(range(len(ids)), key=ids.__getitem__)  # shard order depends on scheduling; results must not
    ids = [ids[i] for i in order]
    latents = [latents[i] for i in order]
    stacked = np.stack(latents).astype(np.float32) if latents else np.zeros((0, *latent_shape), np.float32)
    return ids, stacked, dict(sorted(errors.items())), ",".join(sorted(ae_ids))


__all__ = ["EncodeActor", "encode_in_process", "encode_with_ray", "init_ray", "read_latents"]
