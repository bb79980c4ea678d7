"""Stage bookkeeping shared by every service: how a stage is called, output locations and the skip marker.

Every stage has the same entry point, ``services.<stage>.stage.run(cfg, call)``: a :class:`StageCall` says who
tracks it, which URIs it reads (``inputs``, by name; a stage run alone reads its run folder's defaults), where
it writes and whether to ignore its marker. ``orchestration/full_pipeline.py`` wires one stage's outputs to
the next one's inputs.

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
from diffcxr.errors import DataError, StorageError

MARKER = "_stage.json"


def content_key(*parts: Any) -> str:
    """Stable short hash of JSON-able parts (config sections, upstream keys, input ids)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_marker(folder: str) -> dict[str, Any] | None:
    """The marker of the stage whose output folder is ``folder`` (its outputs, key and summary), or None when
    that stage has not completed there."""
    try:
        return json.loads(storage.read_text(storage.join(folder, MARKER)))
    except (StorageError, json.JSONDecodeError):
        return None


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
        return read_marker(self.uri)

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


@dataclass(frozen=True)
class StageCall:
    """How a stage is asked to run; the same shape for every stage."""

    tracker: Any = None  # a diffcxr.tracking.Tracker, or None for an untracked run
    inputs: Mapping[str, str] | None = None  # input name → URI; missing names default to the run folder's
    out_uri: str | None = None  # write here instead of <run_root>/<stage>/, without the skip marker
    force: bool = False  # run even when the marker says the stage is current

    def paths(self, defaults: Mapping[str, str]) -> dict[str, str]:
        """The stage's input URIs: ``defaults`` (the run folder's), overridden by those given; an input the stage
        does not read is refused by name rather than ignored."""
        unknown = sorted(set(self.inputs or {}) - set(defaults))
        if unknown:
            raise DataError(f"inputs: {unknown} are not read by this stage; it reads {sorted(defaults) or 'none'}")
        return {**defaults, **(self.inputs or {})}

    def folder(self, run_root: str, stage: str) -> tuple[StageDir | None, str]:
        """(the stage's bookkeeping folder, or None when writing to ``out_uri``; the URI its outputs go under)."""
        if self.out_uri is not None:
            return None, self.out_uri
        stage_dir = StageDir(run_root, stage)
        return stage_dir, stage_dir.uri

    def reuse(self, stage_dir: StageDir | None, key: str) -> dict[str, Any] | None:
        """The recorded result when the stage is current for ``key`` and not forced, else None."""
        return stage_dir.reuse(key) if stage_dir is not None and not self.force else None


#: A plain call: untracked, run-folder inputs and outputs, skipped when current.
DEFAULT_CALL = StageCall()

