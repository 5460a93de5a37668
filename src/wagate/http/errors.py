"""The one table that knows status codes, and the handlers that answer with the envelope."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from wagate.core import errors
from wagate.wire.envelope import error_envelope

logger = logging.getLogger(__name__)

HTTP_STATUS: dict[type[errors.WagateError], int] = {
    errors.BadRequestData: 400,
    errors.ValidationFailed: 400,
    errors.InvalidJsonBody: 400,
    errors.InvalidPathParameter: 400,
    errors.InstanceNotAuthorized: 400,
    errors.PushModeActive: 400,
    errors.InvalidToken: 401,
    errors.UnknownInstance: 403,
    errors.UnknownMethod: 404,
    errors.InstanceConflict: 409,
    errors.BodyTooLarge: 413,
    errors.RateLimited: 429,
    errors.WagateError: 500,
}

# Messages for the classes whose detail is for operators, not for API clients.
_PUBLIC_MESSAGE: dict[type[errors.WagateError], str] = {
    errors.UnknownInstance: "Forbidden",
    errors.InvalidToken: "Unauthorized",
}


def status_for(exc: errors.WagateError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def envelope_response(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        error_envelope(status, request.url.path, message), status_code=status, headers=headers
    )


async def _wagate_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.WagateError)
    return wagate_error_response(request, exc)


def wagate_error_response(request: Request, exc: errors.WagateError) -> JSONResponse:
    """The envelope for a wagate error; a server-side one is logged and its detail withheld."""
    status = status_for(exc)
    if status >= 500:
        logger.error("request failed", exc_info=exc, extra={"action": "request_failed"})
        return envelope_response(request, status, "Internal Server Error")
    message = _PUBLIC_MESSAGE.get(type(exc), exc.message)
    headers = None
    if isinstance(exc, errors.RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    return envelope_response(request, status, message, headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        # GREEN-API answers a known method called with the wrong verb with 404.
        return envelope_response(request, 404, "invalid request method used")
    message = "Not Found" if exc.status_code == 404 else str(exc.detail)
    return envelope_response(request, exc.status_code, message)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": ()}
    field = str(first["loc"][-1]) if first["loc"] else "value"
    return envelope_response(request, 400, f"Validation failed. Details: '{field}' is invalid")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=exc, extra={"action": "unhandled_error"})
    return envelope_response(request, 500, "Internal Server Error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.WagateError, _wagate_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
