"""Loading a pretrained open_clip checkpoint (e.g. BiomedCLIP's) into our encoder, verified.

Weights come from a local path or URI the user configured; a configured sha256
is checked before loading. Nothing is downloaded from a model hub: BiomedCLIP's
weights are not redistributable here, and a hub call would hang offline.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from diffcxr import storage
from diffcxr.errors import ConfigError

log = logging.getLogger(__name__)


def load_open_clip_weights(clip: Any, uri: str, sha256: str | None = None) -> None:
    """Load an open_clip state dict (``.bin``/``.pt``/``.safetensors``) into ``clip``; strict on names."""
    local = storage.local_path(uri)
    with tempfile.TemporaryDirectory() as tmp:
        if local is None:
            local = Path(tmp, Path(uri).name)
            local.write_bytes(storage.read_bytes(uri))
        if not local.is_file():
            raise ConfigError(f"text.encoder_weights: '{uri}' does not exist")
        if sha256:
            actual = hashlib.sha256(local.read_bytes()).hexdigest()
            if actual != sha256.lower():
                raise ConfigError(f"text.encoder_weights: sha256 {actual[:12]}… does not match {sha256[:12]}…")
        if local.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(local))
        else:
            state = torch.load(local, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = clip.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ConfigError(
            f"text.encoder_weights: '{uri}' does not fit the architecture "
            f"(missing {missing[:3]}…, unexpected {unexpected[:3]}…)"
        )
    log.info("loaded pretrained encoder weights from %s", uri)
