"""CheXbert (Smit et al., 2020) from a local checkpoint, for users who have its weights.

Its licence limits commercial use and its weights cannot be fetched here, so it
is optional: nothing is downloaded, and the rule labeler stays the default.
Outputs are mapped to observation *names* through CheXbert's own head order.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from diffcxr import storage
from diffcxr.errors import ConfigError
from diffcxr.labeling.base import ReportLabels
from diffcxr.labeling.external import with_details

#: CheXbert's output heads, in its own order (not alphabetical): mapped to names, never used by position elsewhere.
CHEXBERT_ORDER: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)
#: CheXbert head classes → label values (heads 0-12: blank/positive/negative/uncertain; No Finding: blank/positive).
CHEXBERT_CLASSES: tuple[int | None, ...] = (None, 1, 0, -1)


class ChexbertModel(torch.nn.Module):
    """CheXbert's architecture: BERT, dropout, 13 four-class heads and a two-class No Finding head."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.bert = BertModel(config)
        self.dropout = torch.nn.Dropout(config.hidden_dropout_prob)
        size = config.hidden_size
        self.linear_heads = torch.nn.ModuleList([torch.nn.Linear(size, 4) for _ in range(13)])
        self.linear_heads.append(torch.nn.Linear(size, 2))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        cls = self.dropout(self.bert(input_ids, attention_mask=attention_mask).last_hidden_state[:, 0])
        return [head(cls) for head in self.linear_heads]


class ChexbertLabeler:
    """Labels reports with a CheXbert checkpoint.

    ``weights``: the released ``chexbert.pth`` (a dict with ``model_state_dict``,
    keys optionally prefixed ``module.``), as a local path or URI.
    ``tokenizer_dir``: a folder with the ``bert-base-uncased`` tokenizer files and,
    optionally, its ``config.json`` (without it, ``bert-base-uncased`` sizes are used).
    """

    name = "chexbert"

    def __init__(self, weights: str, tokenizer_dir: str, device: str = "cpu", batch_size: int = 32) -> None:
        folder = Path(tokenizer_dir)
        if not folder.is_dir():
            raise ConfigError(f"labeler.chexbert_tokenizer: '{tokenizer_dir}' is not a folder")
        config_file = folder / "config.json"
        config = BertConfig(**json.loads(config_file.read_text())) if config_file.is_file() else BertConfig()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = ChexbertModel(config)
        checkpoint = torch.load(_local_copy(weights), map_location="cpu", weights_only=True)
        state = checkpoint.get("model_state_dict", checkpoint)
        self.model.load_state_dict({key.removeprefix("module."): value for key, value in state.items()})
        self.model.eval().to(device)
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def label_reports(self, report_ids: Sequence[str | None], texts: Sequence[str | None]) -> list[ReportLabels | None]:
        out: list[ReportLabels | None] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [" ".join((t or "").split()) for t in texts[start : start + self.batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=512, return_tensors="pt")
            heads = self.model(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))
            classes = torch.stack([h.argmax(dim=1) for h in heads], dim=1).tolist()
            for text, row in zip(batch, classes, strict=True):
                labels = {name: CHEXBERT_CLASSES[c] for name, c in zip(CHEXBERT_ORDER, row, strict=True)}
                out.append(with_details(ReportLabels(labels), text))
        return out


def _local_copy(uri: str) -> str:
    """A local path for the checkpoint (remote URIs are copied to a temp file first)."""
    local = storage.local_path(uri)
    if local is not None:
        if not local.is_file():
            raise ConfigError(f"labeler.chexbert_weights: '{uri}' does not exist")
        return str(local)
    target = Path(tempfile.mkdtemp(prefix="chexbert-")) / "chexbert.pth"
    target.write_bytes(storage.read_bytes(uri))
    return str(target)
