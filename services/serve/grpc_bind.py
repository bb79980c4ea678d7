"""Bind Serve's gRPC proxy to the configured ``host`` (127.0.0.1 by default), as HTTP is.

Ray Serve 2.60's gRPC proxy has no host option: ``start_grpc_server`` always
binds ``[::]:<port>``, every interface, whatever HTTP's host says. A service
whose HTTP side is loopback-only by default must not expose its gRPC side to
the network, so the proxy is told to bind ``host`` instead:

- Serve calls the function named by ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``
  in each proxy process while the proxy starts, before its gRPC server binds;
  :func:`proxy_callback` is that function. It swaps Serve's ``add_grpc_address``
  for one that binds ``DIFFCXR_SERVE_GRPC_HOST`` and adds no HTTP middleware.
- The two variables reach the proxies as the Serve controller's
  ``runtime_env.env_vars`` (``controller_options``, which ``serve.start`` and
  ``serve deploy`` both honour when they create the controller; proxies inherit
  the controller's environment): :func:`controller_env`.
- A wildcard host (``0.0.0.0``, ``::``) needs none of this: Serve's own
  ``[::]`` is already every interface, so nothing is patched.

If a Ray upgrade removes the hook point, :func:`proxy_callback` raises and the
proxy fails to start: failing closed beats silently listening on every
interface. ``tests/test_serving.py`` checks the bound address of a real proxy.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("ray.serve")
CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
HOST_ENV = "DIFFCXR_SERVE_GRPC_HOST"
CALLBACK = f"{__name__}:proxy_callback"
WILDCARDS = ("0.0.0.0", "::", "[::]", "")


def controller_env(host: str, grpc_port: int | None) -> dict[str, str]:
    """Environment variables for the Serve controller (and so its proxies) that make gRPC bind ``host``;
    empty when gRPC is off or ``host`` is a wildcard."""
    if not grpc_port or host in WILDCARDS:
        return {}
    return {CALLBACK_ENV: CALLBACK, HOST_ENV: host}


def bind_address(address: str, host: str) -> str:
    """``[::]:9000`` → ``127.0.0.1:9000`` (an IPv6 host in brackets); other addresses unchanged."""
    wildcard, sep, port = address.rpartition(":")
    if not sep or wildcard not in ("[::]", "0.0.0.0"):
        return address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def proxy_callback() -> list[Any]:
    """Run by Serve in each proxy process at start (see the module docstring); returns no middlewares."""
    from ray.serve._private import default_impl

    host = os.environ.get(HOST_ENV, "127.0.0.1")
    original = getattr(default_impl, "add_grpc_address", None)
    if original is None:
        raise RuntimeError(
            f"diffcxr: cannot bind Serve's gRPC proxy to {host}: this Ray has no "
            "ray.serve._private.default_impl.add_grpc_address; set host: 0.0.0.0 or grpc_port: null"
        )
    if getattr(original, "_diffcxr_host", None) == host:
        return []

    def add_grpc_address(grpc_server: Any, server_address: str) -> None:
        address = bind_address(server_address, host)
        log.info("diffcxr: gRPC proxy binds %s (not %s)", address, server_address)
        original(grpc_server, address)

    add_grpc_address._diffcxr_host = host  # type: ignore[attr-defined]
    default_impl.add_grpc_address = add_grpc_address
    return []
