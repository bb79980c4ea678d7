"""The ingress deployment: HTTP (FastAPI, OpenAPI), gRPC and the web page, in front of the model graph.

Per request: validate (limits from the config) → text deployment (labels,
disease sentence, contexts) → for each image, denoiser → decoder (the
denoiser's response is handed to the decoder un-awaited, so latents go
replica to replica) → files marked synthetic. The request carries the
:class:`ModelVersion` pinned when the app was built, so one image never mixes
parts of two versions. A replica lost mid-request (killed, node gone) is
retried on another: seeds make the retry give the same image.
"""

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import RayServeException, ReplicaUnavailableError
from starlette.exceptions import HTTPException as StarletteHTTPException

from diffcxr.constants import CHEXPERT_LABELS
from services.diffusion import outputs
from services.serve.api import ErrorResponse, GenerateResponse, describe, describe_errors, request_model
from services.serve.config import ServeConfig
from services.serve.deployments import DenoiseJob, TextJob
from services.serve.models import ModelVersion, resolve
from services.serve.security import BodyLimit, ClientLimiter, TokenCheck, report_fingerprint

log = logging.getLogger("ray.serve.diffcxr")  # a child of Serve's logger: lands in the replica log files
RETRIES = 3


class ApiError(Exception):
    """An error the client caused or must know about: status, field, message."""

    def __init__(self, status: int, field: str | None, message: str, details: list | None = None) -> None:
        super().__init__(message)
        self.status, self.field, self.message, self.details = status, field, message, details

    def body(self) -> dict[str, Any]:
        return {"error": {"status": self.status, "field": self.field, "message": self.message, "details": self.details}}


