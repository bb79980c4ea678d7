"""The one reader of model references: a folder/URI, ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.

Text, diffusion, eval, register and serve all accept the same three spellings; one parser and one
resolver here means a reference that works in one place works in all, with the same error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from diffcxr import storage
from diffcxr.errors import DataError

if TYPE_CHECKING:  # MLflow loads only where a registry is used (the serving ingress parses refs without it)
    from diffcxr.tracking import Tracker

PREFIX = "models:/"


def is_registered(ref: str) -> bool:
    return ref.startswith(PREFIX)


def parse_model_ref(ref: str) -> tuple[str, str]:
    """``(name, alias_or_version)`` of a ``models:/`` reference; a DataError says the two accepted shapes."""
    body = ref[len(PREFIX) :]
    name, _, alias_or_version = body.partition("@" if "@" in body else "/")
    if not name or not alias_or_version:
        raise DataError(f"model reference '{ref}' must look like models:/NAME@ALIAS or models:/NAME/VERSION")
    return name, alias_or_version


def resolve_model_folder(
    ref: str, marker: str, kind: str, tracker: Tracker | None = None, local: bool = True
) -> str:
    """The folder holding ``marker`` (e.g. ``generator.json``) that ``ref`` names; ``kind`` names it in errors.

    A registered model is downloaded (its local folder is returned); a folder/URI is checked for ``marker`` and
    returned as a local copy (``local``) or as the URI itself (readers that stream from ``s3://``)."""
    if not is_registered(ref):
        if local:
            folder = storage.get_folder(ref)
            if not (folder / marker).is_file():
                raise DataError(f"'{ref}' is not a {kind} (no {marker})")
            return str(folder)
        if not storage.exists(storage.join(ref, marker)):
            raise DataError(f"'{ref}' is not a {kind} (no {marker})")
        return ref
    name, alias_or_version = parse_model_ref(ref)
    version: str | int = int(alias_or_version) if alias_or_version.isdigit() else alias_or_version
    if tracker is None:
        from diffcxr.tracking import Tracker

        tracker = Tracker()
    spec = next(tracker.download_bundle(name, version).rglob(marker), None)
    if spec is None:
        raise DataError(f"registered model '{ref}' holds no {marker}")
    return str(Path(spec).parent)
