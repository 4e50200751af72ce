"""Pure ASGI middleware: HTTP request metrics and WebSocket connection metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley.observability.catalogue import HttpMetrics, WebSocketMetrics
from parley.observability.errors import marked_error
from parley.observability.request_id import request_exemplar
from parley.observability.routes import UNMATCHED, RouteTemplates

KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
OTHER_METHOD = "other"
# nginx's convention: the client closed the connection before a response was sent.
CLIENT_CLOSED = 499
# What a service and the proxies in front of it answer when the server side fails.
SERVER_ERROR_STATUSES = (500, 502, 503, 504)
NOT_SERVED = (404, 405)  # no such route or method: no server-error series for it


_NOT_ON_METRICS_PORT = PlainTextResponse("Not Found: this port serves /metrics only", 404)


def _local_port(scope: Scope) -> int | None:
    server = scope.get("server")
    return server[1] if server else None


class _Series:
    """The labelled children one (path, method, status) updates, looked up once."""

    __slots__ = ("duration", "is_error", "requests", "unmarked_errors")

    def __init__(self, requests: Any, duration: Any, *, is_error: bool) -> None:
        self.requests = requests
        self.duration = duration
        self.is_error = is_error
        self.unmarked_errors: Any = None


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
        metrics_route: Route | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.app = app
        # /metrics is served here, before routing: the app's routes do not grow by one
        # that every unmatched request would have to try.
        self.metrics_route = metrics_route
        self.metrics_path = metrics_route.path if metrics_route is not None else None
        # With a port of its own, /metrics is served there only, and nothing else is: the
        # API's port can face the world while the metrics port stays inside.
        self.metrics_port = metrics_port
        self.http = http
        self.ws = ws
        self.templates = templates or RouteTemplates(app)
        self.clock = clock
        # Labelled children, looked up once: .labels() validates and locks on every call.
        # The keys are bounded (templates, known methods, statuses), so the caches are too.
        self._series: dict[tuple[str, str, int], _Series] = {}
        self._errors: dict[tuple[str, str, str], Any] = {}
        if ws is not None:
            self._ws_counts = {d: ws.messages.labels(d) for d in ("inbound", "outbound")}
            self._ws_sizes = {d: ws.message_size.labels(d) for d in ("inbound", "outbound")}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        on_metrics_port = self.metrics_port is not None and _local_port(scope) == self.metrics_port
        if scope["type"] == "http":
            if scope["path"] == self.metrics_path and (
                on_metrics_port or self.metrics_port is None
            ):
                assert self.metrics_route is not None
                scope["route"] = self.metrics_route
                # The endpoint itself, not Route.handle: its 405 for other methods would
                # be an exception out here, past the app's handlers (a 500).
                await self._http(scope, receive, send, self.metrics_route.app)
            elif on_metrics_port:
                await self._http(scope, receive, send, _NOT_ON_METRICS_PORT)
            else:
                await self._http(scope, receive, send, self.app)
        elif on_metrics_port:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
        elif scope["type"] == "websocket" and self.ws is not None:
            await self._websocket(scope, receive, send, self.ws)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
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

        self.http.in_flight.inc()
        try:
            await app(scope, receive, send_and_time)
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
            self.http.in_flight.dec()
            if not recorded:
                # Ended without a final body: a client that went away mid-stream (its
                # response had started: 499, not the 200 it never got in full), or an app
                # that never answered (the server then sends 500).
                self._record(
                    scope, CLIENT_CLOSED if status is not None else 500, self.clock() - started
                )

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
        series = self._series.get((path, method, status))
        if series is None:
            if status not in NOT_SERVED and method != OTHER_METHOD and path != UNMATCHED:
                # A route's server errors, at zero from its first answer on: a series born
                # with a burst of errors inside one scrape interval gives ``rate()`` no
                # increment to see, so the error ratio (and HighErrorRate) would stay at 0.
                for error_status in SERVER_ERROR_STATUSES:
                    self._series_for(path, method, error_status)
            series = self._series_for(path, method, status)
        series.requests.inc()
        series.duration.observe(duration, exemplar=request_exemplar())
        if series.is_error:
            marked = marked_error(scope) or default_error
            if marked is None:
                if series.unmarked_errors is None:  # created on first use: no idle zero series
                    series.unmarked_errors = self.http.errors.labels(
                        "http_error", str(status), path
                    )
                series.unmarked_errors.inc()
            else:
                key = (*marked, path)
                errors = self._errors.get(key)
                if errors is None:
                    errors = self._errors[key] = self.http.errors.labels(*key)
                errors.inc()

    def _series_for(self, path: str, method: str, status: int) -> _Series:
        series = self._series.get((path, method, status))
        if series is None:
            series = self._series[(path, method, status)] = _Series(
                self.http.requests.labels(path, method, str(status)),
                self.http.duration.labels(path, method),
                is_error=status >= 400 and status != CLIENT_CLOSED,
            )
        return series

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
