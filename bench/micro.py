"""Microbenchmarks: the LLM stream wrapper per chunk and per stream, WebSocket per message."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, WebSocket
from starlette.types import ASGIApp, Message

from bench.stats import median, paired_overheads, spread
from parley.llm import ChatMessage, ChatRequest, Completion, LLMGateway, Role, StreamChunk, Usage
from parley.observability import LLMInstrumentation, LLMMetrics, instrument_app, new_registry
from parley.telemetry import LLM_ERROR_TYPES, LLMTelemetry

REQUEST = ChatRequest("llama-3.1-8b-instant", (ChatMessage(Role.USER, "hi"),))


class InstantProvider:
    """Yields ``chunks`` content chunks with no delay: all the time measured is overhead."""

    name = "instant"

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self._content = [StreamChunk(content=" tok") for _ in range(chunks)]
        self._last = StreamChunk(usage=Usage(10, chunks, 10 + chunks), finish_reason="stop")

    async def complete(self, request: ChatRequest) -> Completion:
        raise NotImplementedError

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        yield StreamChunk()
        for chunk in self._content:
            yield chunk
        yield self._last

    async def aclose(self) -> None:
        return None


@dataclass
class Result:
    name: str
    overhead_us: float
    spread_us: tuple[float, float]
    unit: str


def _gateway(provider: InstantProvider) -> LLMGateway:
    instrumentation = LLMInstrumentation(
        LLMMetrics.register(new_registry()),
        models=("llama-3.1-8b-instant",),
        error_types=LLM_ERROR_TYPES,
        logger=_SilentLogger(),
    )
    return LLMGateway(provider, observers=[LLMTelemetry(instrumentation)])


class _SilentLogger:
    """Log calls cost what the logging configuration makes them cost; keep them out."""

    def bind(self, **_: Any) -> _SilentLogger:
        return self

    def __getattr__(self, _: str) -> Any:
        return lambda *args, **kwargs: None


async def _drain(stream: AsyncIterator[StreamChunk]) -> None:
    async for _ in stream:
        pass


async def _time_streams(make: Any, streams: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(streams):
        await _drain(make())
    return (time.perf_counter_ns() - started) / streams / 1000


async def stream_wrapper(rounds: int = 15, chunks: int = 500, streams: int = 40) -> list[Result]:
    """Per chunk: long streams, (wrapped - raw) / chunks. Per stream: one-chunk streams."""
    results = []
    for label, n, count, unit in (
        ("llm stream wrapper, per chunk", chunks, streams, "chunk"),
        ("llm stream wrapper, per stream", 1, streams * 20, "stream"),
    ):
        provider = InstantProvider(n)
        gateway = _gateway(provider)
        raw: list[float] = []
        wrapped: list[float] = []
        await _time_streams(lambda g=gateway: g.stream(REQUEST), count)  # warm-up
        for _ in range(rounds):
            gc.collect()
            raw.append(await _time_streams(lambda p=provider: p.stream(REQUEST), count))
            wrapped.append(await _time_streams(lambda g=gateway: g.stream(REQUEST), count))
        per = [o / (n if unit == "chunk" else 1) for o in paired_overheads(wrapped, raw)]
        results.append(Result(label, median(per), spread(per), unit))
    return results


def _ws_app(instrumented: bool) -> ASGIApp:
    app = FastAPI()

    @app.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            await websocket.send_text(message["text"])

    if instrumented:
        instrument_app(app)
    return app


async def _ws_session(app: ASGIApp, messages: int) -> float:
    """Microseconds per message (one in, one out) over one connection."""
    inbox: list[Message] = [{"type": "websocket.connect"}]
    inbox += [{"type": "websocket.receive", "text": '{"type": "ping"}'}] * messages
    inbox.append({"type": "websocket.disconnect", "code": 1000})
    position = 0

    async def receive() -> Message:
        nonlocal position
        message = inbox[position]
        position += 1
        return message

    async def send(message: Message) -> None:
        return None

    scope = {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "scheme": "ws",
        "server": ("b", 80),
        "client": ("c", 1),
        "subprotocols": [],
        "asgi": {"version": "3.0"},
        "state": {},
    }
    started = time.perf_counter_ns()
    await app(scope, receive, send)
    return (time.perf_counter_ns() - started) / messages / 1000


async def websocket(rounds: int = 15, messages: int = 2000) -> list[Result]:
    bare, instrumented = _ws_app(False), _ws_app(True)
    await _ws_session(bare, 10)
    await _ws_session(instrumented, 10)
    plain: list[float] = []
    measured: list[float] = []
    for _ in range(rounds):
        gc.collect()
        plain.append(await _ws_session(bare, messages))
        measured.append(await _ws_session(instrumented, messages))
    overheads = paired_overheads(measured, plain)
    return [
        Result("websocket, per message (in + out)", median(overheads), spread(overheads), "message")
    ]


def report(results: list[Result]) -> list[str]:
    lines = ["Microbenchmarks: overhead (µs) against the uninstrumented path, median [IQR]"]
    for r in results:
        low, high = r.spread_us
        lines.append(
            f"    {r.name:<36} {r.overhead_us:7.3f} [{low:7.3f}, {high:7.3f}] per {r.unit}"
        )
    return lines


async def run(quick: bool = False) -> list[Result]:
    if quick:
        return [*await stream_wrapper(rounds=2, chunks=20, streams=3), *await websocket(2, 20)]
    return [*await stream_wrapper(), *await websocket()]


if __name__ == "__main__":
    print("\n".join(report(asyncio.run(run()))))
