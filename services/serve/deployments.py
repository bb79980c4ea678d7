"""The three model deployments of the generation graph, each on its own replicas.

- :class:`TextDeployment` — labeler + disease sentence + text encoder + squeeze.
- :class:`DenoiserDeployment` — U-ViT (+ adapter) and the sampling loop.
- :class:`DecoderDeployment` — the autoencoder's decoder.

Each batches concurrent requests with ``@serve.batch`` (batch size and wait
come from the config through ``reconfigure``, so ``max_batch_size: 1`` turns
batching off without a code change), loads parts by the :class:`ModelVersion`
a request carries, and reports which version served it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve

from services.serve.models import LoadedVersions, ModelVersion


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


class _ModelDeployment:
    """Shared plumbing: user_config → loaded version + batch settings; health."""

    part_factory: Any = None
    batched: tuple[str, ...] = ()

    def __init__(self, threads: int = 1) -> None:
        _threads(threads)
        self.parts: LoadedVersions | None = None
        self.current: ModelVersion | None = None

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Called by Serve at start and on every config change: pin the version and batching, load the parts."""
        if self.parts is None:
            self.parts = LoadedVersions(type(self).part_factory, config.get("tracking_uri"), config.get("model_cache"))
        for name in self.batched:
            method = getattr(self, name)
            method.set_max_batch_size(int(config.get("max_batch_size", 8)))
            method.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", 0.01)))
        self.current = ModelVersion(**config["model"])
        self.parts.get(self.current)

    def health(self) -> dict[str, Any]:
        loaded = self.parts.loaded() if self.parts else []
        return {"current": loaded[-1] if loaded else None, "loaded": loaded}


def _text_part(folder: Any) -> Any:
    from services.text import TextPart

    return TextPart(folder)


def _denoiser_part(folder: Any) -> Any:
    from services.diffusion.parts import DenoiserPart

    return DenoiserPart(folder)


def _decoder_part(folder: Any) -> Any:
    from services.diffusion.parts import DecoderPart

    return DecoderPart(folder)


@serve.deployment
class TextDeployment(_ModelDeployment):
    part_factory = staticmethod(_text_part)
    batched = ("encode",)

    def describe(self, model: ModelVersion) -> dict[str, Any]:
        """Sampler defaults, image size and part provenance of a version (the ingress has no torch)."""
        from diffcxr.bundle import provenance

        spec = self.parts.get(model).spec
        return {"sampling": spec["sampling"], "image_size": spec["image_size"], "provenance": provenance(spec)}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def encode(self, jobs: list[TextJob]) -> list[dict[str, Any]]:
        """Labels, disease sentence and contexts per report; one text-model call per model version in the batch."""
        start = time.perf_counter()
        out: list[dict[str, Any] | None] = [None] * len(jobs)
        for label in dict.fromkeys(j.model.label for j in jobs):
            idx = [i for i, j in enumerate(jobs) if j.model.label == label]
            part = self.parts.get(jobs[idx[0]].model)
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
            part = self.parts.get(first.model)
            hints = np.stack([jobs[i].hint for i in idx]) if first.hint is not None else None
            latents = part.sample(
                np.stack([jobs[i].context for i in idx]), hints, first.uncond,
                [jobs[i].seed for i in idx], steps, guidance,
            )  # fmt: skip
            ms = (time.perf_counter() - start) * 1000
            for i, lat in zip(idx, latents, strict=True):
                out[i] = {"model": jobs[i].model, "latent": lat, "served_by": label, "ms": ms, "batch": len(idx)}
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
            part = self.parts.get(item["model"])
            image = part.decode(item["latent"][None])[0]
            out.append(
                {
                    "image": image,
                    "served_by": {"denoiser": item["served_by"], "decoder": item["model"].label},
                    "ms": {"denoise": item["ms"], "decode": 0.0},
                    "batch": {"denoise": item["batch"], "decode": len(items)},
                }
            )
        ms = (time.perf_counter() - start) * 1000
        for o in out:
            o["ms"]["decode"] = ms
        return out
