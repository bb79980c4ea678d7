"""Reports → fixed-length token ids, with truncation that is deterministic and visible.

A report longer than the context keeps its **beginning**: ``[CLS]`` + the first
``context_length - 2`` word pieces + ``[SEP]``. IU-Xray and MIMIC reports put the
findings first, and the head is what CLIP-style text towers were trained on.
Truncated rows are flagged (``truncated``, ``n_tokens``) so callers can count and
log them by sample id; the text itself is never logged. An empty or missing
report tokenizes to ``[CLS] [SEP]``: its encoding is the unconditional context.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from diffcxr.errors import ConfigError


@dataclass(frozen=True)
class TokenizedBatch:
    ids: torch.Tensor  # (B, context_length) int64, padded with pad_id
    n_tokens: list[int]  # tokens the report needed, special tokens included (before truncation)
    truncated: list[bool]


class ReportTokenizer:
    """The tokenizer that matches a text tower (loaded from the tower's own folder, offline)."""

    def __init__(self, folder: str | Path, context_length: int) -> None:
        from transformers import AutoTokenizer

        try:
            self.hf = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the tokenizer from '{folder}': {exc}") from None
        self.context_length = context_length
        self.cls_id, self.sep_id, self.pad_id = self.hf.cls_token_id, self.hf.sep_token_id, self.hf.pad_token_id
        if None in (self.cls_id, self.sep_id, self.pad_id):
            raise ConfigError(f"tokenizer in '{folder}' lacks [CLS]/[SEP]/[PAD] tokens")

    @staticmethod
    def normalise(text: str | None) -> str:
        """Collapse whitespace; None and whitespace-only become '' (the unconditional report)."""
        return " ".join((text or "").split())

    def __call__(self, texts: list[str | None]) -> TokenizedBatch:
        texts = [self.normalise(t) for t in texts]
        pieces = self.hf(texts, add_special_tokens=False)["input_ids"] if texts else []
        room = self.context_length - 2
        ids = torch.full((len(texts), self.context_length), self.pad_id, dtype=torch.long)
        n_tokens, truncated = [], []
        for row, toks in enumerate(pieces):
            kept = [self.cls_id, *toks[:room], self.sep_id]
            ids[row, : len(kept)] = torch.tensor(kept, dtype=torch.long)
            n_tokens.append(len(toks) + 2)
            truncated.append(len(toks) > room)
        return TokenizedBatch(ids, n_tokens, truncated)
