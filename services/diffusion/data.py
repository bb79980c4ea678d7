"""Training pairs for the denoiser: filter latents ⋈ text embeddings, by sample id.

The Ray dataset holds one row per kept train-split image: its latent and its
report context as float16 bytes, and the index of its disease sentence; the
(few hundred) distinct sentence contexts and the unconditional context travel
with the training config. Rows that lack a latent or an embedding are counted
with the reason (ids only), never dropped silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from diffcxr.contracts.embeddings import Embeddings, sentence_id
from diffcxr.contracts.latents import read_latents
from diffcxr.errors import DataError
from diffcxr.labeling.sentences import NO_FINDING_SENTENCE
from services.diffusion.latents import LatentStats

log = logging.getLogger(__name__)


@dataclass
class TrainingSet:
    table: pa.Table  # sample_id, latent (f16 bytes), context (f16 bytes), sentence (int32)
    sentence_ids: list[str]
    sentences: np.ndarray  # (S, K, d) float16, row i ↔ sentence_ids[i]
    unconditional: np.ndarray  # (K, d) float32: the empty report / blank sentence
    latent_shape: tuple[int, int, int]
    context_shape: tuple[int, int]
    autoencoder_id: str
    missing: dict[str, str] = field(default_factory=dict)  # sample_id → why it is not trained on
    latent_stats: LatentStats | None = None  # per-channel standardisation (None: latents used as encoded)

    def payload(self) -> dict[str, Any]:
        """What every worker needs besides its dataset shard."""
        return {
            "sentences": self.sentences,
            "unconditional": self.unconditional,
            "latent_shape": list(self.latent_shape),
            "context_shape": list(self.context_shape),
            "latent_stats": self.latent_stats.to_dict() if self.latent_stats else None,
        }


def build_training_set(
    rows: list[dict[str, Any]],
    latents_uri: str,
    embeddings: Embeddings,
    latent_shape: tuple[int, int, int],
    normalize: bool = True,
) -> TrainingSet:
    """Pairs every train row with its latent and contexts; ``normalize`` computes the per-channel latent
    stats of exactly the rows trained on."""
    ids, latents, errors, ae_id = read_latents(latents_uri, latent_shape)
    latent_of = dict(zip(ids, latents, strict=True))
    index = embeddings.index()
    sentence_ids = sorted(embeddings.sentences)
    sentence_index = {s: i for i, s in enumerate(sentence_ids)}
    blank = sentence_id(NO_FINDING_SENTENCE)
    kept, missing = [], {}
    for row in rows:
        sid = row["sample_id"]
        if sid not in latent_of:
            missing[sid] = f"no latent ({errors[sid]})" if sid in errors else "no latent in the filter output"
        elif sid not in index:
            missing[sid] = "no report embedding in the text output"
        else:
            sent = embeddings.sentence_of.get(sid, blank)
            if sent not in sentence_index:
                missing[sid] = f"disease sentence {sent} has no embedding"
                continue
            kept.append((sid, latent_of[sid], embeddings.contexts[index[sid]], sentence_index[sent]))
    if missing:
        log.warning(
            "diffusion: %d of %d train rows have no latent or embedding and are not trained on: %s",
            len(missing),
            len(rows),
            ", ".join(list(missing)[:5]),
        )
    if not kept:
        raise DataError(
            f"no train row has both a latent ({latents_uri}) and a report embedding; run the filter and text stages"
        )
    table = pa.table(
        {
            "sample_id": [k[0] for k in kept],
            "latent": [np.asarray(k[1], np.float16).tobytes() for k in kept],
            "context": [np.asarray(k[2], np.float16).tobytes() for k in kept],
            "sentence": pa.array([k[3] for k in kept], pa.int32()),
        }
    )
    return TrainingSet(
        table=table,
        sentence_ids=sentence_ids,
        sentences=np.stack([embeddings.sentences[s] for s in sentence_ids]).astype(np.float16),
        unconditional=np.asarray(embeddings.unconditional, np.float32),
        latent_shape=latent_shape,
        context_shape=tuple(embeddings.meta["context_shape"]),
        autoencoder_id=ae_id,
        missing=missing,
        latent_stats=LatentStats.of(np.stack([k[1] for k in kept])) if normalize else None,
    )


def float16_arrays(batch: dict[str, np.ndarray], payload: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The (latents, contexts) float16 arrays of a numpy batch of the training table's bytes columns."""
    latent_shape, context_shape = tuple(payload["latent_shape"]), tuple(payload["context_shape"])
    latents = np.stack([np.frombuffer(b, np.float16).reshape(latent_shape) for b in batch["latent"]])
    contexts = np.stack([np.frombuffer(b, np.float16).reshape(context_shape) for b in batch["context"]])
    return latents, contexts


