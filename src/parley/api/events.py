"""The live streams over SSE: ``GET /v1/conversations/{id}/events`` (one conversation's
handoff and the messages written while an agent has it, for its customer and the agents)
and ``GET /v1/handoffs/events`` (the whole queue, for agents). Each event carries an
``id``; a client that reconnects with ``Last-Event-ID`` (or ``?last_event_id=``) gets what
it missed, nothing twice, from any replica."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Query, Request
from fastapi.sse import EventSourceResponse, format_sse_event

from parley.api.auth import readmit, roles
from parley.api.deps import LiveDep, PrincipalDep
from parley.api.errors import domain_status, error_body
from parley.api.schemas import ErrorBody, LiveEventOut
from parley.domain.errors import DomainError
from parley.domain.keys import Role
from parley.domain.live import LiveItem
from parley.domain.models import LiveEvent

conversation_events = APIRouter(prefix="/conversations", tags=["events"])
queue_events = APIRouter(prefix="/handoffs", tags=["events"])

_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "An SSE stream of message and handoff events, each with an id; a "
        "comment line (heartbeat) when nothing happens for a while; an error event ends "
        "it (the database away, or the key revoked since the stream began: 401)",
    },
    503: {
        "model": ErrorBody,
        "description": "This server serves as many streams as it may (too_many_streams), "
        "or is shutting down: retry after Retry-After",
    },
}
_MAX_ID = 2**63 - 1
# Not cached, and not buffered by a proxy (nginx holds a response back by default).
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_HEARTBEAT = b": heartbeat\n\n"

LastEventHeader = Annotated[
    int | None,
    Header(
        alias="Last-Event-ID",
        ge=0,
        le=_MAX_ID,
        description="The id of the last event seen: the stream resumes after it",
    ),
]
LastEventQuery = Annotated[
    int | None,
    Query(ge=0, le=_MAX_ID, description="As Last-Event-ID, for clients that cannot set it"),
]


def live_payload(event: LiveEvent) -> dict[str, Any]:
    """An event as every channel sends it (SSE data, WebSocket frame)."""
    return LiveEventOut.model_validate(event).model_dump(mode="json")


@conversation_events.get(
    "/{conversation_id}/events",
    responses={404: {"model": ErrorBody, "description": "No such conversation"}, **_STREAM},
    **roles(Role.CLIENT, Role.AGENT, Role.ADMIN),
)
async def follow_conversation(
    request: Request,
    conversation_id: uuid.UUID,
    live: LiveDep,
    principal: PrincipalDep,
    last_event_header: LastEventHeader = None,
    last_event_id: LastEventQuery = None,
) -> EventSourceResponse:
    """Follow a conversation: its handoff's steps and the messages written during it.

    Event ids are the conversation's event numbers (``seq``)."""
    structlog.contextvars.bind_contextvars(conversation_id=str(conversation_id))
    after = last_event_header if last_event_header is not None else last_event_id
    items = await live.conversation(conversation_id, principal, after)
    encoded = _encoded(request, items, lambda event: event.seq)
    return EventSourceResponse(encoded, headers=_HEADERS)


@queue_events.get(
    "/events",
    responses=_STREAM,
    **roles(Role.AGENT, Role.ADMIN),
)
async def follow_queue(
    request: Request,
    live: LiveDep,
    last_event_header: LastEventHeader = None,
    last_event_id: LastEventQuery = None,
) -> EventSourceResponse:
    """Follow the handoff queue: escalations, claims, messages and resolutions.

    Event ids are the events' ids among every conversation's (``id``)."""
    after = last_event_header if last_event_header is not None else last_event_id
    items = await live.queue(after)
    return EventSourceResponse(_encoded(request, items, lambda event: event.id), headers=_HEADERS)


async def _encoded(
    request: Request, items: AsyncGenerator[LiveItem, None], stream_id: Any
) -> AsyncIterator[bytes]:
    try:
        # Closed with the response (the client gone): its subscription ends at once.
        async with aclosing(items):
            async for item in items:
                await readmit(request)  # a key revoked since: the stream ends (401)
                if item is None:
                    yield _HEARTBEAT
                    continue
                data = json.dumps(live_payload(item))
                event_id = str(stream_id(item))
                yield format_sse_event(event=item.kind.value, data_str=data, id=event_id)
    except DomainError as error:  # the database away, the key revoked: say so, end it
        status, error_type = domain_status(error)
        body = error_body(error_type, error.code, error.message, None)
        yield format_sse_event(event="error", data_str=json.dumps({**body, "status": status}))
