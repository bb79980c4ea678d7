"""The three model deployments of the generation graph, each on its own replicas.

- :class:`TextDeployment` — labeler + disease sentence + text encoder + squeeze.
- :class:`DenoiserDeployment` — U-ViT (+ adapter) and the sampling loop; it also
  reports a version's sampling defaults, image size and part provenance
  (:meth:`DenoiserDeployment.describe`), since the sampler is its job.
- :class:`DecoderDeployment` — the autoencoder's decoder.

Each batches concurrent requests with ``@serve.batch`` (batch size and wait
come from the config through ``reconfigure``, so ``max_batch_size: 1`` turns
batching off without a code change), loads parts by the :class:`ModelVersion`
a request carries, and reports which version served it.

Versions are loaded with Ray Serve's model multiplexing:
``@serve.multiplexed(max_num_models_per_replica=2)`` keeps the two most
recently used versions per replica (the pinned one and, during an alias
roll-over, the next), and the ingress sends each call with
``handle.options(multiplexed_model_id=version.label)``, so Serve's router
prefers replicas that already hold that version and ``@serve.batch`` never
mixes two versions in one batch. The model id is the readable label
(``NAME/VERSION``, ``local/<spec hash>``); the full :class:`ModelVersion`
(where to download it from) travels in the job, because a replica may be asked
for a version it was not configured with (a roll-out: an old ingress calling a
new replica) and a label alone does not say where a local bundle lives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve

from diffcxr.precision import runtime_record
from services.serve.models import ModelVersion, local_folder

log = logging.getLogger("ray.serve.diffcxr")
#: Versions a replica keeps loaded: the one being served and, while an alias rolls over, the next one.
MAX_VERSIONS_PER_REPLICA = 2


@dataclass
class TextJob:
    model: ModelVersion
    report: str
    disease_sentence: str | None = None


@dataclass
class DenoiseJob:
    model: ModelVersion
    context: np.ndarray
    hint: np.ndarray | None
    uncond: np.ndarray
    seed: int
    steps: int
    guidance: float


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


class _LoadedPart:
    """What the multiplexer caches: a loaded part, and a hook that tells the replica when Serve evicts it
    (Serve calls ``__del__`` of the model it unloads; the replica's health lists what is loaded)."""

    def __init__(self, label: str, part: Any, on_unload: Callable[[str], None]) -> None:
        self.label, self.part, self._on_unload = label, part, on_unload

    def __del__(self) -> None:
        self._on_unload(self.label)


class _ModelDeployment:
    """Shared plumbing: user_config → pinned version + batch settings; version loading; health."""

    part_factory: Any = None
    batched: tuple[str, ...] = ()

    def __init__(self, threads: int = 1) -> None:
        _threads(threads)
        self.tracking_uri: str | None = None
        self.model_cache: str | None = None
        self.precision: str | None = None
        self._versions: dict[str, ModelVersion] = {}  # label → version: where the multiplexer loads it from
        self._loaded: dict[str, None] = {}  # loaded labels, most recently used last (dicts keep order)

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Called by Serve at start and on every config change: batching, then load the pinned version (so
        health says loaded before the first request)."""
        self.tracking_uri, self.model_cache = config.get("tracking_uri"), config.get("model_cache")
        self.precision = config.get("precision")
        for name in self.batched:
            method = getattr(self, name)
            method.set_max_batch_size(int(config.get("max_batch_size", 8)))
            method.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", 0.01)))
        await self.part(ModelVersion(**config["model"]))

    async def part(self, model: ModelVersion) -> Any:
        """The loaded part of ``model`` (loaded on first use, through Serve's multiplexer)."""
        self._versions[model.label] = model
        loaded = await self._load_version(model.label)
        self._loaded.pop(model.label, None)
        self._loaded[model.label] = None
        return loaded.part

    @serve.multiplexed(max_num_models_per_replica=MAX_VERSIONS_PER_REPLICA)
    async def _load_version(self, label: str) -> _LoadedPart:
        """Serve's model loader (model id = version label). Runs off the event loop, so the replica keeps
        answering (health, requests for the version it holds) while a new version downloads and loads."""
        model = self._versions[label]
        log.info("loading generator %s", label)
        folder = await asyncio.to_thread(local_folder, model, self.tracking_uri, self.model_cache)
        part = await asyncio.to_thread(type(self).part_factory, folder, self.precision)
        return _LoadedPart(label, part, self._unloaded)

    def _unloaded(self, label: str) -> None:
        if self._loaded.pop(label, 0) is None:
            log.info("unloaded generator %s", label)

    def health(self) -> dict[str, Any]:
        loaded = list(self._loaded)
        return {"current": loaded[-1] if loaded else None, "loaded": loaded}


def _text_part(folder: Any, precision: str | None) -> Any:
    from services.text import TextPart

    return TextPart(folder)  # the text encoder runs fp32 everywhere: a small share of the time


def _denoiser_part(folder: Any, precision: str | None) -> Any:
    from services.diffusion import DenoiserPart

    return DenoiserPart(folder, precision)


def _decoder_part(folder: Any, precision: str | None) -> Any:
    from services.diffusion import DecoderPart

    return DecoderPart(folder, precision)


@serve.deployment
class TextDeployment(_ModelDeployment):
    part_factory = staticmethod(_text_part)
    batched = ("encode",)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def encode(self, jobs: list[TextJob]) -> list[dict[str, Any]]:
        """Labels, disease sentence and contexts per report; one text-model call per model version in the batch."""
        start = time.perf_counter()
        out: list[dict[str, Any] | None] = [None] * len(jobs)
        for label in dict.fromkeys(j.model.label for j in jobs):
            idx = [i for i, j in enumerate(jobs) if j.model.label == label]
            part = await self.part(jobs[idx[0]].model)
            results = part.run([jobs[i].report for i in idx], [jobs[i].disease_sentence for i in idx])
            uncond = part.uncond.numpy()
            for i, r in zip(idx, results, strict=True):
                out[i] = {
                    "labels": r.labels,
                    "disease_sentence": r.disease_sentence,
                    "context": r.context,
                    "hint": r.hint,
                    "uncond": uncond,
                    "unconditional": r.unconditional,
                    "served_by": label,
                }
        ms = (time.perf_counter() - start) * 1000
        for o in out:
            o["ms"] = ms
            o["batch"] = len(jobs)
        return out


@serve.deployment
class DenoiserDeployment(_ModelDeployment):
    part_factory = staticmethod(_denoiser_part)
    batched = ("sample",)

    async def describe(self, model: ModelVersion) -> dict[str, Any]:
        """Sampler defaults, image size and part provenance of a version: the denoiser runs the sampler, so
        it reports the defaults it samples with (the ingress has no torch and loads no part)."""
        from diffcxr.bundle import provenance

        spec = (await self.part(model)).spec
        return {"sampling": spec["sampling"], "image_size": spec["image_size"], "provenance": provenance(spec)}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def sample(self, jobs: list[DenoiseJob]) -> list[dict[str, Any]]:
        """Latents per job; jobs sharing (model version, steps, guidance) run as one sampler batch."""
        out: list[dict[str, Any] | None] = [None] * len(jobs)
        groups: dict[tuple[str, int, float], list[int]] = {}
        for i, j in enumerate(jobs):
            groups.setdefault((j.model.label, j.steps, j.guidance), []).append(i)
        for (label, steps, guidance), idx in groups.items():
            start = time.perf_counter()
            first = jobs[idx[0]]
            part = await self.part(first.model)
            hints = np.stack([jobs[i].hint for i in idx]) if first.hint is not None else None
            latents = part.sample(
                np.stack([jobs[i].context for i in idx]), hints, first.uncond,
                [jobs[i].seed for i in idx], steps, guidance,
            )  # fmt: skip
            ms = (time.perf_counter() - start) * 1000
            runtime = runtime_record(part.precision)
            for i, lat in zip(idx, latents, strict=True):
                out[i] = {"model": jobs[i].model, "latent": lat, "served_by": label, "ms": ms, "batch": len(idx),
                          "runtime": runtime}  # fmt: skip
        return out


@serve.deployment
class DecoderDeployment(_ModelDeployment):
    part_factory = staticmethod(_decoder_part)
    batched = ("decode",)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def decode(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Grayscale [0, 1] float32 image per denoiser output (decoded one at a time: batch-invariant)."""
        start = time.perf_counter()
        out = []
        for item in items:
            part = await self.part(item["model"])
            image = part.decode(item["latent"][None])[0]
            runtime = dict(item["runtime"])
            if part.precision != runtime["precision"]:  # nodes whose hardware differs, with precision auto
                runtime["decoder_precision"] = part.precision
            out.append(
                {
                    "image": image,
                    "runtime": runtime,
                    "served_by": {"denoiser": item["served_by"], "decoder": item["model"].label},
                    "ms": {"denoise": item["ms"], "decode": 0.0},
                    "batch": {"denoise": item["batch"], "decode": len(items)},
                }
            )
        ms = (time.perf_counter() - start) * 1000
        for o in out:
            o["ms"]["decode"] = ms
        return out
