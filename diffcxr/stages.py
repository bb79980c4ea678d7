"""Stage bookkeeping shared by every service: output locations and the skip marker.

Each stage writes its outputs under ``<run_root>/<stage>/`` and, last, a
``_stage.json`` marker holding the content key of its inputs and config. A
stage whose marker matches the current key is skipped, so re-running the
pipeline after a crash resumes at the first stage that did not finish, and
editing one section of the config re-runs only the stages that read it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diffcxr import storage
from diffcxr.errors import StorageError

MARKER = "_stage.json"


def content_key(*parts: Any) -> str:
    """Stable short hash of JSON-able parts (config sections, upstream keys, input ids)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StageDir:
    """Where one stage of one run keeps its outputs."""

    run_root: str
    stage: str

    @property
    def uri(self) -> str:
        return storage.join(self.run_root, self.stage)

    def path(self, *parts: str) -> str:
        return storage.join(self.uri, *parts)

    def marker(self) -> dict[str, Any] | None:
        """The marker of the last completed run of this stage, or None."""
        try:
            return json.loads(storage.read_text(self.path(MARKER)))
        except (StorageError, json.JSONDecodeError):
            return None

    def is_current(self, key: str) -> bool:
        marker = self.marker()
        if not marker or marker.get("key") != key or not isinstance(marker.get("outputs"), dict):
            return False
        return all(storage.exists(uri) for uri in marker["outputs"].values())

    def reuse(self, key: str) -> dict[str, Any] | None:
        """A stage's "skipped" result (its recorded outputs and summary) when it is current for ``key``."""
        if not self.is_current(key):
            return None
        marker = self.marker() or {}
        return {"skipped": True, **marker.get("outputs", {}), "summary": marker.get("summary", {}), "key": key}

    def complete(self, key: str, outputs: Mapping[str, str], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write the marker (last, after every output exists)."""
        marker = {
            "stage": self.stage,
            "key": key,
            "outputs": dict(outputs),
            "finished_at": time.time(),
            **(extra or {}),
        }
        storage.write_text(self.path(MARKER), json.dumps(marker, indent=2, sort_keys=True))
        return marker
