"""Generation for evaluation: a Ray Data batch job over held-out reports, one actor pool per generator.

Each (report, repeat) gets its own seed, derived from the project seed, the
sample id and the repeat index (:func:`eval_seed`), so an image does not
depend on which actor or batch produced it, and re-running the evaluation
reproduces it. The job writes Parquet shards (sample id, repeat, seed, disease
sentence, raw 8-bit pixels — not image files, so nothing unmarked leaves the
service; every row carries ``synthetic = true``) and reports its wall time, from which images/s is
computed. Actors load the bundle from a URI (local path or ``s3://``) so the pool can span nodes.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffcxr import storage


def eval_seed(base_seed: int, sample_id: str, repeat: int) -> int:
    """A stable seed in [0, 2**63) for one image of one report."""
    digest = hashlib.sha256(f"{base_seed}:{sample_id}:{repeat}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class GenerateActor:
    """Loads the generator once per actor; turns a batch of (report, seed) rows into pixels."""

    def __init__(self, bundle_uri: str, steps: int | None, guidance: float | None, threads: int) -> None:
        from services.diffusion import Generator

        self.generator = Generator(storage.get_folder(bundle_uri), threads=threads)
        self.steps, self.guidance = steps, guidance

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        reports = [str(r) for r in batch["report"]]
        images = self.generator.generate(
            reports, [int(s) for s in batch["seed"]], self.steps, self.guidance, batch_size=len(reports)
        )
        return {
            "key": batch["key"],
            "sample_id": batch["sample_id"],
            "repeat": batch["repeat"],
            "seed": batch["seed"],
            "disease_sentence": np.array([i.disease_sentence for i in images], dtype=object),
            "pixels": np.array([i.pixels.tobytes() for i in images], dtype=object),
            "size": np.array([i.pixels.shape[0] for i in images], dtype=np.int32),
            "synthetic": np.ones(len(images), dtype=bool),  # generated pixels are marked wherever they are stored
        }


@dataclass
class Generated:
    """Images of one generator, in request order."""

    sample_ids: list[str]
    repeats: list[int]
    seeds: list[int]
    sentences: list[str]
    images: np.ndarray  # (N, S, S) uint8
    seconds: float

    @property
    def images_per_second(self) -> float:
        return len(self.images) / self.seconds if self.seconds else 0.0


def requests(rows: list[dict[str, Any]], images_per_report: int, base_seed: int) -> list[dict[str, Any]]:
    """One request per (row, repeat), keyed in order."""
    out = []
    for row in rows:
        for r in range(images_per_report):
            seed = eval_seed(base_seed, row["sample_id"], r)
            report = row.get("report_text") or ""
            out.append({"key": len(out), "sample_id": row["sample_id"], "repeat": r, "report": report, "seed": seed})
    return out


def generate_with_ray(
    items: list[dict[str, Any]], bundle_uri: str, out_uri: str, cfg: Any, steps: int | None, guidance: float | None
) -> Generated:
    """Run the Ray Data job for ``items`` (from :func:`requests`), write shards at ``out_uri``, read them back."""
    import pyarrow.parquet as pq
    import ray.data

    from diffcxr.raycluster import map_with_actor_pool

    batch = cfg.eval.batch_size
    started = time.perf_counter()
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(64, len(items) // batch)))
    kwargs = {"bundle_uri": bundle_uri, "steps": steps, "guidance": guidance}
    ds = map_with_actor_pool(ds, GenerateActor, kwargs, cfg, batch)
    fs, path = storage.resolve(out_uri)
    storage.delete(out_uri)
    ds.write_parquet(path, filesystem=fs)
    seconds = time.perf_counter() - started
    rows = sorted(pq.read_table(path, filesystem=fs).to_pylist(), key=lambda r: r["key"])
    if len(rows) != len(items):
        raise RuntimeError(f"generation job returned {len(rows)} images for {len(items)} requests")
    images = np.stack([np.frombuffer(r["pixels"], np.uint8).reshape(r["size"], r["size"]) for r in rows])
    return Generated(
        [r["sample_id"] for r in rows], [r["repeat"] for r in rows], [r["seed"] for r in rows],
        [r["disease_sentence"] for r in rows], images, seconds,
    )  # fmt: skip


def latency(bundle_folder: Any, report: str, count: int, steps: int | None, guidance: float | None) -> dict[str, Any]:
    """Seconds per image, one image at a time in this process, after one warm-up image."""
    import torch

    from services.diffusion import Generator

    generator = Generator(bundle_folder)
    generator.generate([report], [0], steps, guidance)
    times = []
    for i in range(count):
        t0 = time.perf_counter()
        generator.generate([report], [i + 1], steps, guidance)
        times.append(time.perf_counter() - t0)
    return {
        "seconds_per_image": round(float(np.median(times)), 4),
        "seconds_min": round(min(times), 4),
        "images_timed": count,
        "threads": torch.get_num_threads(),
        "steps": steps or generator.sampling.steps,
        "guidance": generator.sampling.guidance if guidance is None else guidance,
    }
