"""The denoiser and decoder's number format: chosen by rule at load time, used, and recorded in every image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcxr import precision
from diffcxr.config import load_config
from diffcxr.errors import ConfigError

REPORTS = ["Large right pleural effusion.", "Heart size normal."]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from services.diffusion.generator import build_initial_bundle

    return build_initial_bundle(load_config("tiny"), tmp_path_factory.mktemp("bundle") / "generator")


def test_auto_picks_bf16_only_where_native_and_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert precision.resolve_precision("fp32") == "fp32" and precision.resolve_precision("bf16") == "bf16"
    native = precision.native_bf16("cpu")
    for allowed in (False, True):
        monkeypatch.setattr(precision, "AUTO_BF16", allowed)
        want = "bf16" if allowed and native else "fp32"
        assert precision.resolve_precision("auto") == want and precision.resolve_precision(None) == want
    with pytest.raises(ConfigError, match="precision: must be one of auto, fp32, bf16, got 'fp16'"):
        precision.resolve_precision("fp16")


def test_generator_runs_in_the_chosen_format_and_every_png_says_which(bundle: Path) -> None:
    import torch

    from services.diffusion.generator import Generator

    fp32, bf16 = Generator(bundle, precision="fp32"), Generator(bundle, precision="bf16")
    assert next(bf16.denoiser.model.parameters()).dtype == torch.bfloat16
    assert next(fp32.denoiser.model.parameters()).dtype == torch.float32 and bf16.decoder.precision == "bf16"
    a, b = fp32.generate(REPORTS, [5, 6], 3), bf16.generate(REPORTS, [5, 6], 3)
    again = bf16.generate(REPORTS, [5, 6], 3)
    assert all(np.array_equal(x.pixels, y.pixels) for x, y in zip(b, again, strict=True))  # seeded per format
    diff = [np.abs(x.pixels.astype(int) - y.pixels.astype(int)) for x, y in zip(a, b, strict=True)]
    assert all(d.max() > 0 for d in diff), "bf16 ran the same arithmetic as fp32"
    assert all(d.mean() < 8 for d in diff), [d.mean() for d in diff]  # same image, rounded differently
    png = Image.open(io.BytesIO(b[0].png(bf16.provenance())))
    assert png.text["diffcxr.precision"] == "bf16" and png.text["diffcxr.threads"] == str(torch.get_num_threads())
    assert png.text["diffcxr.isa"] == torch.backends.cpu.get_cpu_capability()
    assert Image.open(io.BytesIO(a[0].png(fp32.provenance()))).text["diffcxr.precision"] == "fp32"


def test_dicom_comments_carry_the_runtime() -> None:
    import pydicom

    from diffcxr.contracts import outputs

    meta = {"seed": 1, "steps": 3, "guidance": 2.0, "disease_sentence": "There is edema.", "models": {},
            "runtime": {"precision": "bf16", "threads": 2, "isa": "AVX2"}}  # fmt: skip
    ds = pydicom.dcmread(io.BytesIO(outputs.encode(np.zeros((8, 8), np.float32), "dicom", 8, meta)))
    assert "isa=AVX2 precision=bf16 threads=2 " in ds.ImageComments and ds.ConversionType == "SYN"
