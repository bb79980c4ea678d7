"""Which generator bundle serves a request, and where its files are.

The application resolves ``model`` once when it is built (``models:/NAME@ALIAS``
→ a registry version), and every request carries that :class:`ModelVersion`
through the graph. Loading a version into a replica (and keeping the two most
recently used) is Ray Serve's model multiplexing (``@serve.multiplexed`` in
``deployments.py``, the version's :attr:`ModelVersion.label` as the model id),
so moving the alias switches versions without dropping a request and without
mixing parts of two versions in one image.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from diffcxr import storage
from diffcxr.bundle import SPEC_FILE
from diffcxr.errors import DataError
from diffcxr.hashing import sha256_file
from diffcxr.modelrefs import is_registered, parse_model_ref


@dataclass(frozen=True)
class ModelVersion:
    """A pinned generator bundle: a registry version, or a local/S3 folder identified by its spec's hash."""

    ref: str  # what the config asked for
    name: str  # registered model name, or "local"
    version: str  # registry version number, or the first 12 hex of generator.json's sha256
    location: str  # models:/NAME/VERSION or the folder URI

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


def resolve(ref: str, tracking_uri: str | None = None) -> ModelVersion:
    """Pin ``ref``: an alias becomes the version it points to now; a folder becomes its spec hash."""
    if is_registered(ref):
        from diffcxr.tracking import Tracker

        try:
            name, which = parse_model_ref(ref)
        except DataError as exc:
            raise DataError(f"model: {exc}") from None
        if which.isdigit():
            version = which
        else:
            found = Tracker(tracking_uri).alias_version(name, which)
            if found is None:
                raise DataError(f"model: '{ref}': no registered model '{name}' with alias '{which}'")
            version = str(found)
        return ModelVersion(ref, name, version, f"models:/{name}/{version}")
    folder = storage.get_folder(ref)
    if not (folder / SPEC_FILE).is_file():
        raise DataError(f"model: '{ref}' is not a generator bundle (no {SPEC_FILE})")
    return ModelVersion(ref, "local", sha256_file(folder / SPEC_FILE)[:12], str(folder))


_download_lock = threading.Lock()


def registry_key(tracking_uri: str | None) -> str:
    """A short, stable folder name for the registry a version comes from.

    ``NAME/VERSION`` alone is not unique: two MLflow servers can both hold
    ``diffcxr-generator/3`` with different weights, and a shared cache folder
    would then serve one server's weights for the other's version. The key is
    the first 12 hex of the sha256 of the tracking URI that resolves the
    download (the configured one, else ``MLFLOW_TRACKING_URI``, else
    MLflow's default), so it never spells out a URI that may carry credentials.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "default"
    return hashlib.sha256(uri.encode()).hexdigest()[:12]


def local_folder(model: ModelVersion, tracking_uri: str | None, cache: str | None) -> Path:
    """The bundle's folder on this node; a registry version is downloaded once per node into
    ``cache/<registry key>/NAME/VERSION`` (see :func:`registry_key`)."""
    if model.name == "local":
        return storage.get_folder(model.location)
    base = Path(cache or os.environ.get("DIFFCXR_MODEL_CACHE") or Path(tempfile.gettempdir(), "diffcxr-models"))
    root = base / registry_key(tracking_uri)
    target = root / model.name / model.version
    with _download_lock:
        spec = next(target.rglob(SPEC_FILE), None) if target.is_dir() else None
        if spec is None:
            from diffcxr.tracking import Tracker

            staging = root / model.name / f".{model.version}.{uuid.uuid4().hex[:8]}"
            Tracker(tracking_uri).download_bundle(model.name, int(model.version), dst=staging)
            try:
                staging.rename(target)  # atomic: another process sees all of it or nothing
            except OSError:  # another replica on this node finished first
                shutil.rmtree(staging, ignore_errors=True)
            spec = next(target.rglob(SPEC_FILE), None)
            if spec is None:
                raise DataError(f"model: '{model.location}' holds no {SPEC_FILE}")
    return spec.parent
