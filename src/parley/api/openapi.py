"""OpenAPI as Parley answers: one-line summaries from docstrings, 422 in Parley's error
shape (not FastAPI's ``HTTPValidationError``), and the API-key security schemes, so that
Swagger's Authorize button works."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


def customise_openapi(app: FastAPI, *, secured_prefix: str = "/v1/") -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            for path, item in schema["paths"].items():
                for operation in item.values():
                    _summary_from_docstring(operation)
                    _validation_error_in_our_shape(operation)
                    if path.startswith(secured_prefix):
                        operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
            components = schema.setdefault("components", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                components.get("schemas", {}).pop(unused, None)
            components["securitySchemes"] = SECURITY_SCHEMES
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _summary_from_docstring(operation: dict[str, Any]) -> None:
    description = operation.pop("description", "").strip()
    if description:
        operation["summary"] = description.splitlines()[0]


def _validation_error_in_our_shape(operation: dict[str, Any]) -> None:
    response = operation.get("responses", {}).get("422")
    if response is not None:
        response["description"] = "Invalid input; the message names the field"
        response["content"] = {"application/json": {"schema": _ERROR_BODY}}
