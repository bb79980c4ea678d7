"""Training pairs on Ray Data: (image, report) rows → decoded images + token ids or frozen token states.

When the text tower is frozen (``text.train_parts`` squeezer or squeezer+heads)
its token states depend only on the report, so an actor pool computes them once
— about 2 s per 32 reports on one CPU core for MiniLM, versus 0.15 s for the
rest of a training step. The stage's :func:`tower_pass` does so for every text
it needs (training, held-out scoring, embeddings) in one materialised pass;
:func:`training_dataset` prepares the pairs alone. Small datasets are
materialised in the object store so epochs reuse them; large ones stream and
are recomputed per epoch.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from diffcxr import storage
from diffcxr.config import DiffCXRConfig
from diffcxr.contracts.images import read_and_decode
from diffcxr.errors import DataError
from diffcxr.raycluster import map_with_actor_pool
from services.text.embed import embedding_items

#: Materialise the prepared training set when it is smaller than this.
MATERIALISE_BYTES = 1 << 30


def text_is_frozen(train_parts: str) -> bool:
    return train_parts in ("squeezer", "squeezer+heads")


def decode_pairs(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Ray Data task: image URIs → (B, size, size) uint8; unreadable rows are dropped (the filter stage
    already quarantined unreadable images, so a drop here means the file changed since)."""
    decoded = read_and_decode(batch, size)
    keep = np.array([not e for e in decoded["error"]], dtype=bool)
    return {
        "sample_id": batch["sample_id"][keep],
        "report_text": batch["report_text"][keep],
        "image": decoded["image"][keep],
    }


def _load_bundle(uri: str) -> Any:
    """A bundle, cached per process by URI *and* weight hash (a URI rewritten with new weights reloads)."""
    import json

    spec = json.loads(storage.read_text(storage.join(uri, "text_model.json")))
    return _load_bundle_cached(uri, spec.get("weights_sha256", ""))


@functools.lru_cache(maxsize=2)
def _load_bundle_cached(uri: str, weights_sha256: str) -> Any:
    from services.text.model import ReportEncoder

    return ReportEncoder.load_bundle(storage.get_folder(uri))


#: Texts per tower call in :func:`tower_pass`. A bundle with ``pad_states: zero`` runs the rows of each token
#: count together: 128 rows hold fewer distinct counts than 32 (1.3x faster than 32 on MiniLM, 2-core AVX2).
TOWER_BATCH = 128


def tokenize_batch(batch: dict[str, np.ndarray], bundle_uri: str) -> dict[str, np.ndarray]:
    """Ray Data task: reports → token ids (the text tower trains, so states are computed in the step)."""
    tokens = _load_bundle(bundle_uri).tokenizer()(list(batch["report_text"]))
    return {"image": batch["image"], "ids": tokens.ids.numpy()}


class TokenStateActor:
    """Ray Data actor: frozen text tower → pooled vector and token states (float16) of each row's
    ``text_column``; the batch's other columns pass through."""

    def __init__(self, bundle_uri: str, threads: int = 1, text_column: str = "report_text") -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.model = _load_bundle(bundle_uri).eval()
        self.tokenizer = self.model.tokenizer()
        self.text_column = text_column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        ids = self.tokenizer([str(t) if t is not None else "" for t in batch[self.text_column]]).ids
        with torch.no_grad():
            pooled, states = self.model.token_states(ids)
        return {**batch, "pooled": pooled.numpy().astype(np.float16), "states": states.numpy().astype(np.float16)}


def state_bytes(cfg: DiffCXRConfig) -> int:
    """Bytes of one row's frozen-tower output (float16 pooled vector and token states) plus its image."""
    return cfg.data.image_size**2 + 2 * cfg.text.hidden_dim * (cfg.text.context_length + 2)