def _error_json(exc: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _replica_lost(exc: BaseException | None) -> bool:
    """A replica (or the one whose output this call consumed) died: the call can be retried elsewhere."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, RayActorError | ReplicaUnavailableError):
            return True
        if isinstance(exc, RayServeException) and "actor died" in str(exc):
            return True  # "failed because an upstream actor died before finishing a dependent task"
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


ERRORS = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "Missing or wrong bearer token.",
        413: "Body larger than limits.max_body_bytes.",
        422: "A field is invalid; error.field names it.",
        429: "Too many concurrent requests from this client.",
        503: "Models not loaded yet.",
    }.items()
}


def build_ingress(cfg: ServeConfig) -> Any:
    """The ingress deployment class for this config (its request schema carries the config's limits)."""
    Request_ = request_model(cfg)
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

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        field, text, details = describe_errors(list(exc.errors()))
        return _error_json(ApiError(422, field, text or "invalid request", details))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        field = "body" if exc.status_code == 400 else None  # Starlette's 400 is an unparsable body
        return _error_json(ApiError(exc.status_code, field, str(exc.detail)))

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status == 429:
            headers = {"Retry-After": "1"}
        return _error_json(exc, headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return _error_json(ApiError(500, None, "internal error; the service logs have the details"))

    @serve.deployment
    @serve.ingress(app)
    class GeneratorIngress:
        """HTTP + gRPC front of the generation graph."""

        def __init__(self, text: Any, denoiser: Any, decoder: Any) -> None:
            self.text, self.denoiser, self.decoder = text, denoiser, decoder
            self.tokens = TokenCheck(cfg.auth)
            self.limiter = ClientLimiter(cfg.limits.max_concurrent_per_client)
            self.model: ModelVersion | None = None
            self.described: dict[str, dict[str, Any]] = {}

        def reconfigure(self, config: dict[str, Any]) -> None:
            self.model = ModelVersion(**config["model"])
            if cfg.model_refresh_s > 0 and "@" in cfg.model and not getattr(self, "_watching", False):
                self._watching = True
                threading.Thread(target=self._watch_alias, name="alias-watch", daemon=True).start()

        def _watch_alias(self) -> None:
            """Re-read the alias every ``model_refresh_s``; new requests then carry the new version and each
            deployment loads it on first use (requests in flight finish on the old one: nothing is dropped)."""
            while True:
                time.sleep(cfg.model_refresh_s)
                try:
                    latest = resolve(cfg.model, cfg.tracking_uri)
                except Exception as exc:  # registry unreachable: keep serving the pinned version
                    log.warning("cannot re-read %s: %s", cfg.model, exc)
                    continue
                if latest != self.model:
                    log.info("alias %s moved: %s -> %s", cfg.model, self.model.label, latest.label)
                    self.model = latest

        # ------------------------------------------------------------- core
        async def _describe(self, model: ModelVersion) -> dict[str, Any]:
            if model.label not in self.described:
                info = await self.text.describe.remote(model)
                sampling = info["sampling"]
                steps = cfg.default_steps if cfg.default_steps is not None else sampling["steps"]
                guidance = cfg.default_guidance if cfg.default_guidance is not None else sampling["guidance"]
                defaults = {"steps": min(steps, cfg.limits.max_steps), "guidance": guidance,
                            "scheduler": sampling["scheduler"]}  # fmt: skip
                self.described[model.label] = {**info, "defaults": defaults}
            return self.described[model.label]

        def _validate(self, data: dict[str, Any]) -> Any:
            try:
                return Request_(**data)
            except ValidationError as exc:
                field, text, details = describe(exc)
                raise ApiError(422, field, text, details) from None

        async def _retrying(self, call: Callable[[], Awaitable[dict[str, Any]]], what: str) -> dict[str, Any]:
            """``call()`` again (up to RETRIES times) when the replica serving it, or one it consumed, was lost."""
            for attempt in range(RETRIES):
                try:
                    return await call()
                except Exception as exc:
                    if not _replica_lost(exc) or attempt == RETRIES - 1:
                        raise
                    log.warning("replica lost (%s); retrying %s", type(exc).__name__, what)
                    await asyncio.sleep(0.5 * (attempt + 1))
            raise AssertionError("unreachable")

        async def _image(self, job: DenoiseJob) -> dict[str, Any]:
            return await self._retrying(
                lambda: self.decoder.decode.remote(self.denoiser.sample.remote(job)), f"image seed={job.seed}"
            )

        async def _text(self, job: TextJob) -> dict[str, Any]:
            return await self._retrying(lambda: self.text.encode.remote(job), "text")

        async def run(self, req: Any, request_id: str) -> AsyncIterator[dict[str, Any]]:
            """Events: labels, then one per finished image (in completion order), then done."""
            start = time.perf_counter()
            model = self.model
            info = await self._describe(model)
            steps = req.steps if req.steps is not None else info["defaults"]["steps"]
            guidance = float(req.guidance if req.guidance is not None else info["defaults"]["guidance"])
            seed = req.seed if req.seed is not None else secrets.randbelow(2**63 - req.num_images)
            text = await self._text(TextJob(model, req.report, req.disease_sentence))
            warnings = (
                ["report: empty; generated unconditionally (no report conditioning)"] if text["unconditional"] else []
            )
            labels = {name: text["labels"].get(name) for name in CHEXPERT_LABELS}
            yield {
                "event": "labels", "labels": labels, "disease_sentence": text["disease_sentence"],
                "unconditional": text["unconditional"], "warnings": warnings, "steps": steps, "guidance": guidance,
            }  # fmt: skip
            seeds = [seed + i for i in range(req.num_images)]
            jobs = [DenoiseJob(model, text["context"], text["hint"], text["uncond"], s, steps, guidance) for s in seeds]
            meta_base = {"steps": steps, "guidance": guidance, "disease_sentence": text["disease_sentence"],
                         "models": {"generator": model.label, **info["provenance"]}}  # fmt: skip

            async def indexed(i: int, job: DenoiseJob) -> tuple[int, dict[str, Any]]:
                return i, await self._image(job)

            tasks = [asyncio.ensure_future(indexed(i, job)) for i, job in enumerate(jobs)]
            images: list[dict[str, Any] | None] = [None] * len(jobs)
            served = {"text": text["served_by"]}
            timings = {"text": text["ms"], "denoise": 0.0, "decode": 0.0}
            batches = {"text": text["batch"], "denoise": 0, "decode": 0}
            try:
                for done, future in enumerate(asyncio.as_completed(tasks), start=1):
                    i, result = await future
                    data = outputs.encode(result["image"], req.format, req.bit_depth, {**meta_base, "seed": seeds[i]})
                    served.update(result["served_by"])
                    timings["denoise"] = max(timings["denoise"], result["ms"]["denoise"])
                    timings["decode"] = max(timings["decode"], result["ms"]["decode"])
                    for part in ("denoise", "decode"):
                        batches[part] = max(batches[part], result["batch"][part])
                    images[i] = {"seed": seeds[i], "content_type": outputs.CONTENT_TYPES[req.format],
                                 "sha256": hashlib.sha256(data).hexdigest(), "bytes": data}  # fmt: skip
                    yield {"event": "image", "index": i, "done": done, "total": len(jobs), "image": images[i]}
            finally:
                for t in tasks:
                    t.cancel()
            timings["total"] = (time.perf_counter() - start) * 1000
            yield {
                "event": "done",
                "response": {
                    "request_id": request_id, "synthetic": True, "images": images, "labels": labels,
                    "disease_sentence": text["disease_sentence"], "unconditional": text["unconditional"],
                    "warnings": warnings, "steps": steps, "guidance": guidance, "format": req.format,
                    "models": {"model": model.label, "ref": model.ref, "parts": info["provenance"],
                               "served_by": served},
                    "timings_ms": timings, "batch_sizes": batches,
                },
            }  # fmt: skip

        async def generate_once(self, req: Any, request_id: str) -> dict[str, Any]:
            response: dict[str, Any] = {}
            async for event in self.run(req, request_id):
                if event["event"] == "done":
                    response = event["response"]
            return response

        async def generate_dict(self, data: dict[str, Any]) -> dict[str, Any]:
            """Direct handle call (``serve.get_app_handle(app).generate_dict.remote({...})``): same fields and
            checks as POST /v1/generate; images as raw bytes under ``bytes``. Invalid fields raise ApiError."""
            return await self.generate_once(self._validate(data), uuid.uuid4().hex)

        def _admit(self, authorization: str | None, address: str | None) -> str:
            if not self.tokens.accepts(authorization):
                raise ApiError(401, "authorization", "missing or wrong bearer token")
            key = self.tokens.client_key(authorization, address)
            if not self.limiter.acquire(key):
                raise ApiError(429, None, f"more than {self.limiter.limit} concurrent requests from this client")
            return key

        def _log(self, request_id: str, req: Any, status: int, start: float, via: str) -> None:
            log.info(
                "request %s via %s report=%s images=%d steps=%s guidance=%s format=%s status=%d ms=%.0f",
                request_id, via, report_fingerprint(req.report) if req is not None else "-",
                getattr(req, "num_images", 0), getattr(req, "steps", None), getattr(req, "guidance", None),
                getattr(req, "format", None), status, (time.perf_counter() - start) * 1000,
            )  # fmt: skip

        # ------------------------------------------------------------- HTTP
        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def page(self) -> HTMLResponse:
            html = resources.files("services.serve").joinpath("webpage.html").read_text()
            return HTMLResponse(html.replace("{{AUTH}}", "true" if self.tokens.enabled else "false"))

        @app.get("/v1/health", responses={503: ERRORS[503]})
        async def health(self) -> JSONResponse:
            """Models loaded in every deployment (503 while any is still loading or unreachable)."""
            states: dict[str, Any] = {}
            ok = True
            for name, handle in (("text", self.text), ("denoiser", self.denoiser), ("decoder", self.decoder)):
                try:
                    states[name] = await asyncio.wait_for(handle.health.remote(), timeout=10)
                    ok = ok and bool(states[name]["loaded"])
                except Exception as exc:  # a deployment that cannot answer is what health reports
                    states[name] = {"error": type(exc).__name__}
                    ok = False
            body = {"status": "ok" if ok else "unavailable", "model": self.model.label, "deployments": states}
            return JSONResponse(body, status_code=200 if ok else 503)

        @app.get("/v1/models", responses={401: ERRORS[401]})
        async def models(self, request: Request) -> dict[str, Any]:
            """The generator version being served, its parts, defaults and the request limits."""
            if not self.tokens.accepts(request.headers.get("authorization")):
                raise ApiError(401, "authorization", "missing or wrong bearer token")
            info = await self._describe(self.model)
            return {
                "model": self.model.label, "ref": self.model.ref, "parts": info["provenance"],
                "defaults": info["defaults"],
                "image_size": info["image_size"], "limits": cfg.limits.model_dump(),
                "formats": list(outputs.EXTENSIONS), "auth": self.tokens.enabled,
            }  # fmt: skip

        @app.post(
            "/v1/generate",
            response_model=GenerateResponse,
            responses={**{k: ERRORS[k] for k in (401, 413, 422, 429)},
                       200: {"content": {"application/zip": {}, "image/png": {}, "application/dicom": {}}}},
        )  # fmt: skip
        async def generate(self, body: Request_, request: Request) -> Response:  # type: ignore[valid-type]
            """Images for one report. JSON by default (base64 images); ``Accept: application/zip`` gives a zip
            (images + response.json); ``Accept: image/png`` or ``application/dicom`` with one image gives the file."""
            start, request_id = time.perf_counter(), uuid.uuid4().hex
            key = self._admit(request.headers.get("authorization"), request.client.host if request.client else None)
            status = 500
            try:
                response = await self.generate_once(body, request_id)
                status = 200
            finally:
                self.limiter.release(key)
                self._log(request_id, body, status, start, "http")
            return self._render(response, request.headers.get("accept", ""), body)

        def _render(self, response: dict[str, Any], accept: str, req: Any) -> Response:
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
                headers.update({"X-Diffcxr-Seed": str(images[0]["seed"]), "X-Diffcxr-Sha256": images[0]["sha256"]})
                return Response(images[0]["bytes"], media_type=wanted, headers=headers)
            return JSONResponse(_jsonable(response), headers=headers)

        @app.post("/v1/generate/stream", responses={k: ERRORS[k] for k in (401, 413, 422, 429)})
        async def generate_stream(self, body: Request_, request: Request) -> StreamingResponse:  # type: ignore[valid-type]
            """Progress as newline-delimited JSON: ``labels``, one ``image`` event per finished image, ``done``
            (the full response) — or ``error``."""
            start, request_id = time.perf_counter(), uuid.uuid4().hex
            key = self._admit(request.headers.get("authorization"), request.client.host if request.client else None)

            async def events() -> AsyncIterator[bytes]:
                status = 500
                try:
                    yield _line({"event": "accepted", "request_id": request_id, "total": body.num_images})
                    async for event in self.run(body, request_id):
                        yield _line(_jsonable(event))
                    status = 200
                except Exception:
                    log.exception("stream %s failed", request_id)
                    yield _line(
                        {"event": "error", "error": {"status": 500, "field": None, "message": "internal error"}}
                    )
                finally:
                    self.limiter.release(key)
                    self._log(request_id, body, status, start, "http-stream")

            return StreamingResponse(events(), media_type="application/x-ndjson", headers={"X-Request-Id": request_id})

        # ------------------------------------------------------------- gRPC
        async def Generate(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 - the rpc's name
            """diffcxr.v1.Generator/Generate: same fields and checks as POST /v1/generate."""
            import grpc

            from services.serve.stubs import load

            pb2, _ = load()
            start, request_id = time.perf_counter(), uuid.uuid4().hex
            metadata = dict(grpc_context.invocation_metadata()) if grpc_context is not None else {}
            req, status = None, 500
            try:
                data = {"report": request.report, "format": request.format or "png"}
                for name in ("seed", "steps", "guidance", "num_images", "bit_depth", "disease_sentence"):
                    if request.HasField(name):
                        data[name] = getattr(request, name)
                if not self.tokens.accepts(metadata.get("authorization")):
                    raise ApiError(401, "authorization", "missing or wrong bearer token")
                req = self._validate(data)
                key = self._admit(metadata.get("authorization"), grpc_context.peer() if grpc_context else None)
                try:
                    response = await self.generate_once(req, request_id)
                finally:
                    self.limiter.release(key)
                status = 200
            except ApiError as exc:
                status = exc.status
                code = {401: grpc.StatusCode.UNAUTHENTICATED, 429: grpc.StatusCode.RESOURCE_EXHAUSTED}.get(
                    exc.status, grpc.StatusCode.INVALID_ARGUMENT
                )
                if grpc_context is not None:
                    grpc_context.set_code(code)
                    grpc_context.set_details(exc.message)
                return pb2.GenerateResponse()
            finally:
                self._log(request_id, req, status, start, "grpc")
            return pb2.GenerateResponse(
                request_id=request_id, synthetic=True,
                images=[pb2.Image(seed=im["seed"], content_type=im["content_type"], data=im["bytes"],
                                  sha256=im["sha256"]) for im in response["images"]],  # fmt: skip
                labels={k: float(v) for k, v in response["labels"].items() if v is not None},
                disease_sentence=response["disease_sentence"], unconditional=response["unconditional"],
                warnings=response["warnings"], steps=response["steps"], guidance=response["guidance"],
                model=response["models"]["model"],
                model_versions={k: str(v) for k, v in response["models"]["served_by"].items()},
                timings_ms=response["timings_ms"],
            )  # fmt: skip

    return GeneratorIngress


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event) + "\n").encode()


def _jsonable(obj: Any) -> Any:
    """Image bytes → base64 under ``data``; everything else unchanged."""
    if isinstance(obj, dict):
        return {("data" if k == "bytes" else k): (base64.b64encode(v).decode() if k == "bytes" else _jsonable(v))
                for k, v in obj.items()}  # fmt: skip
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return obj
