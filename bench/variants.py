"""The instrumentation variants, each applied to a fresh copy of the benchmark app."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram

from bench.app import build_app
from parley.observability import instrument_app


def bare() -> FastAPI:
    return build_app()


def parley() -> FastAPI:
    app = build_app()
    instrument_app(app)
    return app


def instrumentator() -> FastAPI:
    from prometheus_fastapi_instrumentator import Instrumentator

    app = build_app()
    Instrumentator(registry=CollectorRegistry()).instrument(app).expose(app)
    return app


def starlette_exporter() -> FastAPI:
    from starlette_exporter import PrometheusMiddleware, handle_metrics

    app = build_app()
    app.add_middleware(PrometheusMiddleware, group_paths=True, app_name="bench", prefix="bench")
    app.add_route("/metrics", handle_metrics)
    return app


def guideline() -> FastAPI:
    """The guideline's section 5: ``@app.middleware("http")`` (its label bug fixed so it runs)."""
    app = build_app()
    registry = CollectorRegistry()
    requests = Counter(
        "http_requests_total",
        "Total HTTP requests",
        ["path", "method", "status"],
        registry=registry,
    )
    duration = Histogram(
        "http_request_duration_seconds",
        "HTTP request duration",
        ["path", "method"],
        buckets=[0.01, 0.05, 0.1, 0.5, 1, 2, 5],
        registry=registry,
    )

    @app.middleware("http")
    async def metrics_middleware(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.time()
        response = await call_next(request)
        elapsed = time.time() - start
        duration.labels(path=request.url.path, method=request.method).observe(elapsed)
        requests.labels(
            path=request.url.path, method=request.method, status=str(response.status_code)
        ).inc()
        return response

    return app


VARIANTS: dict[str, Callable[[], FastAPI]] = {
    "bare": bare,
    "parley": parley,
    "instrumentator": instrumentator,
    "starlette_exporter": starlette_exporter,
    "guideline": guideline,
}
PEERS = ("instrumentator", "starlette_exporter", "guideline")