def decode_trainable(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Ray Data task: the rows marked ``train`` get their image decoded; a row whose image cannot be read
    stays (its report is still embedded) but is unmarked, as :func:`decode_pairs` drops it from training."""
    images = np.zeros((len(batch["key"]), size, size), dtype=np.uint8)
    train = batch["train"].astype(bool).copy()
    if train.any():
        wanted = {"sample_id": batch["key"][train], "image_uri": batch["image_uri"][train]}
        decoded = read_and_decode(wanted, size)
        images[train] = decoded["image"]
        train[np.flatnonzero(train)[np.array([bool(e) for e in decoded["error"]], dtype=bool)]] = False
    return {**batch, "train": train, "image": images}


def tower_pass(
    rows: list[dict[str, Any]], sentences: dict[str, str], cfg: DiffCXRConfig, bundle_uri: str
) -> Any | None:
    """One pass of the frozen text tower over every text the text stage needs — each kept row's report and
    each distinct disease sentence (``sentences``: id → text) — with the train rows' images decoded beside
    them, materialised in the object store.

    Training, held-out scoring and the embeddings all read it, so the tower (most of the stage's time:
    MiniLM at 128 tokens ran ~68 ms per report on this 2-core machine) runs once per text instead of twice
    for a train row. Columns: ``kind`` (report | sentence), ``key``, ``sentence_id``, ``text``, ``split``,
    ``train`` (a train-split row whose image decoded), ``image``, ``pooled``, ``states``. None when the tower
    trains (its states change) or the pass would not fit ``MATERIALISE_BYTES``: callers then compute states
    where they need them.
    """
    import ray

    if not text_is_frozen(cfg.text.train_parts) or (len(rows) + len(sentences)) * state_bytes(cfg) >= MATERIALISE_BYTES:
        return None
    where = [{"split": r["split"] or "", "image_uri": r["image_uri"] or "",
              "train": r["split"] == "train" and bool(r["image_uri"])} for r in rows]  # fmt: skip
    where += [{"split": "", "image_uri": "", "train": False}] * len(sentences)
    items = [{**item, **w} for item, w in zip(embedding_items(rows, sentences), where, strict=True)]
    # in the input's order: training reads this pass, and blocks kept in finishing order made two runs of one
    # config train on differently ordered rows (different weights)
    context = ray.data.DataContext.get_current()
    preserve_order, context.execution_options.preserve_order = context.execution_options.preserve_order, True
    try:
        ds = ray.data.from_items(items, override_num_blocks=max(2, min(64, len(items) // 64)))
        ds = ds.map_batches(decode_trainable, fn_kwargs={"size": cfg.data.image_size}, batch_size=64,
                            batch_format="numpy", num_cpus=0.25)  # fmt: skip
        ds = map_with_actor_pool(ds, TokenStateActor, {"bundle_uri": bundle_uri, "text_column": "text"}, cfg,
                                 max(cfg.text.embed_batch_size, TOWER_BATCH))  # fmt: skip
        return ds.materialize()
    finally:
        context.execution_options.preserve_order = preserve_order


def train_pairs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray Data task: the training pairs (image, frozen-tower states) among a :func:`tower_pass` batch."""
    keep = batch["train"].astype(bool)
    return {"image": batch["image"][keep], "pooled": batch["pooled"][keep], "states": batch["states"][keep]}


def states_of(shared: Any, keys: list[str]) -> tuple[Any, Any]:
    """(pooled, states) float32 tensors of the report rows ``keys`` from a :func:`tower_pass`, in that order."""
    import torch

    wanted = set(keys)
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for batch in shared.select_columns(["kind", "key", "pooled", "states"]).iter_batches(batch_format="numpy"):
        for i, key in enumerate(batch["key"]):
            if batch["kind"][i] == "report" and key in wanted:
                found[str(key)] = (batch["pooled"][i], batch["states"][i])
    missing = wanted - found.keys()
    if missing:
        raise DataError(f"{len(missing)} rows are missing from the text tower pass (first: {sorted(missing)[0]})")
    pooled = torch.from_numpy(np.stack([found[k][0] for k in keys]).astype(np.float32))
    return pooled, torch.from_numpy(np.stack([found[k][1] for k in keys]).astype(np.float32))


def training_dataset(rows: list[dict[str, Any]], cfg: DiffCXRConfig, bundle_uri: str) -> Any:
    """The Ray Dataset the train workers consume (``image`` plus ``ids`` or ``pooled``/``states``)."""
    import ray

    if len(rows) < cfg.text.batch_size:
        raise DataError(
            f"text.batch_size {cfg.text.batch_size} is larger than the {len(rows)} training pairs; lower it"
        )
    items = [
        {"sample_id": r["sample_id"], "image_uri": r["image_uri"], "report_text": r["report_text"] or ""} for r in rows
    ]
    blocks = max(2, min(64, len(items) // 64))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(
        decode_pairs, fn_kwargs={"size": cfg.data.image_size}, batch_size=64, batch_format="numpy", num_cpus=0.25
    )
    frozen = text_is_frozen(cfg.text.train_parts)
    if frozen:
        ds = map_with_actor_pool(ds, TokenStateActor, {"bundle_uri": bundle_uri}, cfg, cfg.text.embed_batch_size)
        ds = ds.select_columns(["image", "pooled", "states"])
        per_row = state_bytes(cfg)
    else:
        ds = ds.map_batches(
            tokenize_batch, fn_kwargs={"bundle_uri": bundle_uri}, batch_size=256, batch_format="numpy", num_cpus=0.25
        )
        per_row = cfg.data.image_size**2 + 8 * cfg.text.context_length
    if per_row * len(rows) < MATERIALISE_BYTES:
        ds = ds.materialize()
    return ds
