"""The real TAEF2 weights load into our module and round-trip real radiographs and phantoms well."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffcxr.autoencoders.roundtrip import load_grayscale, psnr_round_trip
from diffcxr.autoencoders.taef2 import TAEF2
from diffcxr.errors import ConfigError
from services.data.phantom.learnability import random_findings
from services.data.phantom.render import render


@pytest.fixture(scope="module")
def taef2() -> TAEF2:
    return TAEF2.from_dir()


def test_real_radiographs_round_trip_above_33_db(taef2: TAEF2) -> None:
    images = load_grayscale(Path(__file__).resolve().parents[2] / "shared" / "data" / "real_cxr_samples", 256)
    assert len(images) == 2
    assert min(psnr_round_trip(taef2, images)) >= 33.0


def test_phantoms_round_trip_like_real_films(taef2: TAEF2) -> None:
    phantoms = np.stack([render(random_findings(s), None, seed=s, size=256)[0] for s in range(6)])
    assert np.mean(psnr_round_trip(taef2, phantoms)) >= 32.0


def test_latent_shape(taef2: TAEF2) -> None:
    import torch

    z = taef2.encode(torch.zeros(1, 3, 128, 128))
    assert tuple(z.shape) == (1, 32, 16, 16)


def test_missing_weights_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TAEF2 encoder weights not found"):
        TAEF2.from_dir(tmp_path)
