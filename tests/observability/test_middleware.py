"""HTTP request metrics: counted once, with the final status, timed to the last byte."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import BackgroundTasks, FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from starlette.types import Message, Scope

from parley.observability import (
    UNMATCHED,
    HttpMetrics,
    PrometheusMiddleware,
    WebSocketMetrics,
    mark_error,
    new_registry,
)
from tests.support.metrics import FakeClock, series, value


def _instrumented(app: FastAPI, clock: FakeClock | None = None) -> CollectorRegistry:
    registry = new_registry()
    kwargs: dict[str, Any] = {"clock": clock} if clock else {}
    app.add_middleware(
        PrometheusMiddleware,
        http=HttpMetrics.register(registry),
        ws=WebSocketMetrics.register(registry),
        **kwargs,
    )
    return registry


def test_requests_are_counted_exactly_once_with_their_status() -> None:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> int:
        return item_id

    registry = _instrumented(app)
    with TestClient(app) as client:
        for i in range(5):
            client.get(f"/items/{i}")
        client.get("/items/x")  # 422
    assert (
        value(registry, "http_requests_total", path="/items/{item_id}", method="GET", status="200")
        == 5
    )
    assert (
        value(registry, "http_requests_total", path="/items/{item_id}", method="GET", status="422")
        == 1
    )
    assert (
        value(
            registry, "http_request_duration_seconds_count", path="/items/{item_id}", method="GET"
        )
        == 6
    )
    assert (
        value(
            registry,
            "api_errors_total",
            error_type="http_error",
            error_code="422",
            path="/items/{item_id}",
        )
        == 1
    )


def test_a_burst_of_server_errors_between_two_scrapes_is_seen_by_rate() -> None:
    """Once a route has answered, its server-error statuses exist at zero: a series born
    at 120 (a burst of 502s within one scrape interval) has no first increment for
    ``rate()`` to see, and HighErrorRate stayed quiet through a whole LLM outage."""
    app = FastAPI()
    failing = False

    @app.post("/turns")
    async def turn() -> JSONResponse:
        return JSONResponse({}, status_code=502 if failing else 200)

    registry = _instrumented(app)
    with TestClient(app) as client:
        client.post("/turns")
        scraped = {
            status: registry.get_sample_value(
                "http_requests_total", {"path": "/turns", "method": "POST", "status": status}
            )
            for status in ("500", "502", "503", "504")
        }
        failing = True
        client.post("/turns")
    assert scraped == {"500": 0, "502": 0, "503": 0, "504": 0}
    assert value(registry, "http_requests_total", path="/turns", method="POST", status="502") == 1


def test_histogram_buckets_hold_known_durations() -> None:
    """A request that takes 0.3 s lands in the 0.5 bucket and above, not in 0.1."""
    clock = FakeClock()
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> str:
        clock.advance(0.3)
        return "done"

    registry = _instrumented(app, clock)
    with TestClient(app) as client:
        client.get("/slow")
    labels = {"path": "/slow", "method": "GET"}
    assert value(registry, "http_request_duration_seconds_bucket", le="0.1", **labels) == 0
    assert value(registry, "http_request_duration_seconds_bucket", le="0.5", **labels) == 1
    assert value(registry, "http_request_duration_seconds_bucket", le="+Inf", **labels) == 1
    assert value(registry, "http_request_duration_seconds_sum", **labels) == pytest.approx(0.3)


def test_streaming_response_is_timed_to_its_last_byte() -> None:
    clock = FakeClock()
    app = FastAPI()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                clock.advance(1.0)
                yield b"data: x\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    registry = _instrumented(app, clock)
    with TestClient(app) as client:
        assert client.get("/stream").text.count("data") == 4
    assert value(
        registry, "http_request_duration_seconds_sum", path="/stream", method="GET"
    ) == pytest.approx(4.0)


def test_background_tasks_are_not_billed_to_the_request() -> None:
    clock = FakeClock()
    app = FastAPI()

    def slow_job() -> None:
        clock.advance(100.0)

    @app.post("/jobs")
    async def submit(tasks: BackgroundTasks) -> str:
        clock.advance(0.02)
        tasks.add_task(slow_job)
        return "queued"

    registry = _instrumented(app, clock)
    with TestClient(app) as client:
        client.post("/jobs")
    assert clock.now > 1100  # the job did run
    assert value(
        registry, "http_request_duration_seconds_sum", path="/jobs", method="POST"
    ) == pytest.approx(0.02)


def test_exception_counts_as_500_with_an_error() -> None:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("no")

    registry = _instrumented(app)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/boom").status_code == 500
    assert value(registry, "http_requests_total", path="/boom", method="GET", status="500") == 1
    assert (
        value(
            registry,
            "api_errors_total",
            error_type="internal_error",
            error_code="unhandled_exception",
            path="/boom",
        )
        == 1
    )


def test_marked_errors_are_counted_with_their_type_and_code() -> None:
    app = FastAPI()

    @app.get("/teapot")
    async def teapot(request: Request) -> JSONResponse:
        mark_error(request.scope, "conflict", "goal_exists")
        return JSONResponse({}, status_code=409)

    registry = _instrumented(app)
    with TestClient(app) as client:
        client.get("/teapot")
    assert (
        value(
            registry,
            "api_errors_total",
            error_type="conflict",
            error_code="goal_exists",
            path="/teapot",
        )
        == 1
    )


def test_unknown_paths_and_methods_share_one_label_value() -> None:
    app = FastAPI()

    @app.get("/known")
    async def known() -> str:
        return "k"

    registry = _instrumented(app)
    with TestClient(app) as client:
        for i in range(20):
            client.get(f"/unknown/{i}")
            client.request(f"BREW{i}", "/known")
    labels = {(s["path"], s["method"], s["status"]) for s in series(registry, "http_requests")}
    assert labels == {(UNMATCHED, "GET", "404"), ("/known", "other", "405")}


async def test_client_disconnect_before_the_response_is_counted() -> None:
    """A client that leaves mid-request is still counted, as 499."""
    app = FastAPI()
    started = asyncio.Event()

    @app.get("/wait")
    async def wait() -> str:
        started.set()
        await asyncio.sleep(10)
        return "late"

    registry = _instrumented(app)
    middleware = app.build_middleware_stack()
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/wait",
        "raw_path": b"/wait",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("t", 80),
        "client": ("c", 1),
        "app": app,
    }

    async def receive() -> Message:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    task: asyncio.Future[None] = asyncio.ensure_future(middleware(scope, receive, send))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert value(registry, "http_requests_total", path="/wait", method="GET", status="499") == 1
    # Not an API error: no such series was ever made.
    assert (
        value(registry, "api_errors_total", error_type="http_error", error_code="499", path="/wait")
        is None
    )


def test_websocket_scopes_are_not_http_requests() -> None:
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    registry = _instrumented(app)
    with TestClient(app) as client, client.websocket_connect("/ws") as socket:
        socket.receive_text()
    assert series(registry, "http_requests") == []
    assert value(registry, "ws_messages_total", direction="outbound") == 1
