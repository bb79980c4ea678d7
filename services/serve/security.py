"""Bearer-token auth, per-client concurrency limits, body size limits and report-safe logging.

Report text is sensitive: logs carry its sha256 prefix and length only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from diffcxr.errors import ConfigError
from services.serve.config import AuthConfig


def report_fingerprint(report: str) -> str:
    """What the logs say about a report: ``sha256:<12 hex> len=<chars>``."""
    return f"sha256:{hashlib.sha256(report.encode()).hexdigest()[:12]} len={len(report)}"


class TokenCheck:
    """Constant-time bearer-token check; only the token's digest is kept in memory."""

    def __init__(self, auth: AuthConfig) -> None:
        token = None
        if auth.mode != "off":
            if auth.token_file:
                try:
                    token = Path(auth.token_file).read_text().strip()
                except OSError as exc:
                    raise ConfigError(f"auth.token_file: cannot read '{auth.token_file}': {exc.strerror}") from None
                if not token:
                    raise ConfigError(f"auth.token_file: '{auth.token_file}' is empty")
            else:
                token = os.environ.get(auth.token_env, "").strip() or None
            if auth.mode == "on" and token is None:
                raise ConfigError(f"auth.mode is 'on' but neither auth.token_file nor ${auth.token_env} holds a token")
        self._digest = hashlib.sha256(token.encode()).digest() if token else None

    @property
    def enabled(self) -> bool:
        return self._digest is not None

    def accepts(self, authorization: str | None) -> bool:
        """``authorization``: the header value (``Bearer <token>``)."""
        if self._digest is None:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        candidate = hashlib.sha256(given.strip().encode()).digest()
        return hmac.compare_digest(candidate, self._digest) and scheme.lower() == "bearer"

    def client_key(self, authorization: str | None, address: str | None) -> str:
        """Who a request counts against: the token's digest when auth is on, else the client address."""
        if self._digest is not None and authorization:
            return "token:" + hashlib.sha256(authorization.encode()).hexdigest()[:16]
        return f"addr:{address or 'unknown'}"


class ClientLimiter:
    """At most ``limit`` in-flight requests per client key (per ingress replica)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._inflight: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> bool:
        with self._lock:
            n = self._inflight.get(key, 0)
            if n >= self.limit:
                return False
            self._inflight[key] = n + 1
            return True

    def release(self, key: str) -> None:
        with self._lock:
            n = self._inflight.get(key, 1) - 1
            if n <= 0:
                self._inflight.pop(key, None)
            else:
                self._inflight[key] = n


ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: bodies over ``max_bytes`` get 413 (by Content-Length, or while streaming in)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _too_large(send, self.max_bytes)
            return
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(send, self.max_bytes)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Any, limit: int) -> None:
    body = json.dumps(
        {"error": {"status": 413, "field": "body", "message": f"request body larger than {limit} bytes"}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
