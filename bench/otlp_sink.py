"""``python -m bench.otlp_sink PORT``: an OTLP/HTTP endpoint that takes every export and
keeps nothing, so the tracing benchmark measures Parley's side only (in its own process,
its CPU is not Parley's)."""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def _traces(request: Request) -> Response:
    await request.body()
    return Response(b"", media_type="application/x-protobuf")


async def _ready(request: Request) -> Response:
    return Response("ok")


app = Starlette(routes=[Route("/v1/traces", _traces, methods=["POST"]), Route("/", _ready)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
