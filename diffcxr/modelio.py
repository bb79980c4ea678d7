"""How every trained network is kept on disk: ``<name>.json`` + ``<name>.safetensors``.

A small explicit equivalent of diffusers' ``ConfigMixin``/``ModelMixin`` persistence, shared by the U-ViT,
the adapter and the report encoder (towers + squeeze), so that each part rebuilds from its folder alone:

* ``<name>.json``: ``config`` (everything the constructor needs), the caller's ``meta`` at top level (what the
  rest of the pipeline reads without building the model), ``dtype``, ``weights_file``, ``weights_sha256`` and
  ``model_format``.
* ``<name>.safetensors``: the state dict. Unlike a pickle it runs no code when read and maps lazily; tensors
  that alias one storage (tied weights) are written once and listed in ``shared`` (safetensors refuses
  aliases, and none of our networks tie weights today: checked for the U-ViT, the adapter and both towers).

Loading verifies the sha256 (a truncated or swapped file fails naming itself) and returns the state for
:func:`check_state`, which compares every tensor with the freshly built model and names the first that
differs. Folders written before safetensors (``<name>.pt``, or another ``legacy`` file name) still load,
through ``torch.load(weights_only=True)`` and the same checks: registered models keep working.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from diffcxr.errors import DataError
from diffcxr.hashing import sha256_file

#: ``model_format`` of folders written by :func:`save`; folders without the key are the ``.pt`` era.
MODEL_FORMAT = 1
M = TypeVar("M", bound=nn.Module)


def _aliases(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """``{name: first name}`` for entries that are the same tensor (same storage, offset, shape and strides)."""
    seen: dict[tuple, str] = {}
    aliases = {}
    for key, t in state.items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if t.numel() and ident in seen:
            aliases[key] = seen[ident]
        else:
            seen.setdefault(ident, key)
    return aliases


def save(
    model: nn.Module, folder: str | Path, name: str, config: dict[str, Any], meta: dict[str, Any],
    legacy: str | None = None,
) -> Path:  # fmt: skip
    """Write ``<name>.safetensors`` then ``<name>.json`` into ``folder`` (created); returns the folder.
    A stale ``legacy`` weights file (default ``<name>.pt``) is removed so the folder holds one set of weights."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    shared = _aliases(state)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items() if k not in shared}
    weights = folder / f"{name}.safetensors"
    save_file(tensors, weights, metadata={"format": "pt"})
    (folder / (legacy or f"{name}.pt")).unlink(missing_ok=True)
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in tensors.values() if v.is_floating_point()})
    spec = {
        **meta,
        "config": config,
        "dtype": ",".join(dtypes) or "none",
        "weights_file": weights.name,
        "weights_sha256": sha256_file(weights),
        "model_format": MODEL_FORMAT,
        **({"shared": shared} if shared else {}),
    }
    (folder / f"{name}.json").write_text(json.dumps(spec, indent=2, sort_keys=True))
    return folder


def read_spec(folder: str | Path, name: str) -> dict[str, Any]:
    """``<name>.json`` of a model folder, or a DataError naming the folder."""
    path = Path(folder, f"{name}.json")
    if not path.is_file():
        raise DataError(f"'{folder}' is not a {name} model folder (no {name}.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"'{path}' is not valid JSON: {exc}") from None


def load_state(folder: str | Path, name: str, legacy: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict on the CPU, spec) of a model folder: ``<name>.safetensors``, else the ``.pt`` era's
    ``legacy`` file (default ``<name>.pt``); the file's sha256 must equal the spec's ``weights_sha256``."""
    folder = Path(folder)
    spec = read_spec(folder, name)
    if spec.get("model_format", MODEL_FORMAT) > MODEL_FORMAT:
        raise DataError(f"'{folder}': model_format {spec['model_format']} is newer than this diffcxr reads")
    new, old = folder / f"{name}.safetensors", folder / (legacy or f"{name}.pt")
    weights = new if new.is_file() else old
    if not weights.is_file():
        raise DataError(f"'{folder}' holds {name}.json but no weights ({new.name} or {old.name})")
    if spec.get("weights_sha256") and sha256_file(weights) != spec["weights_sha256"]:
        raise DataError(f"'{weights}': sha256 differs from {name}.json (corrupt or replaced file)")
    if weights is new:
        state = load_file(weights, device="cpu")
        state.update({alias: state[source] for alias, source in spec.get("shared", {}).items()})
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    return state, spec


def check_state(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> None:
    """Every key present on both sides with the same shape and dtype, or a DataError naming the tensor: a
    checkpoint that does not fit its config fails at load, never later as an obscure matmul error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise DataError(
            f"{source}: checkpoint does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for key, want in expected.items():  # in the module's order (safetensors returns names sorted)
        tensor = state[key]
        if tuple(tensor.shape) != tuple(want.shape):
            raise DataError(
                f"{source}: '{key}' has shape {tuple(tensor.shape)} in the checkpoint but the config builds "
                f"{tuple(want.shape)}"
            )
        if tensor.dtype != want.dtype:
            raise DataError(
                f"{source}: '{key}' has dtype {tensor.dtype} in the checkpoint but the model uses {want.dtype}"
            )


def fill(model: M, state: dict[str, torch.Tensor], source: str) -> M:
    """``model`` with ``state`` loaded after :func:`check_state`, in eval mode."""
    check_state(state, model, source)
    model.load_state_dict(state)
    return model.eval()
