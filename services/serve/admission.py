"""Who may generate and how much at once: bearer-token auth and per-client in-flight limits, shared by HTTP and
gRPC, plus the one log line per request (report fingerprint only: report text is sensitive)."""

from __future__ import annotations

import logging
import time
from typing import Any

from services.serve.config import ServeConfig
from services.serve.errors import ApiError
from services.serve.security import ClientLimiter, TokenCheck, report_fingerprint

log = logging.getLogger("ray.serve.diffcxr")


class Admission:
    """Token check + per-client limiter of one ingress replica."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.tokens = TokenCheck(cfg.auth)
        self.limiter = ClientLimiter(cfg.limits.max_concurrent_per_client)

    def authorize(self, authorization: str | None) -> None:
        """401 unless the token is right (or auth is off)."""
        if not self.tokens.accepts(authorization):
            raise ApiError(401, "authorization", "missing or wrong bearer token")

    def admit(self, authorization: str | None, address: str | None) -> str:
        """Authorize and take one in-flight slot of this client (429 when full); returns the key to release."""
        self.authorize(authorization)
        key = self.tokens.client_key(authorization, address)
        if not self.limiter.acquire(key):
            raise ApiError(429, None, f"more than {self.limiter.limit} concurrent requests from this client")
        return key

    def release(self, key: str) -> None:
        self.limiter.release(key)


def log_request(request_id: str, req: Any, status: int, start: float, via: str) -> None:
    """One INFO line per request: fields, status and time, and the report as ``sha256:<12 hex> len=<n>``."""
    log.info(
        "request %s via %s report=%s images=%d steps=%s guidance=%s format=%s status=%d ms=%.0f",
        request_id, via, report_fingerprint(req.report) if req is not None else "-",
        getattr(req, "num_images", 0), getattr(req, "steps", None), getattr(req, "guidance", None),
        getattr(req, "format", None), status, (time.perf_counter() - start) * 1000,
    )  # fmt: skip
