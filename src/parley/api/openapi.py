"""OpenAPI: each route's one-line docstring is its summary."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi


def use_docstrings_as_summaries(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            for item in schema["paths"].values():
                for operation in item.values():
                    description = operation.pop("description", "").strip()
                    if description:
                        operation["summary"] = description.splitlines()[0]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
