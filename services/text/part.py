"""The text part of a generator bundle: what a report becomes before the denoiser sees it.

The in-process generator and the Serve graph's text deployment both run this class, so an image's
contexts are the same whichever way it was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffcxr.bundle import read_bundle_spec
from diffcxr.errors import DataError
from diffcxr.labeling.sentences import NO_FINDING_SENTENCE, disease_sentence


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
        from services.text.model import ReportEncoder  # torch-heavy: only when a part is built

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
