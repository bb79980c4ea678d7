"""The three parts of a generator bundle, each loadable alone.

The in-process :class:`~services.diffusion.generator.Generator` and the Ray
Serve deployments (one per part, each on its own replicas) run the same code
here, so an image is byte-identical whichever way it was asked for.

- :class:`TextPart` — rules labeler → disease sentence → text encoder + squeeze.
- :class:`DenoiserPart` — U-ViT (+ adapter) and the seeded sampling loop.
- :class:`DecoderPart` — the frozen autoencoder's decoder → grayscale pixels.

Batch invariance: the sampler draws each image's noise from its own seeded
generator, and on CPU the U-ViT's kernels give bit-identical rows whatever
the batch size (tested). oneDNN's convolutions do *not* (their algorithm
depends on the batch), so the decoder runs one image at a time: a decoded
image never depends on which other requests shared its batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffcxr.config import AutoencoderConfig, SamplingConfig
from diffcxr.errors import DataError
from diffcxr.labeling.sentences import NO_FINDING_SENTENCE, disease_sentence
from services.diffusion.latents import LatentStats
from services.diffusion.sampling import sample_latents
from services.diffusion.weights import ADAPTER, UVIT, load_adapted, load_uvit

SPEC_FILE = "generator.json"


def read_bundle_spec(folder: str | Path) -> dict[str, Any]:
    """``generator.json`` of a bundle folder, or a clear error when the folder is not one."""
    path = Path(folder, SPEC_FILE)
    if not path.is_file():
        raise DataError(f"'{folder}' is not a generator bundle (no {SPEC_FILE})")
    return json.loads(path.read_text())


def provenance(spec: dict[str, Any]) -> dict[str, Any]:
    """Short weight hashes and registry versions of every part: what an image records about its models."""
    return {
        "text": (spec["text"]["weights_sha256"] or "")[:12],
        "uvit": spec["uvit"]["weights_sha256"][:12],
        "adapter": spec["adapter"]["weights_sha256"][:12] if spec.get("adapter") else None,
        "autoencoder": spec["autoencoder"]["id"],
        "registry": spec.get("registry", {}),
    }


@dataclass
class TextResult:
    """What the text part says about one report: its labels, disease sentence and contexts."""

    labels: dict[str, float | None]
    disease_sentence: str
    context: np.ndarray  # (K, d) float32, rounded through float16 like the training embeddings
    hint: np.ndarray | None  # (K, d) context of the disease sentence; None without an adapter
    unconditional: bool  # the report was empty: the image is drawn from the unconditional model


class TextPart:
    """Labels a report, builds its disease sentence and encodes both into squeezed contexts."""

    def __init__(self, folder: str | Path) -> None:
        from diffcxr.labeling.rules import RuleLabeler
        from services.text.model import ReportEncoder

        self.folder = Path(folder)
        self.spec = read_bundle_spec(folder)
        self.encoder = ReportEncoder.load_bundle(self.folder / "text").eval()
        self.tokenizer = self.encoder.tokenizer()
        self.labeler = RuleLabeler()
        self.has_adapter = bool(self.spec.get("adapter"))
        self.uncond = self.contexts([""])[0]

    @torch.no_grad()
    def contexts(self, texts: list[str]) -> torch.Tensor:
        """Squeezed contexts (B, K, d), rounded through float16 exactly as the training embeddings were stored.
        An empty or whitespace-only text tokenises like "" and so gets the unconditional context. Each text is
        encoded as if alone, so its context does not depend on the batch it came in."""
        return self.encoder.encode(self.tokenizer(texts).ids, batch_invariant=True)[1].half().float()

    def labels_and_sentences(self, reports: list[str]) -> tuple[list[dict[str, float | None]], list[str]]:
        """Labels by name (rules labeler) and the disease sentence of each report."""
        results = self.labeler.label_reports([None] * len(reports), reports)
        policy = self.spec["labeler"]["uncertain_policy"]
        labels = [dict(r.labels) if r is not None else {} for r in results]
        sentences = [disease_sentence(r.labels, policy) if r is not None else NO_FINDING_SENTENCE for r in results]
        return labels, sentences

    def run(self, reports: list[str], overrides: list[str | None] | None = None) -> list[TextResult]:
        """One :class:`TextResult` per report; ``overrides`` replaces the labeler's sentence where given."""
        reports = [r if isinstance(r, str) else "" for r in reports]
        labels, sentences = self.labels_and_sentences(reports)
        if overrides is not None:
            if len(overrides) != len(reports):
                raise DataError(f"disease_sentence: {len(overrides)} sentences for {len(reports)} reports")
            pairs = zip(overrides, sentences, strict=True)
            sentences = [o if isinstance(o, str) and o.strip() else s for o, s in pairs]
        contexts = self.contexts(reports).numpy()
        hints = self.contexts(sentences).numpy() if self.has_adapter else [None] * len(reports)
        return [
            TextResult(lab, sent, ctx, hint, not self.tokenizer.normalise(rep))
            for lab, sent, ctx, hint, rep in zip(labels, sentences, contexts, hints, reports, strict=True)
        ]


