"""The ingress deployment: HTTP (FastAPI, OpenAPI), gRPC and the web page, in front of the model graph.

Per request: validate (limits from the config) → text deployment (labels,
disease sentence, contexts) → for each image, denoiser → decoder → files
marked synthetic (:mod:`services.serve.generation`). The request carries the
:class:`ModelVersion` pinned when the app was built (or the one the registry
alias moved to since: :mod:`services.serve.alias_watch`), so one image never
mixes parts of two versions. A replica lost mid-request is retried on another
(:mod:`services.serve.retries`).

The class is small on purpose: the routes live in :mod:`services.serve.http_routes`
(the FastAPI app is built per replica through Serve's ``__serve_build_asgi_app__``,
because its request schema carries the config's limits), the rpc in
:mod:`services.serve.grpc_servicer`, auth and limits in :mod:`services.serve.admission`.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError
from ray import serve

from services.serve.admission import Admission
from services.serve.alias_watch import AliasWatcher
from services.serve.api import describe, request_model
from services.serve.config import ServeConfig
from services.serve.errors import ApiError
from services.serve.generation import Graph
from services.serve.models import ModelVersion


@serve.deployment
@serve.ingress()
class GeneratorIngress:
    """HTTP + gRPC front of the generation graph (``.bind(cfg, text, denoiser, decoder)``)."""

    def __init__(self, cfg: ServeConfig, text: Any, denoiser: Any, decoder: Any) -> None:
        self.cfg = cfg
        self.graph = Graph(cfg, text, denoiser, decoder)
        self.admission = Admission(cfg)
        self.request_model = request_model(cfg)
        self.model: ModelVersion | None = None
        self._watcher = AliasWatcher(cfg.model, cfg.tracking_uri, cfg.model_refresh_s, lambda: self.model,
                                     self._moved)  # fmt: skip

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve's late-bound ingress app: the routes of :mod:`services.serve.http_routes` for this replica."""
        from services.serve.http_routes import build_http_app

        return build_http_app(self)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """The version pinned by ``build_app``; start watching the alias (once) when the model is one."""
        self.model = ModelVersion(**config["model"])
        if AliasWatcher.wanted(self.cfg.model, self.cfg.model_refresh_s):
            self._watcher.start()

    def _moved(self, latest: ModelVersion) -> None:
        self.model = latest

    def validate(self, data: dict[str, Any]) -> Any:
        """``data`` as this config's request model; 422 naming the field otherwise."""
        try:
            return self.request_model(**data)
        except ValidationError as exc:
            field, text, details = describe(exc)
            raise ApiError(422, field, text, details) from None

    async def generate_once(self, req: Any, request_id: str) -> dict[str, Any]:
        """A validated request on the version served now; the full response (image bytes under ``bytes``)."""
        return await self.graph.generate_once(req, self.model, request_id)

    async def generate_dict(self, data: dict[str, Any]) -> dict[str, Any]:
        """Direct handle call (``serve.get_app_handle(app).generate_dict.remote({...})``): same fields and
        checks as POST /v1/generate; images as raw bytes under ``bytes``. Invalid fields raise ApiError."""
        return await self.generate_once(self.validate(data), uuid.uuid4().hex)

    async def Generate(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 - the rpc's name
        """diffcxr.v1.Generator/Generate: same fields and checks as POST /v1/generate."""
        from services.serve.grpc_servicer import generate

        return await generate(self, request, grpc_context)
