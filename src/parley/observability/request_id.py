"""A request id per HTTP request and WebSocket, bound to the logs and echoed in X-Request-ID."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
# An incoming id is reused only if it is short and plain, so logs cannot be polluted and
# it always fits an exemplar (prometheus_client refuses exemplar labels over 128
# characters, and raises: that failed every request carrying a longer id).
MAX_ID_LENGTH = 64
_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,%d}$" % MAX_ID_LENGTH)
_EXEMPLAR_LABELS_LIMIT = 128

logger = structlog.get_logger("parley.http")

_current: ContextVar[str | None] = ContextVar("request_id", default=None)
# With tracing on, exemplars name the trace (a panel jumps from a slow bucket to it).
_trace_exemplar: Callable[[], dict[str, str] | None] | None = None


def exemplars_from_traces(source: Callable[[], dict[str, str] | None] | None) -> None:
    """Exemplars carry what ``source`` gives (the current trace id), the request id where
    it gives nothing; None: the request id always (tracing off)."""
    global _trace_exemplar
    _trace_exemplar = source


def current_request_id() -> str | None:
    """The id of the request being served in this context, for exemplars and logs."""
    return _current.get()


def request_exemplar() -> dict[str, str] | None:
    """The exemplar for an observation in this context; ``None`` where it could not be one."""
    if _trace_exemplar is not None:
        traced = _trace_exemplar()
        if traced is not None:
            return traced
    request_id = _current.get()
    if not request_id or len("request_id") + len(request_id) > _EXEMPLAR_LABELS_LIMIT:
        return None
    return {"request_id": request_id}


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp, *, log_requests: bool = True) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id  # request.state.request_id
        header = (HEADER, request_id.encode())
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] in ("http.response.start", "websocket.accept"):
                message["headers"] = [*message.get("headers", []), header]
                status = message.get("status", 101)
            await send(message)

        token = _current.set(request_id)
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                _current.reset(token)
                if self.log_requests and scope["type"] == "http":
                    logger.info(
                        "http_request",
                        method=scope["method"],
                        path=scope["path"],
                        status=status,
                        duration_seconds=round(time.perf_counter() - started, 6),
                    )


def _incoming_id(scope: Scope) -> str | None:
    name: bytes
    value: bytes
    for name, value in scope["headers"]:
        if name == HEADER and _SAFE_ID.match(value):
            return value.decode()
    return None
