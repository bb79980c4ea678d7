"""``diffcxr serve``: start the generation graph on Ray Serve, or print its deploy config."""

from __future__ import annotations

import argparse
import sys

from diffcxr.cliargs import Groups, command, print_json
from diffcxr.errors import DiffCXRError


def cmd_serve(args: argparse.Namespace) -> int:
    """serve the generator: HTTP API + web page, gRPC (Ray Serve; text → denoiser → decoder deployments)

    Starts Ray Serve on the current Ray cluster (RAY_ADDRESS / --address, else a local one) with the generation
    graph and blocks until Ctrl-C/SIGTERM. HTTP: POST /v1/generate, /v1/generate/stream, GET /v1/health, /v1/models,
    /docs, the web page at /. gRPC: diffcxr.v1.Generator/Generate (metadata application=<app_name>).
    --print-deploy-config writes the matching `serve deploy` file instead."""
    import signal
    import threading

    from services.serve.app import deploy_config, start
    from services.serve.config import ServeConfig

    cfg = ServeConfig.from_yaml(args.config) if args.config else ServeConfig()
    auth = cfg.auth.model_copy(update={"token_file": args.token_file}) if args.token_file else cfg.auth
    cfg = cfg.with_overrides(
        model=args.model, host=args.host, http_port=args.port, grpc_port=args.grpc_port, auth=auth.model_dump()
    )
    if args.print_deploy_config:
        print(deploy_config(cfg, args.working_dir), end="")
        return 0
    import ray

    from diffcxr.raycluster import init_ray

    init_ray(address=args.address)
    try:
        urls = start(cfg)
    except Exception as exc:
        from diffcxr.raytrain import root_cause

        raise DiffCXRError(f"serve: {root_cause(exc)}") from None
    print_json({"serving": cfg.model, "urls": urls})
    sys.stdout.flush()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    return 0


def add_commands(groups: Groups) -> None:
    """This service's subcommands on the root parser's ``groups``."""
    p = command(groups, "serve", cmd_serve)
    p.add_argument("--config", help="serve.yaml (a ServeConfig; see docs/SERVING.md); default: built-in defaults")
    p.add_argument("--port", type=int, help="HTTP port (default 8000)")
    p.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    p.add_argument("--model", help="override model: models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder")
    p.add_argument("--grpc-port", type=int, help="gRPC port (default 9000)")
    p.add_argument("--token-file", help="enable bearer-token auth with the token in this file")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else start a local one)")
    p.add_argument("--print-deploy-config", action="store_true", help="print the `serve deploy` config and exit")
    p.add_argument("--working-dir", help="runtime_env.working_dir for the deploy config (local:///abs or remote URI)")
