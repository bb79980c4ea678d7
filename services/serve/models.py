"""Which generator bundle serves a request, and where its files are.

The application resolves ``model`` once when it is built (``models:/NAME@ALIAS``
→ a registry version), and every request carries that :class:`ModelVersion`
through the graph. A replica that has not loaded that version yet loads it
(keeping the previous one too), so moving the alias and redeploying switches
versions without dropping a request and without mixing parts of two versions
in one image.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from diffcxr import storage
from diffcxr.bundle import SPEC_FILE
from diffcxr.errors import DataError
from diffcxr.hashing import sha256_file

log = logging.getLogger(__name__)
T = TypeVar("T")


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


def parse_registry_ref(ref: str) -> tuple[str, str]:
    body = ref[len("models:/") :]
    separator = "@" if "@" in body else "/"
    name, _, alias_or_version = body.partition(separator)
    if not name or not alias_or_version:
        raise DataError(f"model: '{ref}' must look like models:/NAME@ALIAS or models:/NAME/VERSION")
    return name, alias_or_version


def resolve(ref: str, tracking_uri: str | None = None) -> ModelVersion:
    """Pin ``ref``: an alias becomes the version it points to now; a folder becomes its spec hash."""
    if ref.startswith("models:/"):
        from diffcxr.tracking import Tracker

        name, which = parse_registry_ref(ref)
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


def local_folder(model: ModelVersion, tracking_uri: str | None, cache: str | None) -> Path:
    """The bundle's folder on this node; a registry version is downloaded once per node into ``cache``."""
    if model.name == "local":
        return storage.get_folder(model.location)
    root = Path(cache or os.environ.get("DIFFCXR_MODEL_CACHE") or Path(tempfile.gettempdir(), "diffcxr-models"))
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


class LoadedVersions(Generic[T]):
    """The parts a replica has loaded, by version label; keeps the ``keep`` most recently used."""

    def __init__(self, load: Callable[[Path], T], tracking_uri: str | None, cache: str | None, keep: int = 2) -> None:
        self._load = load
        self._tracking_uri = tracking_uri
        self._cache = cache
        self._keep = keep
        self._parts: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: ModelVersion) -> T:
        with self._lock:
            if model.label in self._parts:
                self._parts.move_to_end(model.label)
                return self._parts[model.label]
            log.info("loading generator %s", model.label)
            part = self._load(local_folder(model, self._tracking_uri, self._cache))
            self._parts[model.label] = part
            while len(self._parts) > self._keep:
                dropped, _ = self._parts.popitem(last=False)
                log.info("unloaded generator %s", dropped)
            return part

    def loaded(self) -> list[str]:
        """Loaded version labels, most recently used last."""
        return list(self._parts)
