"""Pure ASGI middleware: HTTP request metrics and WebSocket connection metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley.observability.catalogue import HttpMetrics, WebSocketMetrics
from parley.observability.errors import marked_error
from parley.observability.request_id import current_request_id
from parley.observability.routes import RouteTemplates

KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
OTHER_METHOD = "other"
# nginx's convention: the client closed the connection before a response was sent.
CLIENT_CLOSED = 499


class PrometheusMiddleware:
    """Counts each HTTP request once, after its response, with its final status.

    Duration runs to the last body byte (streams included); background tasks that run
    after the response are not billed to it. WebSocket scopes get connection and
    message metrics instead, when ``ws`` is given.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        http: HttpMetrics,
        ws: WebSocketMetrics | None = None,
        templates: RouteTemplates | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.app = app
        self.http = http
        self.ws = ws
        self.templates = templates or RouteTemplates(app)
        self.clock = clock
        # Labelled children, looked up once: .labels() validates and locks on every call.
        # The keys are bounded (templates, known methods, statuses), so the caches are too.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}
        self._errors: dict[tuple[str, str, str], Any] = {}
        if ws is not None:
            self._ws_counts = {d: ws.messages.labels(d) for d in ("inbound", "outbound")}
            self._ws_sizes = {d: ws.message_size.labels(d) for d in ("inbound", "outbound")}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket" and self.ws is not None:
            await self._websocket(scope, receive, send, self.ws)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = self.clock()
        status: int | None = None
        recorded = False

        async def send_and_time(message: Message) -> None:
            nonlocal status, recorded
            await send(message)
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                recorded = True
                self._record(scope, status or 500, self.clock() - started)

        try:
            await self.app(scope, receive, send_and_time)
        except asyncio.CancelledError:
            if not recorded:
                recorded = True
                self._record(scope, status or CLIENT_CLOSED, self.clock() - started)
            raise
        except Exception:
            if not recorded:
                recorded = True
                self._record(
                    scope,
                    status or 500,
                    self.clock() - started,
                    default_error=("internal_error", "unhandled_exception"),
                )
            raise
        finally:
            if not recorded:
                # Ended without a final body: a client that went away mid-stream, or an
                # app that never answered (the server then sends 500).
                self._record(scope, status or 500, self.clock() - started)

    def _record(
        self,
        scope: Scope,
        status: int,
        duration: float,
        default_error: tuple[str, str] | None = None,
    ) -> None:
        path = self.templates.template(scope)
        method = scope["method"]
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        counter = self._counters.get((path, method, status))
        if counter is None:
            counter = self.http.requests.labels(path, method, str(status))
            self._counters[(path, method, status)] = counter
        counter.inc()
        histogram = self._histograms.get((path, method))
        if histogram is None:
            histogram = self.http.duration.labels(path, method)
            self._histograms[(path, method)] = histogram
        request_id = current_request_id()
        histogram.observe(duration, exemplar={"request_id": request_id} if request_id else None)
        if status >= 400 and status != CLIENT_CLOSED:
            error_type, error_code = (
                marked_error(scope) or default_error or ("http_error", str(status))
            )
            key = (error_type, error_code, path)
            errors = self._errors.get(key)
            if errors is None:
                errors = self._errors[key] = self.http.errors.labels(*key)
            errors.inc()

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, ws: WebSocketMetrics
    ) -> None:
        open_socket = False

        def closed() -> None:
            # However the socket ends (close, client gone, server error), once only.
            nonlocal open_socket
            if open_socket:
                open_socket = False
                ws.connections.dec()

        async def receive_counted() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                self._count("inbound", message)
            elif message["type"] == "websocket.disconnect":
                closed()
            return message

        async def send_counted(message: Message) -> None:
            nonlocal open_socket
            await send(message)
            if message["type"] == "websocket.send":
                self._count("outbound", message)
            elif message["type"] == "websocket.accept":
                open_socket = True
                ws.connections.inc()
            elif message["type"] == "websocket.close":
                closed()

        try:
            await self.app(scope, receive_counted, send_counted)
        finally:
            closed()

    def _count(self, direction: str, message: Message) -> None:
        self._ws_counts[direction].inc()
        payload = message.get("text")
        size = len(payload.encode()) if payload is not None else len(message.get("bytes") or b"")
        self._ws_sizes[direction].observe(size)
