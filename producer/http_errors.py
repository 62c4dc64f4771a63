"""How the gateway answers an error: one JSON shape, OpenAI's, for every endpoint.

``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``: ``type`` is OpenAI's
category for the HTTP status (so the ``openai`` package raises its matching exception) and
``code`` names the infermq error class in snake_case, so a caller can branch on it.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from infermq.errors import (
    InfermqError,
    InvalidApiKey,
    InvalidRequest,
    InvalidTransition,
    JobFailed,
    JobNotFound,
    JobTimeout,
    PriorityNotAllowed,
    QueueFull,
    QueueUnavailable,
    RateLimited,
    ServiceUnavailable,
    SessionConflict,
    SessionNotFound,
    SessionTerminated,
    UnknownModel,
)

STATUS_OF: list[tuple[type[InfermqError], int]] = [
    (UnknownModel, 404),
    (InvalidRequest, 400),
    (JobNotFound, 404),
    (SessionNotFound, 404),
    (SessionTerminated, 409),
    (InvalidTransition, 409),
    (SessionConflict, 409),
    (InvalidApiKey, 401),
    (PriorityNotAllowed, 403),
    (RateLimited, 429),
    (QueueFull, 503),
    (QueueUnavailable, 503),
    (ServiceUnavailable, 503),
    (JobTimeout, 504),
]
"""Most specific first: the first class an error is an instance of gives its status."""

TYPE_OF_STATUS = {400: "invalid_request_error", 401: "authentication_error",
                  403: "permission_error", 404: "not_found_error", 409: "conflict_error",
                  429: "rate_limit_error"}


def error_body(message: str, status: int, code: str, param: str | None = None) -> dict[str, Any]:
    kind = TYPE_OF_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def status_of(error: InfermqError) -> int:
    if isinstance(error, JobFailed):
        return 409 if error.status == "cancelled" else 503 if error.status == "rejected" else 500
    return next((status for kind, status in STATUS_OF if isinstance(error, kind)), 500)


def error_response(error: InfermqError) -> JSONResponse:
    """The HTTP answer to an infermq error."""
    status = status_of(error)
    code = f"job_{error.status}" if isinstance(error, JobFailed) else snake_case(
        type(error).__name__)
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, RateLimited) else None
    return JSONResponse(error_body(str(error), status, code), status, headers=headers)


async def infermq_error_handler(_request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, InfermqError):  # registered for this class only
        raise error
    return error_response(error)


async def validation_error_handler(_request: Request, error: Exception) -> JSONResponse:
    """A body that fails validation is a 400 with the first offending field as ``param``."""
    if not isinstance(error, RequestValidationError):  # registered for this class only
        raise error
    problems = error.errors()
    described = "; ".join(
        f"{'.'.join(str(p) for p in item['loc'][1:]) or 'body'}: {item['msg']}"
        for item in problems)
    first = problems[0]["loc"] if problems else ()
    param = ".".join(str(p) for p in first[1:]) or None
    return JSONResponse(error_body(f"invalid request: {described}", 400, "invalid_request",
                                   param), 400)


async def http_error_handler(_request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, StarletteHTTPException):  # registered for this class only
        raise error
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return JSONResponse(error_body(str(error.detail), error.status_code, code),
                        error.status_code, headers=error.headers)
