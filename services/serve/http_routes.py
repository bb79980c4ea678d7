"""The HTTP side of the ingress: a FastAPI app (OpenAPI at /docs) with the generate, stream, health, models
and web-page routes.

Built per ingress replica by ``GeneratorIngress.__serve_build_asgi_app__`` (Serve's late-bound ingress app),
because the request schema carries this config's limits and the routes call this replica's graph. No
``from __future__ import annotations`` here: FastAPI reads the request model from the route's annotations.
"""

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from diffcxr.contracts import outputs
from services.serve.admission import log_request
from services.serve.api import GenerateResponse
from services.serve.errors import ERRORS, install_error_handlers
from services.serve.security import BodyLimit

if TYPE_CHECKING:
    from services.serve.ingress import GeneratorIngress

log = logging.getLogger("ray.serve.diffcxr")


def build_http_app(ingress: "GeneratorIngress") -> FastAPI:
    """The FastAPI app of one ingress replica: body limit, CORS (only when origins are configured), error
    handlers and routes."""
    cfg = ingress.cfg
    app = FastAPI(
        title="Diff-CXR generation API",
        version="1",
        description="Synthetic chest X-rays from radiology reports. Every image is marked synthetic.",
    )
    app.add_middleware(BodyLimit, max_bytes=cfg.limits.max_body_bytes)
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )  # fmt: skip
    install_error_handlers(app)
    _add_info_routes(app, ingress)
    _add_generate_routes(app, ingress)
    return app


def _add_info_routes(app: FastAPI, ingress: "GeneratorIngress") -> None:
    """The web page, health (no auth) and the served version's description."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        html = resources.files("services.serve").joinpath("webpage.html").read_text()
        return HTMLResponse(html.replace("{{AUTH}}", "true" if ingress.admission.tokens.enabled else "false"))

    @app.get("/v1/health", responses={503: ERRORS[503]})
    async def health() -> JSONResponse:
        """Models loaded in every deployment (503 while any is still loading or unreachable)."""
        states: dict[str, Any] = {}
        ok = True
        for name, handle in ingress.graph.handles().items():
            try:
                states[name] = await asyncio.wait_for(handle.health.remote(), timeout=10)
                ok = ok and bool(states[name]["loaded"])
            except Exception as exc:  # a deployment that cannot answer is what health reports
                states[name] = {"error": type(exc).__name__}
                ok = False
        body = {"status": "ok" if ok else "unavailable", "model": ingress.model.label, "deployments": states}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/v1/models", responses={401: ERRORS[401]})
    async def models(request: Request) -> dict[str, Any]:
        """The generator version being served, its parts, defaults and the request limits."""
        ingress.admission.authorize(request.headers.get("authorization"))
        model = ingress.model
        info = await ingress.graph.describe(model)
        return {
            "model": model.label, "ref": model.ref, "parts": info["provenance"], "defaults": info["defaults"],
            "image_size": info["image_size"], "limits": ingress.cfg.limits.model_dump(),
            "formats": list(outputs.EXTENSIONS), "auth": ingress.admission.tokens.enabled,
        }  # fmt: skip


def _add_generate_routes(app: FastAPI, ingress: "GeneratorIngress") -> None:
    """POST /v1/generate (JSON, zip or the file itself) and /v1/generate/stream (NDJSON progress)."""
    Request_ = ingress.request_model  # noqa: N806 - a class, named like one

    @app.post(
        "/v1/generate",
        response_model=GenerateResponse,
        responses={**{k: ERRORS[k] for k in (401, 413, 422, 429)},
                   200: {"content": {"application/zip": {}, "image/png": {}, "application/dicom": {}}}},
    )  # fmt: skip
    async def generate(body: Request_, request: Request) -> Response:  # type: ignore[valid-type]
        """Images for one report. JSON by default (base64 images); ``Accept: application/zip`` gives a zip
        (images + response.json); ``Accept: image/png`` or ``application/dicom`` with one image gives the file."""
        start, request_id = time.perf_counter(), uuid.uuid4().hex
        key = ingress.admission.admit(request.headers.get("authorization"), _address(request))
        status = 500
        try:
            response = await ingress.generate_once(body, request_id)
            status = 200
        finally:
            ingress.admission.release(key)
            log_request(request_id, body, status, start, "http")
        return render(response, request.headers.get("accept", ""), body)

    @app.post("/v1/generate/stream", responses={k: ERRORS[k] for k in (401, 413, 422, 429)})
    async def generate_stream(body: Request_, request: Request) -> StreamingResponse:  # type: ignore[valid-type]
        """Progress as newline-delimited JSON: ``labels``, one ``image`` event per finished image, ``done``
        (the full response) — or ``error``."""
        start, request_id = time.perf_counter(), uuid.uuid4().hex
        key = ingress.admission.admit(request.headers.get("authorization"), _address(request))

        async def events() -> AsyncIterator[bytes]:
            status = 500
            try:
                yield _line({"event": "accepted", "request_id": request_id, "total": body.num_images})
                async for event in ingress.graph.run(body, ingress.model, request_id):
                    yield _line(jsonable(event))
                status = 200
            except Exception:
                log.exception("stream %s failed", request_id)
                yield _line({"event": "error", "error": {"status": 500, "field": None, "message": "internal error"}})
            finally:
                ingress.admission.release(key)
                log_request(request_id, body, status, start, "http-stream")

        return StreamingResponse(events(), media_type="application/x-ndjson", headers={"X-Request-Id": request_id})


def render(response: dict[str, Any], accept: str, req: Any) -> Response:
    """A response as the client asked (``Accept``): a zip, the single file itself, or JSON with base64 data."""
    images = response["images"]
    headers = {"X-Request-Id": response["request_id"], "X-Diffcxr-Model": response["models"]["model"],
               "X-Diffcxr-Synthetic": "true"}  # fmt: skip
    if "application/zip" in accept:
        ext = outputs.EXTENSIONS[req.format]
        files = [(f"image_{i:02d}_seed{im['seed']}.{ext}", im["bytes"]) for i, im in enumerate(images)]
        meta = {**response, "images": [{k: v for k, v in im.items() if k != "bytes"} for im in images]}
        return Response(outputs.zip_bundle(files, meta), media_type="application/zip", headers=headers)
    wanted = outputs.CONTENT_TYPES[req.format]
    if len(images) == 1 and wanted in accept and "application/json" not in accept:
        headers.update({"X-Diffcxr-Seed": str(images[0]["seed"]), "X-Diffcxr-Sha256": images[0]["sha256"],
                        "X-Diffcxr-Precision": images[0]["precision"]})  # fmt: skip
        return Response(images[0]["bytes"], media_type=wanted, headers=headers)
    return JSONResponse(jsonable(response), headers=headers)


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event) + "\n").encode()


def jsonable(obj: Any) -> Any:
    """Image bytes → base64 under ``data``; everything else unchanged."""
    if isinstance(obj, dict):
        return {("data" if k == "bytes" else k): (base64.b64encode(v).decode() if k == "bytes" else jsonable(v))
                for k, v in obj.items()}  # fmt: skip
    if isinstance(obj, list):
        return [jsonable(v) for v in obj]
    return obj
