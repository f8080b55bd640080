"""Errors in OpenAI's body shape (``{"error": {"message", "type", "param", "code"}}``)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmforge.infer.engine import EngineOverloaded, EngineRejected, EngineUnavailable

logger = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class ApiError(Exception):
    """An error answered to the client with ``status`` and OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, param=self.param, code=self.code)


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error"),
            "param": param,
            "code": code,
        }
    }


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def engine_error(exc: Exception) -> ApiError:
    """The HTTP form of an engine's refusal: 400 for settings it rejects, 429 when busy, 503 when unavailable."""
    if isinstance(exc, EngineRejected):
        return ApiError(400, str(exc), param=exc.param, code="invalid_request")
    if isinstance(exc, EngineOverloaded):
        return ApiError(429, str(exc), code="server_busy", headers={"Retry-After": "1"})
    if isinstance(exc, EngineUnavailable):
        return ApiError(503, str(exc), code="engine_unavailable", headers={"Retry-After": "5"})
    return ApiError(500, f"internal error: {type(exc).__name__}", code="internal_error")


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """One line naming the first wrong field, and that field."""
    errors = exc.errors()
    if not errors:
        return "invalid request body", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        return f"malformed JSON body: {ctx.get('error', first.get('msg'))}", None
    if first.get("type") == "model_attributes_type" and tuple(first.get("loc", ())) == ("body",):
        return "the request body must be a JSON object", None
    field = _field_path(tuple(first.get("loc", ())))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"invalid value for '{field}': {first.get('msg')}{more}", field


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves the server in OpenAI's shape, never as a bare 500 or HTML page."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc)
        return JSONResponse(error_body(400, message, param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"no such route: {_request.method} {_request.url.path}"
        return JSONResponse(
            error_body(exc.status_code, message), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        error = engine_error(exc)
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)