def decode_batch(batch: dict[str, np.ndarray], payload: dict[str, Any]) -> dict[str, Any]:
    """A numpy batch of the training table → float32 tensors (latents, contexts, hints)."""
    import torch

    latents, contexts = float16_arrays(batch, payload)
    hints = payload["sentences"][batch["sentence"].astype(np.int64)]
    return {
        "sample_id": [str(s) for s in batch["sample_id"]],
        "latent": torch.from_numpy(latents.astype(np.float32)),
        "context": torch.from_numpy(contexts.astype(np.float32)),
        "hint": torch.from_numpy(hints.astype(np.float32)),
    }


def preview_set(rows: list[dict[str, Any]], embeddings: Embeddings, count: int) -> dict[str, Any] | None:
    """Fixed held-out reports for the preview grids: distinct disease sentences first, by sample id."""
    if count <= 0:
        return None
    index = embeddings.index()
    chosen, seen = [], set()
    candidates = sorted((r for r in rows if r["sample_id"] in index), key=lambda r: r["sample_id"])
    for r in candidates:  # one report per distinct sentence, then fill up
        sent = embeddings.sentence_of.get(r["sample_id"])
        if sent not in seen:
            chosen.append(r)
            seen.add(sent)
        if len(chosen) == count:
            break
    chosen += [r for r in candidates if r not in chosen][: count - len(chosen)]
    if not chosen:
        return None
    sentences = [embeddings.sentence_of.get(r["sample_id"]) for r in chosen]
    return {
        "sample_ids": [r["sample_id"] for r in chosen],
        "labels": [r["disease_sentence"] or NO_FINDING_SENTENCE for r in chosen],
        "contexts": np.stack([embeddings.contexts[index[r["sample_id"]]] for r in chosen]).astype(np.float32),
        "hints": np.stack([embeddings.sentences[s] for s in sentences]).astype(np.float32),
        "seeds": list(range(len(chosen))),
    }


class ShardBatches:
    """A Ray Train worker's batches, epoch after epoch.

    ``in_memory``: the shard is read from Ray Data once, held as float16 arrays, and each epoch is a
    permutation seeded by (seed, rank, epoch, first step), so only the step's own work remains per batch
    (tiny on all reports: 92 samples/s; streamed through Ray Data's iterator, local shuffle buffer and
    bytes → arrays per batch: 50). Otherwise each epoch streams the shard through a seeded local shuffle
    buffer, for training sets larger than a worker's memory.
    """

    def __init__(self, shard: Any, payload: dict[str, Any], per_worker: int, seed: int, rank: int,
                 in_memory: bool) -> None:  # fmt: skip
        self.shard, self.payload, self.per_worker = shard, payload, per_worker
        self.seed, self.rank, self.in_memory = seed, rank, in_memory
        self._rows: dict[str, Any] | None = None

    def _read(self) -> dict[str, Any]:
        """The shard as arrays, sorted by sample id: the epoch permutation then indexes the same rows
        whatever order Ray Data's blocks arrived in, so the same config trains the same model."""
        parts = list(self.shard.iter_batches(batch_size=1024, batch_format="numpy"))
        arrays = [float16_arrays(p, self.payload) for p in parts]
        sample_ids = [str(s) for p in parts for s in p["sample_id"]]
        order = np.argsort(np.asarray(sample_ids, dtype=object), kind="stable")
        return {
            "sample_id": [sample_ids[i] for i in order],
            "latent": np.concatenate([a[0] for a in arrays])[order],
            "context": np.concatenate([a[1] for a in arrays])[order],
            "sentence": np.concatenate([p["sentence"] for p in parts]).astype(np.int64)[order],
        }

    def epoch(self, epoch: int, first_step: int) -> Any:
        """The batches of one pass over the shard (full batches only)."""
        if not self.in_memory:
            for raw in self.shard.iter_batches(
                batch_size=self.per_worker,
                batch_format="numpy",
                drop_last=True,
                local_shuffle_buffer_size=4 * self.per_worker,
                local_shuffle_seed=self.seed + 7919 * (epoch + first_step) + self.rank,
            ):
                yield decode_batch(raw, self.payload)
            return
        import torch

        if self._rows is None:
            self._rows = self._read()
        rows = self._rows
        n = len(rows["sample_id"])
        order = np.random.default_rng([self.seed, self.rank, epoch, first_step]).permutation(n)
        for start in range(0, n - self.per_worker + 1, self.per_worker):
            idx = order[start : start + self.per_worker]
            yield {
                "sample_id": [rows["sample_id"][i] for i in idx],
                "latent": torch.from_numpy(rows["latent"][idx].astype(np.float32)),
                "context": torch.from_numpy(rows["context"][idx].astype(np.float32)),
                "hint": torch.from_numpy(self.payload["sentences"][rows["sentence"][idx]].astype(np.float32)),
            }
