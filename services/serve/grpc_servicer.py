"""The gRPC side of the ingress: ``diffcxr.v1.Generator/Generate`` with the same fields, checks, auth and
limits as POST /v1/generate. Serve's gRPC proxy calls the ingress method of the rpc's name
(``GeneratorIngress.Generate``), which hands over to :func:`generate`."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from services.serve.admission import log_request
from services.serve.errors import ApiError
from services.serve.stubs import load

if TYPE_CHECKING:
    from services.serve.ingress import GeneratorIngress

#: Request fields that are proto3 ``optional``: copied only when the client set them (else the API default).
OPTIONAL_FIELDS = ("seed", "steps", "guidance", "num_images", "bit_depth", "disease_sentence")


def request_fields(request: Any) -> dict[str, Any]:
    """A ``GenerateRequest`` message → the fields of the HTTP request body."""
    data = {"report": request.report, "format": request.format or "png"}
    for name in OPTIONAL_FIELDS:
        if request.HasField(name):
            data[name] = getattr(request, name)
    return data


async def generate(ingress: GeneratorIngress, request: Any, grpc_context: Any = None) -> Any:
    """Validate, authorize, admit, generate; an :class:`ApiError` becomes a gRPC status code and details."""
    import grpc

    pb2, _ = load()
    start, request_id = time.perf_counter(), uuid.uuid4().hex
    metadata = dict(grpc_context.invocation_metadata()) if grpc_context is not None else {}
    req, status = None, 500
    try:
        data = request_fields(request)
        ingress.admission.authorize(metadata.get("authorization"))
        req = ingress.validate(data)
        key = ingress.admission.admit(metadata.get("authorization"), grpc_context.peer() if grpc_context else None)
        try:
            response = await ingress.generate_once(req, request_id)
        finally:
            ingress.admission.release(key)
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
        log_request(request_id, req, status, start, "grpc")
    return to_message(pb2, request_id, response)


def to_message(pb2: Any, request_id: str, response: dict[str, Any]) -> Any:
    """The API response dict → a ``GenerateResponse`` message (image bytes raw, labels without nulls)."""
    return pb2.GenerateResponse(
        request_id=request_id, synthetic=True,
        images=[pb2.Image(seed=im["seed"], content_type=im["content_type"], data=im["bytes"],
                          sha256=im["sha256"], precision=im["precision"])
                for im in response["images"]],  # fmt: skip
        labels={k: float(v) for k, v in response["labels"].items() if v is not None},
        disease_sentence=response["disease_sentence"], unconditional=response["unconditional"],
        warnings=response["warnings"], steps=response["steps"], guidance=response["guidance"],
        model=response["models"]["model"],
        model_versions={k: str(v) for k, v in response["models"]["served_by"].items()},
        timings_ms=response["timings_ms"],
    )  # fmt: skip
