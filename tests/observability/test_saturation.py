"""Saturation gauges an on-call needs: requests in flight, event-loop lag, database
connections in use."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import create_engine, text
from starlette.types import Message, Receive, Scope, Send

from parley.observability.catalogue import DatabaseMetrics, HttpMetrics
from parley.observability.loop_lag import watch_event_loop_lag
from parley.observability.middleware import PrometheusMiddleware
from parley.observability.sqlalchemy import instrument_engine
from tests.support.metrics import value


async def test_requests_in_flight_count_the_requests_being_served() -> None:
    registry = CollectorRegistry()
    release = asyncio.Event()
    all_in = asyncio.Event()
    seen: list[float | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(value(registry, "http_requests_in_flight"))
        if len(seen) == 3:
            all_in.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    middleware = PrometheusMiddleware(app, http=HttpMetrics.register(registry))
    scope: Scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        pass

    requests = [asyncio.create_task(middleware(dict(scope), receive, send)) for _ in range(3)]
    async with asyncio.timeout(10):
        await all_in.wait()
    assert value(registry, "http_requests_in_flight") == 3
    release.set()
    await asyncio.gather(*requests)
    assert value(registry, "http_requests_in_flight") == 0


async def test_event_loop_lag_shows_a_blocked_loop() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("event_loop_lag_seconds", "lag", registry=registry)
    watcher = asyncio.create_task(watch_event_loop_lag(gauge, interval_seconds=0.01))
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # blocks the loop, as a sync call in a handler would  # noqa: ASYNC251
        async with asyncio.timeout(10):
            # Polled: the gauge is what is being tested, set by the watcher on its own.
            # Before the first measurement the gauge reads 0: no lag seen yet.
            while (registry.get_sample_value("event_loop_lag_seconds") or 0) < 0.2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:  # stopped and awaited even when the wait times out: no task left running
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def test_database_connections_in_use_follow_the_pool(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = DatabaseMetrics.register(registry)
    engine = create_engine(f"sqlite:///{tmp_path / 'pool.db'}")
    instrument_engine(engine, metrics)
    with engine.connect() as first, engine.connect() as second:
        first.execute(text("SELECT 1"))
        second.execute(text("SELECT 1"))
        assert value(registry, "db_connections_in_use") == 2
    assert value(registry, "db_connections_in_use") == 0
    engine.dispose()
