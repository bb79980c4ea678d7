"""Retrying a call whose replica was lost (killed, node gone): seeds make the retry give the same image, so
a replica failure costs latency, not a failed request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ray.exceptions import RayActorError
from ray.serve.exceptions import RayServeException, ReplicaUnavailableError

log = logging.getLogger("ray.serve.diffcxr")
RETRIES = 3
T = TypeVar("T")


def replica_lost(exc: BaseException | None) -> bool:
    """A replica (or the one whose output this call consumed) died: the call can be retried elsewhere."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, RayActorError | ReplicaUnavailableError):
            return True
        if isinstance(exc, RayServeException) and "actor died" in str(exc):
            return True  # "failed because an upstream actor died before finishing a dependent task"
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


async def retrying(call: Callable[[], Awaitable[T]], what: str) -> T:
    """``call()`` again (up to RETRIES times) when the replica serving it, or one it consumed, was lost. Any
    other error is raised at once: retrying a bad request or a bug would only repeat it."""
    for attempt in range(RETRIES):
        try:
            return await call()
        except Exception as exc:
            if not replica_lost(exc) or attempt == RETRIES - 1:
                raise
            log.warning("replica lost (%s); retrying %s", type(exc).__name__, what)
            await asyncio.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")
