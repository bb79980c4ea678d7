"""In-place roll-over when a registry alias moves: re-read ``models:/NAME@ALIAS`` every ``model_refresh_s``.

Re-deploying an unchanged config does nothing in Serve (it skips the build), so promoting a new version in
the registry would otherwise never reach a running app. New requests carry the new version and each
deployment loads it on first use; requests in flight finish on the old one, so nothing is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from services.serve.models import ModelVersion, resolve

log = logging.getLogger("ray.serve.diffcxr")


class AliasWatcher:
    """A daemon thread that calls ``on_move(new_version)`` when the alias points elsewhere."""

    def __init__(
        self, ref: str, tracking_uri: str | None, every_s: float, current: Callable[[], ModelVersion | None],
        on_move: Callable[[ModelVersion], None],
    ) -> None:  # fmt: skip
        self.ref, self.tracking_uri, self.every_s = ref, tracking_uri, every_s
        self._current, self._on_move = current, on_move
        self._thread: threading.Thread | None = None

    @staticmethod
    def wanted(ref: str, every_s: float) -> bool:
        """Only an alias can move, and 0 s turns watching off."""
        return every_s > 0 and ref.startswith("models:/") and "@" in ref

    def start(self) -> None:
        """Start once; later calls (every ``reconfigure``) do nothing."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="alias-watch", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while True:
            time.sleep(self.every_s)
            try:
                latest = resolve(self.ref, self.tracking_uri)
            except Exception as exc:  # registry unreachable: keep serving the pinned version
                log.warning("cannot re-read %s: %s", self.ref, exc)
                continue
            current = self._current()
            if latest != current:
                log.info("alias %s moved: %s -> %s", self.ref, current.label if current else None, latest.label)
                self._on_move(latest)
