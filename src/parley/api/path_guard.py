"""Paths with control characters match no route.

Starlette matches routes with Python regexes ending in ``$``, which also matches before a
trailing newline: ``GET /v1/conversations/%0A`` was answered as the conversation list.
"""

from __future__ import annotations

import re

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from parley.api.errors import error_body
from parley.observability import mark_error

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ControlCharacterPathMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and _CONTROL.search(scope["path"]):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            mark_error(scope, "not_found", "route_not_found")
            body = error_body("not_found", "route_not_found", "no route matches this path")
            await JSONResponse(body, status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)
