"""Fréchet distances: the domain FID on the reference classifier's features, and Inception FID.

FID is the Fréchet distance between Gaussians fitted to two feature sets
(pytorch-fid's ``calculate_frechet_distance``). The paper reports it on
Inception-v3 pool features; those weights are a download
(``pt_inception-2015-12-05-6726825d.pth``), so they are used only when found
locally or when downloads are allowed, and must match torch hub's hash
prefix. The *domain* FID — the same distance on the reference classifier's
penultimate features — is always computed, with the real-train-vs-real-test
distance as its floor: a generator cannot be expected to beat the gap
between two real samples of the same size.

FID is biased upwards at small sample sizes; every value is written with the
sizes of both sets, and only values at equal sizes should be compared.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from diffcxr.errors import ConfigError, DataError
from diffcxr.hashing import sha256_file

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256_PREFIX = "6726825d"  # torch hub's convention: the file name carries its sha256 prefix


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two (N, D) feature sets (each needs at least 2 rows)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    if len(a) < 2 or len(b) < 2:
        raise DataError(f"FID needs at least 2 images per set, got {len(a)} and {len(b)}")
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with warnings.catch_warnings():  # fewer images than feature dimensions: singular covariances are expected
        warnings.simplefilter("ignore", category=Warning)
        value = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    return float(max(value, 0.0))


def find_inception_weights(eval_cfg: Any) -> Path | None:
    """The verified local Inception file, or None when absent and downloads are not allowed."""
    import torch

    given = eval_cfg.inception_weights
    candidates = []
    if given:
        path = Path(given).expanduser()
        candidates.append(path / INCEPTION_FILE if path.is_dir() else path)
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None and eval_cfg.allow_download:
        from pytorch_fid.inception import FID_WEIGHTS_URL

        torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL, progress=False, check_hash=True)
        found = candidates[-1]
    if found is None:
        if given:
            raise ConfigError(f"eval.inception_weights: no '{INCEPTION_FILE}' at '{given}'")
        return None
    if not sha256_file(found).startswith(INCEPTION_SHA256_PREFIX):
        raise ConfigError(
            f"eval.inception_weights: '{found}' does not match the pinned hash prefix {INCEPTION_SHA256_PREFIX}"
        )
    return found


class InceptionFeatures:
    """pytorch-fid's FID Inception-v3 (2048-d pool features) loaded from a verified local file."""

    def __init__(self, weights: Path) -> None:
        import shutil
        import tempfile

        import torch
        from pytorch_fid import inception as fid_inception

        previous = torch.hub.get_dir()
        # pytorch-fid reads the file through torch hub's cache: a temporary cache holding a link to the verified file
        hub = Path(tempfile.mkdtemp(prefix="diffcxr-hub-"))
        (hub / "checkpoints").mkdir()
        (hub / "checkpoints" / INCEPTION_FILE).symlink_to(weights.resolve())
        torch.hub.set_dir(str(hub))
        try:
            self.net = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
        finally:
            torch.hub.set_dir(previous)
            shutil.rmtree(hub, ignore_errors=True)

    def __call__(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(images[start : start + batch_size]).float().div(255.0)
                out.append(self.net(x[:, None].expand(-1, 3, -1, -1))[0].flatten(1).numpy())
        return np.concatenate(out).astype(np.float64)
