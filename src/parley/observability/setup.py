"""``instrument_app``: HTTP and WebSocket metrics and ``/metrics`` on any Starlette app."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Route

from parley.observability import multiprocess
from parley.observability.catalogue import (
    HttpMetrics,
    LabelGuardMetrics,
    WebSocketMetrics,
    new_registry,
)
from parley.observability.exposition import MetricsEndpoint, ScrapeHook
from parley.observability.middleware import PrometheusMiddleware


@dataclass(frozen=True, slots=True)
class Instrumentation:
    """What ``instrument_app`` registered, for callers that add metrics of their own."""

    registry: CollectorRegistry
    http: HttpMetrics
    ws: WebSocketMetrics | None
    guard: LabelGuardMetrics
    endpoint: MetricsEndpoint
    metrics_path: str


def instrument_app(
    app: Starlette,
    *,
    registry: CollectorRegistry | None = None,
    metrics_path: str = "/metrics",
    token: str | None = None,
    websockets: bool = True,
    scrape_hooks: Sequence[ScrapeHook] = (),
    cache_seconds: float = 0.0,
    metrics_port: int | None = None,
) -> Instrumentation:
    """Add the metrics middleware, which also serves ``/metrics``, to ``app`` in one call.

    A fresh registry (with the process and platform collectors) is made unless one is
    given. With ``metrics_port``, ``/metrics`` answers only on connections to that port
    (which must be one the server listens on), and that port answers nothing else. Call it
    before the app starts serving; the result is also kept in
    ``app.state.instrumentation``.
    """
    if registry is None:
        # Per-process collectors are meaningless once workers' values are merged.
        registry = new_registry(process_collectors=multiprocess.directory() is None)
    http = HttpMetrics.register(registry)
    ws = WebSocketMetrics.register(registry) if websockets else None
    guard = LabelGuardMetrics.register(registry)
    endpoint = MetricsEndpoint(
        registry, token=token, hooks=scrape_hooks, cache_seconds=cache_seconds
    )
    route = Route(metrics_path, endpoint.handle, methods=["GET"], include_in_schema=False)
    app.add_middleware(
        PrometheusMiddleware, http=http, ws=ws, metrics_route=route, metrics_port=metrics_port
    )
    instrumentation = Instrumentation(registry, http, ws, guard, endpoint, metrics_path)
    app.state.instrumentation = instrumentation
    return instrumentation
