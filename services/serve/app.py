"""Build, start and describe the Serve application.

``build_app`` is the Serve application builder (``import_path:
services.serve.app:build_app`` with the :class:`ServeConfig` as
``args``): it pins the model version (an alias resolves to the version it
points at *now*) and hands it to every deployment in ``user_config``. Later
moves of the alias are picked up by the ingress's alias watcher without any
redeploy; ``serve deploy`` of an edited config makes Serve roll the replicas
(new ones up before old ones stop; no request failed under load in the test).

The deployments are composed with ``.bind()``: text, denoiser and decoder are
bound first and their handles handed to the ingress (``GeneratorIngress``,
a module-level class in ``ingress.py``). HTTP and gRPC both bind ``host``
(127.0.0.1 by default); gRPC needs the proxy hook of ``grpc_bind.py`` for it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import yaml
from ray import serve
from ray.serve import Application

from services.serve.config import DeploymentSettings, ServeConfig
from services.serve.deployments import DecoderDeployment, DenoiserDeployment, TextDeployment
from services.serve.grpc_bind import controller_env
from services.serve.ingress import GeneratorIngress
from services.serve.models import resolve
from services.serve.stubs import SERVICER_FUNCTION

log = logging.getLogger(__name__)
IMPORT_PATH = "services.serve.app:build_app"


def _options(name: str, d: DeploymentSettings, user_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "num_replicas": d.replicas,
        "ray_actor_options": {"num_cpus": d.num_cpus, "num_gpus": d.num_gpus},
        "max_ongoing_requests": max(d.max_ongoing_requests, d.max_batch_size),
        "graceful_shutdown_timeout_s": d.graceful_shutdown_timeout_s,
        "user_config": {
            **user_config,
            "max_batch_size": d.max_batch_size,
            "batch_wait_timeout_s": d.batch_wait_timeout_s,
        },
    }


def build_app(args: dict[str, Any] | ServeConfig | None = None) -> Application:
    """The generation graph for a config: text, denoiser and decoder deployments behind the ingress."""
    cfg = args if isinstance(args, ServeConfig) else ServeConfig.from_dict(args)
    model = resolve(cfg.model, cfg.tracking_uri)
    log.info("serving generator %s (from %s)", model.label, cfg.model)
    shared = {"model": dataclasses.asdict(model), "tracking_uri": cfg.tracking_uri, "model_cache": cfg.model_cache,
              "precision": cfg.precision}  # fmt: skip
    text = TextDeployment.options(**_options("text", cfg.text, shared)).bind(threads=cfg.text.threads)
    denoiser = DenoiserDeployment.options(**_options("denoiser", cfg.denoiser, shared)).bind(
        threads=cfg.denoiser.threads
    )
    decoder = DecoderDeployment.options(**_options("decoder", cfg.decoder, shared)).bind(threads=cfg.decoder.threads)
    return GeneratorIngress.options(**_options("ingress", cfg.ingress, shared)).bind(cfg, text, denoiser, decoder)


def _controller_options(cfg: ServeConfig) -> dict[str, Any] | None:
    """The Serve controller's environment that makes the gRPC proxies bind ``cfg.host`` (grpc_bind.py)."""
    env = controller_env(cfg.host, cfg.grpc_port)
    return {"runtime_env": {"env_vars": env}} if env else None


def start(cfg: ServeConfig) -> dict[str, str]:
    """Start Serve (HTTP + gRPC proxies) on the current Ray cluster and deploy the app; returns its URLs."""
    from ray.serve.config import HTTPOptions, gRPCOptions

    grpc = gRPCOptions(port=cfg.grpc_port, grpc_servicer_functions=[SERVICER_FUNCTION]) if cfg.grpc_port else None
    serve.start(
        http_options=HTTPOptions(host=cfg.host, port=cfg.http_port), grpc_options=grpc,
        controller_options=_controller_options(cfg),
    )  # fmt: skip
    serve.run(build_app(cfg), name=cfg.app_name, route_prefix="/", blocking=False)
    urls = {"http": f"http://{cfg.host}:{cfg.http_port}/", "docs": f"http://{cfg.host}:{cfg.http_port}/docs"}
    if cfg.grpc_port:
        urls["grpc"] = f"{cfg.host}:{cfg.grpc_port} (metadata application={cfg.app_name})"
    return urls


def deploy_config(cfg: ServeConfig, working_dir: str | None = None) -> str:
    """A ``serve deploy`` config file for this ServeConfig (the package must be installed on the cluster,
    or ``working_dir`` point at a ``local:///`` / remote URI of the source)."""
    app: dict[str, Any] = {
        "name": cfg.app_name,
        "route_prefix": "/",
        "import_path": IMPORT_PATH,
        "args": cfg.model_dump(mode="json"),
    }
    env = {k: v for k, v in os.environ.items() if k in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL")}
    runtime_env: dict[str, Any] = {}
    if working_dir:
        runtime_env["working_dir"] = working_dir
    if env:
        runtime_env["env_vars"] = env
    if runtime_env:
        app["runtime_env"] = runtime_env
    doc: dict[str, Any] = {
        "proxy_location": "EveryNode",
        "http_options": {"host": cfg.host, "port": cfg.http_port},
        "applications": [app],
    }
    if cfg.grpc_port:
        doc["grpc_options"] = {"port": cfg.grpc_port, "grpc_servicer_functions": [SERVICER_FUNCTION]}
    controller = _controller_options(cfg)
    if controller:
        doc["controller_options"] = controller
    return yaml.safe_dump(doc, sort_keys=False)
