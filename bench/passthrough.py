"""The baseline a turn is measured against: a minimal pass-through proxy that relays a
chat completion (whole or streamed) to the upstream and does nothing else.
``python -m bench.passthrough PORT UPSTREAM_URL``.
"""

from __future__ import annotations

import sys

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from bench.fake_llm import KEEP_ALIVE_SECONDS


def app(upstream: str) -> Starlette:
    client = httpx.AsyncClient(
        base_url=upstream, timeout=60, limits=httpx.Limits(max_connections=1000)
    )

    async def completions(request: Request) -> Response:
        outgoing = client.build_request(
            "POST",
            "/v1/chat/completions",
            content=await request.body(),
            headers={"content-type": "application/json"},
        )
        answer = await client.send(outgoing, stream=True)
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
            background=BackgroundTask(answer.aclose),
        )

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


if __name__ == "__main__":
    port, upstream = sys.argv[1:3]
    uvicorn.run(
        app(upstream),
        host="127.0.0.1",
        port=int(port),
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
