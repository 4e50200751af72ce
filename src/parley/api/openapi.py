"""OpenAPI as Parley answers: one-line summaries from docstrings, 422 in Parley's error
shape (not FastAPI's ``HTTPValidationError``), the 401 and 429 every key-guarded route
can answer, the API-key security schemes (so that Swagger's Authorize button works), and
the streamed turn's wire format: each SSE event and WebSocket frame as a schema."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from parley.api.stream_schemas import STREAM_SCHEMAS

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
_REF = "#/components/schemas/{model}"
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer"},
    }
}
_GUARD_RESPONSES = {
    "401": {
        "description": "No API key, or not a live one (unknown or revoked); never in"
        " development mode (no key exists)",
        "content": {"application/json": {"schema": _ERROR_BODY}},
    },
    "403": {
        "description": "The key's role may not do this (the operation's x-parley-roles)",
        "content": {"application/json": {"schema": _ERROR_BODY}},
    },
    "429": {
        "description": "Over the rate limit of this key (or address), or too many invalid "
        "keys from this address (too_many_requests, too_many_auth_failures); on a turn, "
        "also the key's budget spent (budget_exceeded, with details[0].resets_at) or its "
        "LLM tokens a minute used (too_many_tokens)",
        "headers": _RETRY_AFTER,
        "content": {"application/json": {"schema": _ERROR_BODY}},
    },
}
LIVE_PATHS = ("/v1/conversations/{conversation_id}/events", "/v1/handoffs/events")
MESSAGES_PATH = "/v1/conversations/{conversation_id}/messages"
WS_PATH = "/v1/conversations/{conversation_id}/ws"
DESCRIPTION = """Goal-driven LLM conversations: goals (instructions and an escalation
policy), conversations, and turns (a user message and the assistant's reply), answered
on three channels that tell the same turn:

- **HTTP**: `POST .../messages` answers with the whole turn.
- **SSE**: the same with `"stream": true` (or `Accept: text/event-stream`): the events
  `accepted` (the user's message, stored), `token`*, then one of `done`, `escalated`,
  `handoff` or `error`; each event's data is the schema `SseEvent` names for it.
- **WebSocket** at `/v1/conversations/{conversation_id}/ws`: the client sends
  `WsClientFrame`s (`message`, `ping`) and receives `WsServerFrame`s (`accepted`,
  `token`, `done`, `escalated`, `handoff`, `error`, `pong`, and the conversation's live
  `event`s), JSON text frames; see `x-websocket`.

Live events (`GET /v1/conversations/{conversation_id}/events`, `GET /v1/handoffs/events`):
SSE streams of `message` and `handoff` events, each event's data a `LiveEvent`, each with
an SSE id; a client reconnecting with `Last-Event-ID` gets what it missed, nothing twice.

Errors always have the shape `ErrorBody`. Once any API key exists (`parley keys create`,
`/v1/keys`, or `PARLEY_API_KEYS`), `/v1` needs a key (`Authorization: Bearer KEY` or
`X-API-Key`), and each operation lists the roles that may call it under
`x-parley-roles` (`client`: goals read, its own conversations; `agent`: reads every
conversation; `admin`: everything). Another owner's conversation answers 404. Requests
over the rate limit, a key's budget or its tokens a minute get 429 with `Retry-After`;
with the shared limiter (Redis) unreachable and set to fail closed, 503
`rate_limiter_unavailable` with `Retry-After`.
"""
WEBSOCKET = {
    WS_PATH: {
        "summary": "Chat over a WebSocket: one turn per message frame, streamed back",
        "authentication": "Authorization or X-API-Key header; from a browser, the "
        "subprotocols ['parley', 'bearer.KEY'] (the server answers 'parley')",
        "clientFrames": {"$ref": _REF.format(model="WsClientFrame")},
        "serverFrames": {"$ref": _REF.format(model="WsServerFrame")},
        "closeCodes": {
            "1008": "Refused at the handshake: no valid API key, a role that may not chat "
            "(client and admin may), too many invalid keys from this address, or an "
            "Origin not allowed (the reason says which)",
            "1009": "A frame over PARLEY_MAX_BODY_BYTES",
            "1013": "The database is unavailable: try again later",
            "4404": "No such conversation (or another owner's)",
        },
        "notes": "An error frame never closes the socket unless a close code follows. "
        "Each message frame takes a token from the same rate limit as an HTTP turn.",
    }
}


def customise_openapi(app: FastAPI, *, secured_prefix: str = "/v1/") -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=DESCRIPTION,
                routes=app.routes,
            )
            for path, item in schema["paths"].items():
                for operation in item.values():
                    _summary_from_docstring(operation)
                    _validation_error_in_our_shape(operation)
                    if path.startswith(secured_prefix):
                        operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
                        operation["responses"].update(_GUARD_RESPONSES)
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            components["securitySchemes"] = SECURITY_SCHEMES
            _add_stream_schemas(schemas)
            stream = schema["paths"][MESSAGES_PATH]["post"]["responses"]["200"]["content"]
            stream["text/event-stream"] = {"schema": {"$ref": _REF.format(model="SseEvent")}}
            for path in LIVE_PATHS:  # each event's data (its id and name: id, event)
                live = schema["paths"][path]["get"]["responses"]["200"]["content"]
                live["text/event-stream"] = {"schema": {"$ref": _REF.format(model="LiveEvent")}}
            schema["x-websocket"] = WEBSOCKET
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _add_stream_schemas(schemas: dict[str, Any]) -> None:
    for name, adapter in STREAM_SCHEMAS.items():
        union = adapter.json_schema(ref_template=_REF)
        for model, definition in union.pop("$defs", {}).items():
            schemas.setdefault(model, definition)  # FastAPI's own (response) schema wins
        schemas[name] = union


def _summary_from_docstring(operation: dict[str, Any]) -> None:
    description = operation.pop("description", "").strip()
    if description:
        operation["summary"] = description.splitlines()[0]


def _validation_error_in_our_shape(operation: dict[str, Any]) -> None:
    response = operation.get("responses", {}).get("422")
    if response is not None:
        response["description"] = "Invalid input; the message names the field"
        response["content"] = {"application/json": {"schema": _ERROR_BODY}}
