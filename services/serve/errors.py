"""The API's one error shape (``{"error": {status, field, message, details}}``) and the FastAPI handlers that
turn every failure into it, so HTTP clients and the fuzz test see the same body for 401, 413, 422, 429 and 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.serve.api import ErrorResponse, describe_errors

log = logging.getLogger("ray.serve.diffcxr")  # a child of Serve's logger: lands in the replica log files


class ApiError(Exception):
    """An error the client caused or must know about: status, field, message."""

    def __init__(self, status: int, field: str | None, message: str, details: list | None = None) -> None:
        super().__init__(message)
        self.status, self.field, self.message, self.details = status, field, message, details

    def body(self) -> dict[str, Any]:
        return {"error": {"status": self.status, "field": self.field, "message": self.message, "details": self.details}}


#: The documented error responses of the OpenAPI schema, by status.
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


def error_json(exc: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Validation errors, Starlette's HTTP errors, :class:`ApiError` and anything unexpected → the error body."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        field, text, details = describe_errors(list(exc.errors()))
        return error_json(ApiError(422, field, text or "invalid request", details))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        field = "body" if exc.status_code == 400 else None  # Starlette's 400 is an unparsable body
        return error_json(ApiError(exc.status_code, field, str(exc.detail)))

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status == 429:
            headers = {"Retry-After": "1"}
        return error_json(exc, headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return error_json(ApiError(500, None, "internal error; the service logs have the details"))
