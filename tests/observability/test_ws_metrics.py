"""WebSocket metrics through uvicorn: the gauge returns to its true value however sockets end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from parley.app import create_app
from parley.observability import instrument_app
from tests.conftest import make_settings
from tests.support.live_server import LiveServer
from tests.support.metrics import value

pytestmark = pytest.mark.integration


def _app() -> tuple[FastAPI, CollectorRegistry]:
    app = FastAPI()

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                if text == "crash":
                    raise RuntimeError("handler bug")
                if text == "bye":
                    await websocket.close()
                    return
                await websocket.send_text(text.upper())
        except WebSocketDisconnect:
            return

    @app.websocket("/refuse")
    async def refuse(websocket: WebSocket) -> None:
        await websocket.close(code=1008)

    return app, instrument_app(app).registry


@pytest.fixture
def served() -> Iterator[tuple[LiveServer, CollectorRegistry]]:
    app, registry = _app()
    with LiveServer(app) as server:
        yield server, registry


async def _settles(registry: CollectorRegistry, expected: float) -> float | None:
    for _ in range(200):
        current = value(registry, "ws_connections_active")
        if current == expected:
            return current
        await asyncio.sleep(0.01)
    return value(registry, "ws_connections_active")


async def test_gauge_follows_open_sockets_and_messages_are_counted(
    served: tuple[LiveServer, CollectorRegistry],
) -> None:
    server, registry = served
    url = f"{server.ws_url}/echo"
    async with connect(url) as first, connect(url) as second:
        assert await _settles(registry, 2) == 2
        await first.send("hello")
        assert await first.recv() == "HELLO"
        await second.send("x")
        await second.recv()
        await first.send("bye")
        with pytest.raises(ConnectionClosed):
            await first.recv()
        assert await _settles(registry, 1) == 1
    assert await _settles(registry, 0) == 0
    assert value(registry, "ws_messages_total", direction="inbound") == 3
    assert value(registry, "ws_messages_total", direction="outbound") == 2
    assert value(registry, "ws_message_size_bytes_sum", direction="inbound") == len("hello") + 1 + 3


async def test_gauge_recovers_when_the_client_vanishes(
    served: tuple[LiveServer, CollectorRegistry],
) -> None:
    """No close frame at all: the TCP connection just drops."""
    server, registry = served
    async with connect(f"{server.ws_url}/echo") as socket:
        assert await _settles(registry, 1) == 1
        socket.transport.abort()
    assert await _settles(registry, 0) == 0


async def test_gauge_recovers_when_the_handler_crashes(
    served: tuple[LiveServer, CollectorRegistry],
) -> None:
    server, registry = served
    async with connect(f"{server.ws_url}/echo") as socket:
        await socket.send("crash")
        with pytest.raises(ConnectionClosed):
            await socket.recv()
    assert await _settles(registry, 0) == 0


async def test_refused_sockets_are_never_counted_as_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every value the gauge takes is seen, not only where it settles: a socket counted
    open and then closed would end at 0 too."""
    app, registry = _app()
    gauge = app.state.instrumentation.ws.connections
    counted = gauge.inc
    seen: list[float | None] = []

    def inc(amount: float = 1) -> None:
        counted(amount)
        seen.append(registry.get_sample_value("ws_connections_active"))

    monkeypatch.setattr(gauge, "inc", inc)
    with LiveServer(app) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{server.ws_url}/refuse"):
                pass
        assert refused.value.response.status_code == 403  # refused at the handshake
        async with connect(f"{server.ws_url}/echo") as socket:  # the gauge does count
            await socket.send("x")
            await socket.recv()
    assert seen == [1]


async def test_parley_chat_counts_every_frame(tmp_path: Path) -> None:
    """In the service: one inbound frame, and outbound accepted + tokens + done."""
    app = create_app(make_settings(tmp_path))
    registry = app.state.instrumentation.registry
    with LiveServer(app) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            await http.post("/v1/goals/", json={"id": "g", "name": "G", "instructions": "Help."})
            conversation = (await http.post("/v1/conversations/", json={"goal_id": "g"})).json()
        async with connect(f"{server.ws_url}/v1/conversations/{conversation['id']}/ws") as socket:
            await socket.send(json.dumps({"type": "message", "content": "hi"}))
            frames: list[dict[str, Any]] = []
            while not frames or frames[-1]["type"] != "done":
                frames.append(json.loads(await socket.recv()))
        assert await _settles(registry, 0) == 0
    assert value(registry, "ws_messages_total", direction="inbound") == 1
    assert value(registry, "ws_messages_total", direction="outbound") == len(frames)
