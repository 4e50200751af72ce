"""A Groq-compatible HTTP server for tests: OpenAI wire format at /openai/v1/chat/completions.

Each request takes the next scripted behaviour (a normal reply when none is left), so
tests can stage rate limits, server errors, slow answers, malformed chunks and
connections cut mid-stream, and then look at what the SDK actually sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Reply:
    content: str = "Hello from the test server."
    prompt_tokens: int = 11
    headers: dict[str, str] = field(default_factory=dict)
    # Streams only: where usage goes on the last chunk ("x_groq", "usage" or None).
    usage_field: str | None = "x_groq"
    delay_seconds: float = 0.0
    # Of prompt_tokens, those Groq served from its prompt cache: reported as it reports
    # them, usage.prompt_tokens_details.cached_tokens (None: no details at all).
    cached_tokens: int | None = None

    @property
    def pieces(self) -> list[str]:
        words = self.content.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    @property
    def usage(self) -> dict[str, Any]:
        completion = len(self.pieces)
        usage: dict[str, Any] = {
            "queue_time": 0.02,
            "prompt_tokens": self.prompt_tokens,
            "prompt_time": 0.004,
            "completion_tokens": completion,
            "completion_time": 0.01,
            "total_tokens": self.prompt_tokens + completion,
            "total_time": 0.014,
        }
        if self.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return usage


@dataclass
class Status:
    code: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "scripted failure"


@dataclass
class MalformedChunk:
    """A stream whose second chunk is not JSON."""


@dataclass
class CutMidStream:
    """A stream that sends ``after`` content chunks and then drops the connection."""

    after: int = 2


@dataclass
class StallMidStream:
    """A stream that sends ``after`` content chunks, then nothing for ``seconds``."""

    after: int = 1
    seconds: float = 10.0


@dataclass
class ErrorEvent:
    """A stream that sends one content chunk, then an SSE ``error`` event."""


@dataclass
class WrongShape:
    """A stream whose second chunk is JSON, but not shaped as a chunk."""


Behaviour = (
    Reply | Status | MalformedChunk | CutMidStream | StallMidStream | ErrorEvent | WrongShape
)


class _CutError(Exception):
    pass


class GroqTestServer:
    def __init__(self) -> None:
        self.script: deque[Behaviour] = deque()
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[Route("/openai/v1/chat/completions", self._completions, methods=["POST"])]
        )

    def then(self, *behaviours: Behaviour) -> GroqTestServer:
        self.script.extend(behaviours)
        return self

    async def _completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"body": body, "headers": dict(request.headers)})
        behaviour = self.script.popleft() if self.script else Reply()
        if isinstance(behaviour, Status):
            return JSONResponse(
                {"error": {"message": behaviour.message, "type": "test_error"}},
                status_code=behaviour.code,
                headers=behaviour.headers,
            )
        model = body.get("model", "test-model")
        if isinstance(behaviour, Reply) and behaviour.delay_seconds:
            await asyncio.sleep(behaviour.delay_seconds)
        if not body.get("stream"):
            assert isinstance(behaviour, Reply), "only Reply makes sense without streaming"
            return JSONResponse(_completion(model, behaviour), headers=behaviour.headers)
        headers = behaviour.headers if isinstance(behaviour, Reply) else {}
        return StreamingResponse(
            _stream(model, behaviour), media_type="text/event-stream", headers=headers
        )


def _completion(model: str, reply: Reply) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": reply.usage,
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    payload = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        **extra,
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


async def _stream(model: str, behaviour: Behaviour) -> AsyncIterator[bytes]:
    yield _chunk(model, {"role": "assistant", "content": ""})
    if isinstance(behaviour, MalformedChunk):
        yield b"data: {this is not json\n\n"
        return
    if isinstance(behaviour, WrongShape):
        yield b'data: {"choices": [{"delta": {"content": 42}}]}\n\n'
        return
    if isinstance(behaviour, ErrorEvent):
        yield _chunk(model, {"content": "Hello"})
        yield b'event: error\ndata: {"error": {"message": "overloaded"}}\n\n'
        return
    reply = behaviour if isinstance(behaviour, Reply) else Reply()
    for index, piece in enumerate(reply.pieces):
        if isinstance(behaviour, CutMidStream) and index == behaviour.after:
            await asyncio.sleep(0.05)  # let the chunks already sent reach the client
            raise _CutError("connection cut by the test server")
        if isinstance(behaviour, StallMidStream) and index == behaviour.after:
            await asyncio.sleep(behaviour.seconds)
        yield _chunk(model, {"content": piece})
    extra: dict[str, Any] = {}
    if reply.usage_field == "x_groq":
        extra["x_groq"] = {"id": "req_test", "usage": reply.usage}
    elif reply.usage_field == "usage":
        extra["usage"] = reply.usage
    yield _chunk(model, {}, "stop", **extra)
    yield b"data: [DONE]\n\n"
