"""The generator bundle's contract: one folder holding ``generator.json`` and a sub-folder per part.

The diffusion stage writes bundles; the text, denoiser and decoder parts, the Serve graph, eval and the
registry read them. The reading rules live here, in the core, so that no reader imports the writer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffcxr.errors import DataError

if TYPE_CHECKING:
    from diffcxr.tracking import Tracker

SPEC_FILE = "generator.json"


def read_bundle_spec(folder: str | Path) -> dict[str, Any]:
    """``generator.json`` of a bundle folder, or a clear error when the folder is not one."""
    path = Path(folder, SPEC_FILE)
    if not path.is_file():
        raise DataError(f"'{folder}' is not a generator bundle (no {SPEC_FILE})")
    return json.loads(path.read_text())


def resolve_bundle(ref: str, tracker: Tracker | None = None) -> Path:
    """A local generator folder from a folder/URI or ``models:/diffcxr-generator@alias`` (or ``/VERSION``)."""
    from diffcxr.modelrefs import resolve_model_folder

    return Path(resolve_model_folder(ref, SPEC_FILE, "generator bundle", tracker))


def provenance(spec: dict[str, Any]) -> dict[str, Any]:
    """Short weight hashes and registry versions of every part: what an image records about its models."""
    return {
        "text": (spec["text"]["weights_sha256"] or "")[:12],
        "uvit": spec["uvit"]["weights_sha256"][:12],
        "adapter": spec["adapter"]["weights_sha256"][:12] if spec.get("adapter") else None,
        "autoencoder": spec["autoencoder"]["id"],
        "registry": spec.get("registry", {}),
    }
