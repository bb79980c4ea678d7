"""One request through the model graph: text deployment → per image, denoiser → decoder → output files.

The denoiser's response is handed to the decoder un-awaited, so latents go replica to replica. Every call
names the request's :class:`ModelVersion` as Serve's multiplexed model id, so the router prefers replicas
that hold that version and one image never mixes parts of two versions. Lost replicas are retried
(:mod:`services.serve.retries`).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from diffcxr.constants import CHEXPERT_LABELS
from diffcxr.contracts import outputs
from services.serve.config import ServeConfig
from services.serve.deployments import DenoiseJob, TextJob
from services.serve.models import ModelVersion
from services.serve.retries import retrying

EMPTY_REPORT_WARNING = "report: empty; generated unconditionally (no report conditioning)"


class Graph:
    """Handles of the text, denoiser and decoder deployments, and what the ingress does with them."""

    def __init__(self, cfg: ServeConfig, text: Any, denoiser: Any, decoder: Any) -> None:
        self.cfg, self.text, self.denoiser, self.decoder = cfg, text, denoiser, decoder
        self._described: dict[str, dict[str, Any]] = {}

    def handles(self) -> dict[str, Any]:
        return {"text": self.text, "denoiser": self.denoiser, "decoder": self.decoder}

    async def describe(self, model: ModelVersion) -> dict[str, Any]:
        """The denoiser's sampling defaults, image size and provenance of ``model``, with the config's
        ``default_steps`` / ``default_guidance`` and ``limits.max_steps`` applied (cached per version)."""
        if model.label not in self._described:
            info = await self.denoiser.options(multiplexed_model_id=model.label).describe.remote(model)
            sampling, cfg = info["sampling"], self.cfg
            steps = cfg.default_steps if cfg.default_steps is not None else sampling["steps"]
            guidance = cfg.default_guidance if cfg.default_guidance is not None else sampling["guidance"]
            defaults = {"steps": min(steps, cfg.limits.max_steps), "guidance": guidance,
                        "scheduler": sampling["scheduler"]}  # fmt: skip
            self._described[model.label] = {**info, "defaults": defaults}
        return self._described[model.label]

    async def encode(self, job: TextJob) -> dict[str, Any]:
        text = self.text.options(multiplexed_model_id=job.model.label)
        return await retrying(lambda: text.encode.remote(job), "text")

    async def image(self, job: DenoiseJob) -> dict[str, Any]:
        denoiser = self.denoiser.options(multiplexed_model_id=job.model.label)
        decoder = self.decoder.options(multiplexed_model_id=job.model.label)
        return await retrying(lambda: decoder.decode.remote(denoiser.sample.remote(job)), f"image seed={job.seed}")

    async def run(self, req: Any, model: ModelVersion, request_id: str) -> AsyncIterator[dict[str, Any]]:
        """Events: labels, then one per finished image (in completion order), then done."""
        start = time.perf_counter()
        info = await self.describe(model)
        steps = req.steps if req.steps is not None else info["defaults"]["steps"]
        guidance = float(req.guidance if req.guidance is not None else info["defaults"]["guidance"])
        seed = req.seed if req.seed is not None else secrets.randbelow(2**63 - req.num_images)
        text = await self.encode(TextJob(model, req.report, req.disease_sentence))
        warnings = [EMPTY_REPORT_WARNING] if text["unconditional"] else []
        labels = {name: text["labels"].get(name) for name in CHEXPERT_LABELS}
        yield {
            "event": "labels", "labels": labels, "disease_sentence": text["disease_sentence"],
            "unconditional": text["unconditional"], "warnings": warnings, "steps": steps, "guidance": guidance,
        }  # fmt: skip
        seeds = [seed + i for i in range(req.num_images)]
        jobs = [DenoiseJob(model, text["context"], text["hint"], text["uncond"], s, steps, guidance) for s in seeds]
        meta = {"steps": steps, "guidance": guidance, "disease_sentence": text["disease_sentence"],
                "models": {"generator": model.label, **info["provenance"]}}  # fmt: skip
        images: list[dict[str, Any] | None] = [None] * len(jobs)
        tally = _Tally(text)
        async with aclosing(self._images(jobs)) as finished:
            async for i, done, result in finished:
                image_meta = {**meta, "seed": seeds[i], "runtime": result["runtime"]}
                data = outputs.encode(result["image"], req.format, req.bit_depth, image_meta)
                tally.add(result)
                images[i] = {"seed": seeds[i], "content_type": outputs.CONTENT_TYPES[req.format],
                             "sha256": hashlib.sha256(data).hexdigest(), "bytes": data,
                             "precision": result["runtime"]["precision"], "runtime": result["runtime"]}  # fmt: skip
                yield {"event": "image", "index": i, "done": done, "total": len(jobs), "image": images[i]}
        tally.timings["total"] = (time.perf_counter() - start) * 1000
        yield {
            "event": "done",
            "response": {
                "request_id": request_id, "synthetic": True, "images": images, "labels": labels,
                "disease_sentence": text["disease_sentence"], "unconditional": text["unconditional"],
                "warnings": warnings, "steps": steps, "guidance": guidance, "format": req.format,
                "models": {"model": model.label, "ref": model.ref, "parts": info["provenance"],
                           "served_by": tally.served},
                "timings_ms": tally.timings, "batch_sizes": tally.batches,
            },
        }  # fmt: skip

    async def _images(self, jobs: list[DenoiseJob]) -> AsyncIterator[tuple[int, int, dict[str, Any]]]:
        """(index, how many done, result) per image as each finishes; the rest are cancelled if the consumer
        stops early (a client gone mid-stream)."""

        async def indexed(i: int, job: DenoiseJob) -> tuple[int, dict[str, Any]]:
            return i, await self.image(job)

        tasks = [asyncio.ensure_future(indexed(i, job)) for i, job in enumerate(jobs)]
        try:
            for done, future in enumerate(asyncio.as_completed(tasks), start=1):
                i, result = await future
                yield i, done, result
        finally:
            for t in tasks:
                t.cancel()

    async def generate_once(self, req: Any, model: ModelVersion, request_id: str) -> dict[str, Any]:
        """The ``done`` event's response of :meth:`run`."""
        response: dict[str, Any] = {}
        async for event in self.run(req, model, request_id):
            if event["event"] == "done":
                response = event["response"]
        return response


class _Tally:
    """Which version served each part, the slowest part times and the largest batches of one request."""

    def __init__(self, text: dict[str, Any]) -> None:
        self.served = {"text": text["served_by"]}
        self.timings = {"text": text["ms"], "denoise": 0.0, "decode": 0.0}
        self.batches = {"text": text["batch"], "denoise": 0, "decode": 0}

    def add(self, result: dict[str, Any]) -> None:
        self.served.update(result["served_by"])
        for part in ("denoise", "decode"):
            self.timings[part] = max(self.timings[part], result["ms"][part])
            self.batches[part] = max(self.batches[part], result["batch"][part])