class DenoiserPart:
    """The U-ViT (with the adapter when the bundle has one) and the seeded, guided sampler."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.spec = read_bundle_spec(folder)
        if self.spec.get("adapter"):
            self.model, _ = load_adapted(self.folder / UVIT, self.folder / ADAPTER)
        else:
            self.model, _ = load_uvit(self.folder / UVIT)
        self.model.eval()
        self.has_adapter = bool(self.spec.get("adapter"))
        self.sampling = SamplingConfig(**self.spec["sampling"])
        self.latent_shape = tuple(self.spec["autoencoder"]["latent_shape"])
        self.latent_stats = LatentStats.from_spec(self.spec.get("latent_stats"), self.latent_shape[0])

    @torch.no_grad()
    def sample(
        self,
        contexts: np.ndarray,
        hints: np.ndarray | None,
        uncond: np.ndarray,
        seeds: list[int],
        steps: int,
        guidance: float,
    ) -> np.ndarray:
        """Autoencoder latents (B, C, h, w) for contexts (B, K, d) — one image per seed, all with the same steps
        and guidance; the U-ViT's standardised latents are mapped back with the model's ``latent_stats``."""
        model = self.model

        def denoiser(x, t, c, h):  # noqa: ANN001, ANN202
            return model(x, t, c) if h is None else model(x, t, c, h)

        uncond_t = torch.as_tensor(uncond)
        latents = sample_latents(
            denoiser,
            self.spec["schedule"],
            torch.as_tensor(contexts),
            uncond_t,
            [int(s) for s in seeds],
            self.latent_shape,
            steps,
            guidance,
            hint=torch.as_tensor(hints) if self.has_adapter and hints is not None else None,
            uncond_hint=uncond_t,
            scheduler_kind=self.sampling.scheduler,
        )
        return self.latent_stats.denormalize(latents).numpy()


class DecoderPart:
    """The bundle's frozen autoencoder decoder: latents → grayscale images in [0, 1]."""

    def __init__(self, folder: str | Path) -> None:
        from diffcxr.autoencoders.frozen import load_autoencoder

        self.folder = Path(folder)
        self.spec = read_bundle_spec(folder)
        ae = self.spec["autoencoder"]
        self.autoencoder = load_autoencoder(
            AutoencoderConfig(
                kind=ae["kind"],
                weights=str(self.folder / "autoencoder"),
                latent_channels=ae["latent_channels"],
                downsample=ae["downsample"],
                scale_factor=ae["scale_factor"],
            )
        )

    @torch.no_grad()
    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(B, H, W) float32 grayscale in [0, 1]; one image per decoder call (batch-invariant, see module doc)."""
        out = [self.autoencoder.decode(torch.as_tensor(lat)[None]).mean(1).clamp(0, 1)[0] for lat in latents]
        return torch.stack(out).numpy()


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] floats → 8-bit gray levels (round half to even, as torch.round)."""
    return np.round(images * 255.0).astype(np.uint8)


def to_uint16(images: np.ndarray) -> np.ndarray:
    """[0, 1] floats → 16-bit gray levels."""
    return np.round(images.astype(np.float64) * 65535.0).astype(np.uint16)
