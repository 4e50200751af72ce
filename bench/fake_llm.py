"""A Groq-compatible upstream for the turn benchmark, with set timing:
``python -m bench.fake_llm PORT TTFT_SECONDS TOKENS TOKEN_DELAY_SECONDS``.

Answers ``POST /openai/v1/chat/completions`` (Groq's path) and ``/v1/chat/completions``
(the OpenAI path LiteLLM and the pass-through call), whole or streamed, with usage on the
last chunk as Groq sends it. Its chunks are built once: the upstream must cost little, so
the proxies in front of it are what is measured.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from parley.config import Settings

# Each server of the turn benchmark keeps an idle connection as long as `parley serve`
# does, longer than the clients' pools keep one (httpx: 5 s). With uvicorn's 5 s, a
# client reusing a connection idle for 4.9 s met the server closing it: a reset stream.
KEEP_ALIVE_SECONDS: int = Settings.model_fields["keep_alive_seconds"].default


def _chunk(delta: dict[str, str], finish: str | None = None, **extra: object) -> bytes:
    payload = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "llama-3.1-8b-instant",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        **extra,
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


def app(ttft: float, tokens: int, delay: float) -> Starlette:
    usage = {"prompt_tokens": 20, "completion_tokens": tokens, "total_tokens": 20 + tokens}
    first = _chunk({"role": "assistant", "content": ""})
    token = _chunk({"content": " word"})
    last = _chunk({}, "stop", x_groq={"id": "req_bench", "usage": usage}, usage=usage)
    whole = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "llama-3.1-8b-instant",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " word" * tokens},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage,
    }

    async def stream() -> AsyncIterator[bytes]:
        yield first
        await asyncio.sleep(ttft)
        for index in range(tokens):
            if index and delay:
                await asyncio.sleep(delay)
            yield token
        yield last
        yield b"data: [DONE]\n\n"

    async def completions(request: Request) -> Response:
        body = await request.json()
        if body.get("stream"):
            return StreamingResponse(stream(), media_type="text/event-stream")
        await asyncio.sleep(ttft + delay * tokens)
        return JSONResponse(whole)

    return Starlette(
        routes=[
            Route("/openai/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/chat/completions", completions, methods=["POST"]),
        ]
    )


if __name__ == "__main__":
    port, ttft, tokens, delay = sys.argv[1:5]
    uvicorn.run(
        app(float(ttft), int(tokens), float(delay)),
        host="127.0.0.1",
        port=int(port),
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
