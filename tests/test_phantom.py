"""Phantom renderer: deterministic, faithful to side and severity, robust to bad labels, marked synthetic."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcxr import manifest, storage
from diffcxr.config import load_config
from diffcxr.constants import EVAL_DISEASES
from diffcxr.errors import ConfigError
from services.data.phantom.noise import NOISE_KINDS
from services.data.phantom.render import BILATERAL, encode_png, render

LATERAL = [d for d in EVAL_DISEASES if d not in BILATERAL]


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def test_same_inputs_same_pixels_and_seeds_differ() -> None:
    labels = {"Pleural Effusion": 1, "Cardiomegaly": 1}
    a, spec_a = render(labels, None, seed=5, size=128)
    b, spec_b = render(labels, None, seed=5, size=128)
    c, _ = render(labels, None, seed=6, size=128)
    assert np.array_equal(a, b) and spec_a.as_dict() == spec_b.as_dict()
    assert _diff(a, c).mean() > 1.0


@pytest.mark.parametrize("size", [64, 128, 256])
def test_supported_sizes(size: int) -> None:
    image, spec = render({}, None, seed=1, size=size)
    assert image.shape == (size, size) and image.dtype == np.uint8 and spec.size == size
    assert 20 < image.mean() < 200


def test_unsupported_size_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="phantom size 100 is not supported; choose one of 64, 128, 256"):
        render({}, None, seed=1, size=100)
    with pytest.raises(ConfigError, match="unknown noise kind 'smudge'"):
        render({}, None, seed=1, size=64, noise_kind="smudge")


def test_same_seed_is_the_same_patient_with_local_findings() -> None:
    normal, _ = render({}, None, seed=3, size=128)
    nodule, _ = render(
        {"Lung Lesion": 1}, {"Lung Lesion": {"laterality": "left", "severity": "small"}}, seed=3, size=128
    )
    changed = _diff(normal, nodule) > 12
    assert 0 < changed.mean() < 0.02  # only the nodule


@pytest.mark.parametrize("disease", LATERAL)
def test_laterality_follows_the_report_right_is_image_left(disease: str) -> None:
    normal, _ = render({}, None, seed=21, size=128)
    for side, image_half in (("right", slice(0, 64)), ("left", slice(64, 128))):
        image, spec = render({disease: 1}, {disease: {"laterality": side, "severity": "moderate"}}, seed=21, size=128)
        assert spec.findings[disease] == {"laterality": side, "severity": "moderate"}
        diff = _diff(image, normal).astype(float)
        other = slice(64, 128) if image_half.start == 0 else slice(0, 64)
        assert diff[:, image_half].sum() > 2 * diff[:, other].sum(), (disease, side)


@pytest.mark.parametrize(
    "disease",
    [
        "Pleural Effusion",
        "Pneumothorax",
        "Lung Lesion",
        "Edema",
        "Consolidation",
        "Lung Opacity",
        "Enlarged Cardiomediastinum",
    ],
)
def test_severity_scales_the_finding(disease: str) -> None:
    normal, _ = render({}, None, seed=8, size=128)
    changed = []
    for severity in ("small", "large") if disease not in BILATERAL else ("mild", "severe"):
        image, _ = render({disease: 1}, {disease: {"laterality": "right", "severity": severity}}, seed=8, size=128)
        changed.append(_diff(image, normal).sum())
    assert changed[1] > 1.3 * changed[0], disease


def test_cardiomegaly_means_a_cardiothoracic_ratio_above_half() -> None:
    for seed in range(5):
        _, normal = render({}, None, seed=seed, size=64)
        _, big = render({"Cardiomegaly": 1}, None, seed=seed, size=64)
        assert normal.anatomy["ctr"] < 0.5 < big.anatomy["ctr"]


def test_bad_labels_are_resolved_by_rule_not_by_exception() -> None:
    labels = {"No Finding": 1, "Edema": 1, "Effusion": 1, "Pneumothorax": -1}
    image, spec = render(labels, {"Edema": {"laterality": "left", "severity": "huge"}}, seed=2, size=64)
    assert set(spec.findings) == {"Edema"}  # uncertain not drawn, unknown ignored
    assert spec.findings["Edema"]["laterality"] == "bilateral"  # edema is always bilateral
    assert spec.findings["Edema"]["severity"] in ("mild", "moderate", "large")  # "huge" unknown → seeded default
    assert any("unknown observation" in n for n in spec.notes)
    assert any("No Finding contradicts" in n for n in spec.notes)
    normal, spec_normal = render({"No Finding": 1}, None, seed=2, size=64)
    assert spec_normal.findings == {} and spec_normal.notes == []


def test_all_eleven_diseases_are_drawn_and_change_the_image() -> None:
    normal, _ = render({}, None, seed=4, size=128)
    for disease in EVAL_DISEASES:
        image, spec = render({disease: 1}, None, seed=4, size=128)
        assert disease in spec.findings
        assert (_diff(image, normal) > 12).sum() > 5, disease


def test_noise_kinds_at_least_eight_each_visible_and_deterministic() -> None:
    assert len(NOISE_KINDS) >= 8
    clean, _ = render({}, None, seed=9, size=64)
    for kind in NOISE_KINDS:
        a, spec = render({}, None, seed=9, size=64, noise_kind=kind)
        b, _ = render({}, None, seed=9, size=64, noise_kind=kind)
        assert np.array_equal(a, b) and spec.noise_kind == kind
        diff = _diff(a, clean)
        assert diff.mean() > 8 or (diff > 60).mean() > 0.01, kind  # global change, or local marks (text)


def test_png_is_marked_synthetic() -> None:
    image, spec = render({"Edema": 1}, None, seed=1, size=64)
    png = Image.open(io.BytesIO(encode_png(image, spec)))
    assert png.text["diffcxr.synthetic"] == "true" and png.text["diffcxr.kind"] == "phantom"
    assert png.text["diffcxr.seed"] == "1" and np.array_equal(np.asarray(png), image)


# ----------------------------------------------------------------------------- dataset build
def _check_dataset(out: str, reports: int, seeds: int) -> None:
    table = manifest.read(storage.join(out, "manifest.parquet"))
    rows = table.to_pylist()
    assert len(rows) == reports * seeds  # every report accounted for, per seed
    kept = [r for r in rows if r["status"] == "kept"]
    assert kept and all(r["status"] == "filtered" and "empty report" in r["reason"] for r in rows if r not in kept)
    noisy = [r for r in kept if r["noise_kind"]]
    assert noisy and all(r["noise_kind"] in NOISE_KINDS for r in noisy)
    for row in kept[:10] + noisy[:3]:
        assert row["source"] == "phantom" and row["view"] == "PA" and row["label_source"] == "rules-v1"
        truth = json.loads(row["phantom"])
        assert truth["noise_kind"] == row["noise_kind"] and truth["size"] == 64
        png = Image.open(io.BytesIO(storage.read_bytes(row["image_uri"])))
        assert png.size == (64, 64) and png.text["diffcxr.synthetic"] == "true"
        positives = {d for d in EVAL_DISEASES if row[d] == 1}
        assert positives <= set(truth["findings"])


def test_build_command_writes_images_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "phantoms"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestration.cli",
            "data",
            "build",
            "--source",
            "iu",
            "--images",
            "phantom",
            "--size",
            "64",
            "--noise-rate",
            "0.3",
            "--max-reports",
            "40",
            "--seeds-per-report",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout)
    assert summary["reports_read"] == 40 and summary["labels"]["phantoms_failed"] == 0
    _check_dataset(str(out), 40, 2)


@pytest.mark.s3
def test_build_to_s3(s3_bucket: str) -> None:
    from services.data.phantom.dataset import build_phantom_dataset

    cfg = load_config("tiny", ["data.max_reports=12", "data.noise_rate=0.5", "data.image_size=64"])
    out = f"{s3_bucket}/phantoms"
    result = build_phantom_dataset(cfg, out, workers=2)
    manifest.write(result.table, storage.join(out, "manifest.parquet"))
    _check_dataset(out, 12, 1)


def test_size_flag_rejects_unsupported_sizes(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "data", "build", "--size", "100", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "data.image_size" in res.stderr and "64, 128 or 256" in res.stderr
