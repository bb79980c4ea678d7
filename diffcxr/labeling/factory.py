"""The labeler a config asks for."""

from __future__ import annotations

from diffcxr.config import LabelerConfig
from diffcxr.labeling.base import Labeler
from diffcxr.labeling.rules import RuleLabeler


def make_labeler(cfg: LabelerConfig) -> Labeler:
    if cfg.kind == "csv":
        from diffcxr.labeling.external import CsvLabeler

        return CsvLabeler(cfg.csv_uri or "", cfg.csv_id_column, cfg.csv_id_prefix)
    if cfg.kind == "chexbert":
        from diffcxr.labeling.chexbert import ChexbertLabeler

        return ChexbertLabeler(cfg.chexbert_weights or "", cfg.chexbert_tokenizer or "", batch_size=cfg.batch_size)
    return RuleLabeler()
