"""Refuse request bodies over a size limit, with the API's error shape.

Starlette's own limiter answers a declared oversized body in plain text, outside the
exception handlers; this one answers in JSON, and counts chunked bodies as they arrive.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley.api.errors import error_body
from parley.observability import mark_error


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

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

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the route while it reads the body: the exception
                    # handlers turn it into the usual JSON error.
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counting_receive, send)

    def _message(self) -> str:
        return f"request body is over the {self.max_bytes}-byte limit"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
