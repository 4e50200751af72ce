"""The agent console at ``/agent``: static files shipped in the package (``api/agent``),
no build step and no CDN, so it works offline. It talks to the API like any client, with
an agent key (or, in development mode, an agent's name)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

CONSOLE = "/agent"
# The page loads only its own files and talks only to its own origin.
_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class _ConsoleFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Content-Security-Policy"] = _POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-cache"  # a new version shows at once
        return response


def serve_console(app: FastAPI) -> None:
    directory = files("parley.api") / "agent"
    app.mount(f"{CONSOLE}/", _ConsoleFiles(directory=str(directory), html=True), name="agent")

    @app.get(CONSOLE, include_in_schema=False)
    async def console() -> RedirectResponse:
        return RedirectResponse(f"{CONSOLE}/")
