"""The latents contract: what the filter stage writes and the diffusion stage reads.

Parquet shards, one row per input image: ``sample_id``, ``latent`` (float16 bytes of the autoencoder's
(C, h, w) latent, b'' when the image could not be read), ``error`` ('' when fine), ``autoencoder_id``.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from diffcxr import storage


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
