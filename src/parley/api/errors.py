"""One error shape for every failure: ``{"error": {"type", "code", "message"}}``."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter
from starlette.exceptions import HTTPException as StarletteHTTPException

from parley.api.rate_limits import RateLimitedError
from parley.domain import errors as domain
from parley.limiter import LimiterUnavailableError
from parley.llm import LLMErrorKind
from parley.observability import mark_error
from parley.observability.routes import template_regex, walk_templates

logger = structlog.get_logger("parley.api")

# Checked in order; the first class that matches decides status and type.
_DOMAIN_STATUS: tuple[tuple[type[domain.DomainError], int, str], ...] = (
    (domain.NotFoundError, 404, "not_found"),
    (domain.ConflictError, 409, "conflict"),
    (domain.InvalidInputError, 422, "validation_error"),
    (domain.ContentTooLargeError, 413, "payload_too_large"),
    (domain.KeyRevokedError, 401, "unauthorized"),
    (domain.RetryLaterError, 429, "rate_limited"),
    (domain.ShuttingDownError, 503, "unavailable"),
    (domain.TooManyStreamsError, 503, "unavailable"),
    (domain.DatabaseUnavailableError, 503, "unavailable"),
    (domain.TurnInterruptedError, 503, "unavailable"),
    (domain.TurnCrashedError, 500, "internal_error"),
)
_LLM_STATUS = {LLMErrorKind.RATE_LIMITED: 503, LLMErrorKind.TIMEOUT: 504}

# Times in error details written as in every other body (pydantic's: "...Z").
_TIMES = TypeAdapter(datetime)

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_body(
    error_type: str, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def error_response(
    request: Request,
    status: int,
    error_type: str,
    code: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    mark_error(request.scope, error_type, code)  # for api_errors_total
    return JSONResponse(
        error_body(error_type, code, message, details), status_code=status, headers=headers
    )


def domain_status(exc: domain.DomainError) -> tuple[int, str]:
    if isinstance(exc, domain.ReplyFailedError):
        return _LLM_STATUS.get(exc.kind, 502), "upstream_error"
    for cls, status, error_type in _DOMAIN_STATUS:
        if isinstance(exc, cls):
            return status, error_type
    return 400, "bad_request"


async def _on_domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, domain.DomainError)
    status, error_type = domain_status(exc)
    details: list[dict[str, Any]] | None = None
    headers = None
    if isinstance(exc, domain.ReplyFailedError):
        details = [{"escalated": exc.escalated}]
    if isinstance(exc, domain.RetryLaterError):
        headers = {"Retry-After": str(exc.retry_after_seconds)}
    if isinstance(exc, domain.BudgetExceededError):
        details = [{"resets_at": _TIMES.dump_python(exc.resets_at, mode="json")}]
    if isinstance(exc, domain.ShuttingDownError | domain.DatabaseUnavailableError):
        # Another replica (or this one, restarted) takes it; a database back in a moment.
        headers = {"Retry-After": "1"}
    if isinstance(exc, domain.TooManyStreamsError):
        headers = {"Retry-After": "5"}  # a stream ends now and then; others may take it
    return error_response(
        request, status, error_type, exc.code, exc.message, details=details, headers=headers
    )


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    details = [
        {"field": _location(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type")}
        for e in errors
    ]
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
    return error_response(
        request,
        422,
        "validation_error",
        "invalid_request",
        message,
        details=jsonable_encoder(details),
    )


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error_type = _HTTP_TYPES.get(exc.status_code, "http_error")
    code = error_type if exc.status_code != 404 else "route_not_found"
    message = exc.detail if isinstance(exc.detail, str) else error_type.replace("_", " ")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names only the first route whose path matched; a path served by
        # several routes (GET, PATCH, DELETE /v1/goals/{goal_id}) allows all of theirs.
        headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
    return error_response(request, exc.status_code, error_type, code, message, headers=headers)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    table: list[tuple[re.Pattern[str], frozenset[str]]] | None = getattr(
        app.state, "allowed_methods", None
    )
    if table is None:
        table = [
            (template_regex(template), frozenset(getattr(route, "methods", None) or ()))
            for route, template in walk_templates(app.routes)
        ]
        app.state.allowed_methods = table
    return sorted({m for regex, methods in table if regex.match(path) for m in methods})


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled_error", error_type=type(exc).__name__)
    return error_response(request, 500, "internal_error", "internal_error", "internal server error")


async def _on_rate_limited(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimitedError)
    return error_response(
        request,
        429,
        "rate_limited",
        exc.code,
        exc.message,
        headers={"Retry-After": str(exc.retry_after_seconds)},
    )


async def _on_limiter_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return error_response(
        request,
        503,
        "unavailable",
        "rate_limiter_unavailable",
        "the rate limiter is unavailable (and set to fail closed); retry shortly",
        headers={"Retry-After": "1"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(domain.DomainError, _on_domain_error)
    app.add_exception_handler(RateLimitedError, _on_rate_limited)
    app.add_exception_handler(LimiterUnavailableError, _on_limiter_unavailable)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected_error)
