"""Swagger UI and ReDoc from assets Parley serves itself (the pinned ``fastapi-offline``
package), never from a CDN: the API docs work offline and on networks that block CDNs.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def serve_docs(app: FastAPI) -> None:
    """``/docs`` and ``/redoc`` for an app created with ``docs_url=None, redoc_url=None``,
    and ``/``, which points at them and the rest."""
    assets = files("fastapi_offline") / "static"
    app.mount(ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )

    @app.get("/", include_in_schema=False)
    async def index() -> dict[str, str]:
        # The address `make run` prints: say where things are, not 404.
        return {
            "service": app.title,
            "version": app.version,
            "docs": "/docs",
            "openapi": openapi_url,
            "api": "/v1",
            "metrics": "/metrics",
            "agent_console": "/agent/",
            "health": "/healthz",
            "ready": "/readyz",
        }

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
