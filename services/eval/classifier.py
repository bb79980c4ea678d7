"""The reference classifier that scores images: per-disease probabilities and penultimate features.

Two kinds, one interface (:class:`ReferenceClassifier`):

* ``xrv-densenet121-res224-all`` — torchxrayvision's DenseNet-121 the paper
  uses (18 outputs; input 1×224×224 scaled to [−1024, 1024]; "Effusion" is
  Pleural Effusion). Its weights come from ``eval.classifier_weights`` (the
  file or its folder), torchxrayvision's cache, or — only with
  ``eval.allow_download`` — its release URL; whatever the source, the file
  must match the pinned sha256.
* ``own-densenet121`` — torchvision's DenseNet-121 with a 1-channel stem and
  11 outputs, trained on the real train images of the dataset at hand
  (:mod:`services.eval.classifier_train`). Needed where the xrv weights
  cannot be obtained, and the only honest choice for phantoms.

Every number the eval service writes carries :attr:`ReferenceClassifier.id`,
so a table always says which classifier produced it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffcxr.constants import EVAL_DISEASES
from diffcxr.errors import ConfigError, DataError
from diffcxr.hashing import sha256_file

XRV_WEIGHTS = "densenet121-res224-all"
XRV_FILE = "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
#: sha256 and size of the release file (28,382,008 bytes), as published for torchxrayvision's v1 release.
XRV_SHA256 = "56524913dd16a906422e8d8b66a7a5c46be1d82eb7ac012d8103776f1aa68899"
#: torchxrayvision's output names that differ from ours.
XRV_NAMES = {"Pleural Effusion": "Effusion"}
OWN_KIND = "own-densenet121"
OWN_FILE = "classifier.pt"
OWN_SPEC = "classifier.json"


def own_densenet(classes: int = len(EVAL_DISEASES)) -> nn.Module:
    """torchvision's DenseNet-121 with a 1-channel stem (radiographs are grayscale), channels-last: oneDNN's
    convolutions ran a training step 1.3x and scoring 1.4x faster so (64 px, 2-core AVX2 host)."""
    from torchvision.models import densenet121

    net = densenet121(weights=None, num_classes=classes)
    net.features.conv0 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net.to(memory_format=torch.channels_last)


def own_preprocess(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, H, W) → float (N, 1, size, size), centred like the training inputs, channels-last."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div(255.0).unsqueeze(1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return ((x - 0.5) / 0.25).contiguous(memory_format=torch.channels_last)


class ReferenceClassifier:
    """Scores grayscale uint8 images: ``predict`` → (N, 11) probabilities in ``EVAL_DISEASES`` order,
    ``features`` → (N, D) penultimate activations (the domain-FID space)."""

    def __init__(self, net: nn.Module, ident: dict[str, Any], batch_size: int = 64) -> None:
        self.net = net.eval()
        self.id = ident
        self.batch_size = batch_size

    def _inputs(self, images: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities (B, 11), features (B, D))."""
        raise NotImplementedError

    @torch.no_grad()
    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, features) for uint8 (N, H, W) images, in batches (one image's result does not
        depend on its batch: batch norm is in eval mode)."""
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(f"images: expected uint8 (N, H, W), got {images.dtype} {images.shape}")
        probs, feats = [], []
        for start in range(0, len(images), self.batch_size):
            p, f = self._forward(self._inputs(images[start : start + self.batch_size]))
            probs.append(p.float().numpy())
            feats.append(f.float().numpy())
        if not probs:
            return np.zeros((0, len(EVAL_DISEASES)), np.float32), np.zeros((0, 0), np.float32)
        return np.concatenate(probs), np.concatenate(feats).astype(np.float64)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)[0]


class OwnDenseNet(ReferenceClassifier):
    def __init__(self, net: nn.Module, ident: dict[str, Any], image_size: int) -> None:
        super().__init__(net, ident)
        self.image_size = image_size

    def _inputs(self, images: np.ndarray) -> torch.Tensor:
        return own_preprocess(images, self.image_size)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = F.adaptive_avg_pool2d(F.relu(self.net.features(x)), 1).flatten(1)
        return torch.sigmoid(self.net.classifier(f)), f

    @classmethod
    def load(cls, folder: str | Path) -> OwnDenseNet:
        folder = Path(folder)
        spec_path = folder / OWN_SPEC
        if not spec_path.is_file():
            raise DataError(f"'{folder}' is not a trained classifier folder (no {OWN_SPEC})")
        spec = json.loads(spec_path.read_text())
        if spec.get("classes") != list(EVAL_DISEASES):
            raise DataError(f"classifier '{folder}' predicts {spec.get('classes')}, not the 11 evaluated diseases")
        net = own_densenet()
        net.load_state_dict(torch.load(folder / OWN_FILE, map_location="cpu", weights_only=True))
        ident = {"kind": OWN_KIND, "weights_sha256": spec["weights_sha256"], "train_data": spec.get("train_data"),
                 "trained_steps": spec.get("trained_steps"), "image_size": spec["image_size"]}  # fmt: skip
        return cls(net, ident, spec["image_size"])


class XRVDenseNet(ReferenceClassifier):
    """torchxrayvision's DenseNet: outputs picked by name, images resized to 224 and scaled to ±1024."""

    def __init__(self, net: nn.Module, ident: dict[str, Any]) -> None:
        super().__init__(net, ident)
        names = list(net.pathologies)
        missing = [d for d in EVAL_DISEASES if XRV_NAMES.get(d, d) not in names]
        if missing:
            raise DataError(f"xrv model has no output for {missing} (outputs: {names})")
        self.index = [names.index(XRV_NAMES.get(d, d)) for d in EVAL_DISEASES]

    def _inputs(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).float().unsqueeze(1)
        x = (2.0 * x / 255.0 - 1.0) * 1024.0  # torchxrayvision.datasets.normalize(img, 255)
        if x.shape[-1] != 224 or x.shape[-2] != 224:
            x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
        return x

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = F.adaptive_avg_pool2d(F.relu(self.net.features(x)), 1).flatten(1)
        return torch.sigmoid(self.net.classifier(f))[:, self.index], f


