"""Refuse request bodies over a size limit, or slower than a time limit, in the API's
error shape.

Starlette's own limiter answers a declared oversized body in plain text, outside the
exception handlers; this one answers in JSON, and counts chunked bodies as they arrive.
A body that does not arrive whole within the time limit is a 408: a client that sends
headers and then trickles (or nothing) no longer holds a request open forever.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley import defaults
from parley.api.errors import error_body
from parley.observability import mark_error


class BodySizeLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        timeout_seconds: float = defaults.BODY_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            mark_error(scope, "payload_too_large", "body_too_large")
            response = JSONResponse(
                error_body("payload_too_large", "body_too_large", self._message()),
                status_code=413,
            )
            await response(scope, receive, send)
            return
        received = 0
        body_done = False
        deadline = asyncio.get_running_loop().time() + self.timeout_seconds

        async def counting_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # later reads wait for the disconnect: no deadline on those
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                # Raised inside the route while it reads the body, as the 413 below: the
                # exception handlers turn it into the usual JSON error.
                raise HTTPException(408, self._late()) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counting_receive, send)

    def _message(self) -> str:
        return f"request body is over the {self.max_bytes}-byte limit"

    def _late(self) -> str:
        return f"request body did not arrive within {self.timeout_seconds:g} seconds"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
