"""Squeezed embeddings for the diffusion stage, written through Ray Data.

Under ``<out>/``: ``table/`` (Parquet shards, one row per report and one per
distinct disease sentence: ``kind`` (report | sentence), ``key`` (sample_id or
sentence_id), ``sentence_id`` (a report's disease sentence), ``n_tokens``,
``truncated``, ``empty``, ``context`` (K×d float16 bytes), ``feature``
(joint-space vector, float16 bytes)), ``unconditional.npy`` (the empty report's
context, float32) and ``embeddings.json`` (shapes, dtype, the text model used).
Sentences are few, so they are stored once rather than per image; reports and
sentences go through one Ray Data pass so the actor pool starts once.

An empty or missing report gets exactly the unconditional context: the stage
computes it once (:func:`unconditional_of`), writes it to ``unconditional.npy``
and hands the same array to every actor, which substitutes it for empty rows.
So the diffusion stage's "drop the condition" is bit-identical to "the report
was empty" — one computation, not one per process: a convolution rounds
differently at another thread count, and actors run at ``ray.actor_threads``.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np

from diffcxr import storage
from diffcxr.contracts.embeddings import sentence_id
from diffcxr.labeling.sentences import NO_FINDING_SENTENCE

log = logging.getLogger(__name__)


#: The columns an embeddings row keeps from its input row.
ID_COLUMNS = ("kind", "key", "sentence_id")


def embedding_items(rows: list[dict[str, Any]], sentences: dict[str, str]) -> list[dict[str, Any]]:
    """The texts to embed: one item per kept row's report, then one per distinct disease sentence
    (``sentences``: id → text), each with the :data:`ID_COLUMNS` and ``text``."""
    reports = [
        {"kind": "report", "key": r["sample_id"], "text": r["report_text"] or "",
         "sentence_id": sentence_id(r["disease_sentence"] or NO_FINDING_SENTENCE)}
        for r in rows
    ]  # fmt: skip
    return reports + [{"kind": "sentence", "key": k, "sentence_id": k, "text": s} for k, s in sentences.items()]


def unconditional_of(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """The empty report's context (K, d) and joint-space feature, float32: computed once per embedding pass."""
    import torch

    with torch.no_grad():
        global_token, context = model.encode(model.tokenizer()([""]).ids)
        return context[0].numpy(), model.text_features(global_token)[0].numpy()


class EmbedActor:
    """Ray Data actor: loads the text model once; texts → contexts and features. A batch that carries its
    frozen tower's ``pooled``/``states`` (:func:`services.text.data.tower_pass`) is only squeezed. Empty reports
    get ``uncond`` (the stage's :func:`unconditional_of`), not a context of the actor's own making."""

    def __init__(self, bundle_uri: str, uncond: tuple[np.ndarray, np.ndarray], threads: int = 1) -> None:
        import torch

        from services.text.data import _load_bundle

        torch.set_num_threads(max(1, threads))
        self.model = _load_bundle(bundle_uri).eval()
        self.tokenizer = self.model.tokenizer()
        self.uncond, self.uncond_feature = (np.asarray(a).astype(np.float16) for a in uncond)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        texts = [str(t) if t is not None else "" for t in batch["text"]]
        tokens = self.tokenizer(texts)
        empty = np.array([not self.tokenizer.normalise(t) for t in texts])
        with torch.no_grad():
            if "states" in batch:
                pooled, states = (torch.from_numpy(batch[k].astype(np.float32)) for k in ("pooled", "states"))
                global_token, context = self.model.squeeze_states(pooled, states)
            else:
                global_token, context = self.model.encode(tokens.ids)
            features = self.model.text_features(global_token)
        context = context.numpy().astype(np.float16)
        features = features.numpy().astype(np.float16)
        context[empty], features[empty] = self.uncond, self.uncond_feature
        out = {k: batch[k] for k in ID_COLUMNS}
        out.update(
            n_tokens=np.array(tokens.n_tokens, dtype=np.int32),
            truncated=np.array(tokens.truncated, dtype=bool),
            empty=empty,
            context=np.array([c.tobytes() for c in context], dtype=object),
            feature=np.array([f.tobytes() for f in features], dtype=object),
        )
        return out


def embed_with_ray(
    items: list[dict[str, Any]] | Any,
    bundle_uri: str,
    out_uri: str,
    batch_size: int,
    cfg: Any,
    uncond: tuple[np.ndarray, np.ndarray],
) -> None:
    """Write embeddings of ``items`` (each has ``text`` plus the :data:`ID_COLUMNS`; or a Ray Dataset of
    such rows, with the frozen tower's states) as Parquet shards at ``out_uri``; empty reports get ``uncond``
    (:func:`unconditional_of` of the same bundle)."""
    import ray

    from diffcxr.raycluster import map_with_actor_pool

    if isinstance(items, list):
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(64, len(items) // max(1, batch_size))))
    else:
        ds = items.select_columns([*ID_COLUMNS, "text", "pooled", "states"])
    ds = map_with_actor_pool(ds, EmbedActor, {"bundle_uri": bundle_uri, "uncond": uncond}, cfg, batch_size)
    fs, path = storage.resolve(out_uri)
    storage.delete(out_uri)
    ds.write_parquet(path, filesystem=fs)


def write_unconditional(out_uri: str, uncond: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, uncond.astype(np.float32))
    uri = storage.join(out_uri, "unconditional.npy")
    storage.write_bytes(uri, buf.getvalue())
    return uri


