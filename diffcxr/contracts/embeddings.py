"""The embeddings contract: what the text stage writes and the diffusion stage reads.

Under an embeddings folder: ``table/`` (Parquet shards, one row per report and one per distinct disease
sentence: ``kind`` (report | sentence), ``key`` (sample_id or sentence_id), ``sentence_id`` (a report's
disease sentence), ``n_tokens``, ``truncated``, ``empty``, ``context`` (K×d float16 bytes), ``feature``
(joint-space vector, float16 bytes)), ``unconditional.npy`` (the empty report's context, float32) and
``embeddings.json`` (shapes, dtype, the text model used).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from diffcxr import storage


def sentence_id(sentence: str) -> str:
    return hashlib.sha256(sentence.encode("utf-8")).hexdigest()[:16]


@dataclass
class Embeddings:
    """What the diffusion stage reads: contexts by sample, by disease sentence, and the unconditional one."""

    sample_ids: list[str]
    contexts: np.ndarray  # (N, K, d) float16, row i ↔ sample_ids[i]
    features: np.ndarray  # (N, E) float16
    sentence_of: dict[str, str]  # sample_id → sentence_id
    sentences: dict[str, np.ndarray]  # sentence_id → (K, d) float16
    sentence_features: dict[str, np.ndarray]
    unconditional: np.ndarray  # (K, d) float32
    meta: dict[str, Any]
    truncated: dict[str, bool]

    def index(self) -> dict[str, int]:
        return {sid: i for i, sid in enumerate(self.sample_ids)}


def read_table(uri: str) -> Any:
    """The raw embeddings table (both kinds) under an embeddings folder URI."""
    fs, path = storage.resolve(storage.join(uri, "table"))
    return pq.read_table(path, filesystem=fs)


def read_embeddings(uri: str) -> Embeddings:
    """Load everything under an embeddings folder URI (reports sorted by sample id)."""
    meta = json.loads(storage.read_text(storage.join(uri, "embeddings.json")))
    shape = tuple(meta["context_shape"])
    table = read_table(uri).sort_by("key").to_pylist()
    reports = [r for r in table if r["kind"] == "report"]
    sentences = [r for r in table if r["kind"] == "sentence"]

    def context(blob: bytes) -> np.ndarray:
        return np.frombuffer(blob, np.float16).reshape(shape)

    uncond = np.load(io.BytesIO(storage.read_bytes(storage.join(uri, "unconditional.npy"))))
    return Embeddings(
        sample_ids=[r["key"] for r in reports],
        contexts=np.stack([context(r["context"]) for r in reports]),
        features=np.stack([np.frombuffer(r["feature"], np.float16) for r in reports]),
        sentence_of={r["key"]: r["sentence_id"] for r in reports},
        sentences={r["key"]: context(r["context"]) for r in sentences},
        sentence_features={r["key"]: np.frombuffer(r["feature"], np.float16) for r in sentences},
        unconditional=uncond,
        meta=meta,
        truncated={r["key"]: bool(r["truncated"]) for r in reports},
    )