def find_xrv_weights(eval_cfg: Any) -> Path:
    """The verified local release file: configured path → torchxrayvision cache → opt-in download."""
    import torchxrayvision as xrv

    given = eval_cfg.classifier_weights
    candidates = []
    if given:
        path = Path(given).expanduser()
        candidates.append(path / XRV_FILE if path.is_dir() else path)
    cache = Path(xrv.utils.get_cache_dir()).expanduser() / XRV_FILE
    candidates.append(cache)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None and eval_cfg.allow_download:
        found = Path(xrv.models.get_weights(XRV_WEIGHTS))
    if found is None:
        raise ConfigError(
            f"eval.classifier: no '{XRV_FILE}' at {', '.join(map(str, candidates))}; set eval.classifier_weights to "
            f"the file, or eval.allow_download=true (sha256 {XRV_SHA256[:12]}…), or eval.classifier=own-densenet121"
        )
    digest = sha256_file(found)
    if digest != XRV_SHA256:
        raise ConfigError(
            f"eval.classifier_weights: '{found}' has sha256 {digest}, not the pinned {XRV_SHA256} of {XRV_WEIGHTS}"
        )
    return found


def load_xrv(eval_cfg: Any) -> XRVDenseNet:
    """torchxrayvision's DenseNet with the verified release weights (loaded here, whatever the file's name,
    so torchxrayvision never reaches for the network)."""
    import torchxrayvision as xrv

    path = find_xrv_weights(eval_cfg)
    saved = torch.load(path, map_location="cpu", weights_only=False)  # the release file is a pickled module
    for module in saved.modules() if hasattr(saved, "modules") else ():
        if not hasattr(module, "_non_persistent_buffers_set"):  # pickled by an old torch (pytorch#42242)
            module._non_persistent_buffers_set = set()
    labels = xrv.models.model_urls[XRV_WEIGHTS]["labels"]
    net = xrv.models.DenseNet(num_classes=len(labels))
    net.load_state_dict(saved.state_dict() if hasattr(saved, "state_dict") else saved)
    net.pathologies = labels
    return XRVDenseNet(net, {"kind": f"xrv-{XRV_WEIGHTS}", "weights_sha256": XRV_SHA256, "file": path.name})


def load_classifier(eval_cfg: Any, own_folder: str | Path | None = None) -> ReferenceClassifier:
    """The configured reference classifier (``own_folder``: the trained own classifier, if that kind)."""
    if eval_cfg.classifier != OWN_KIND:
        return load_xrv(eval_cfg)
    folder = own_folder or eval_cfg.classifier_weights
    if folder is None:
        raise ConfigError("eval.classifier_weights: own-densenet121 needs a trained classifier folder")
    return OwnDenseNet.load(folder)
