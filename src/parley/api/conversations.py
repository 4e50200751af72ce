"""``/v1/conversations``: create, read, list, close, escalate, and post messages."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse

from parley.api.auth import roles
from parley.api.deps import (
    ChatDep,
    ConversationsDep,
    HandoffsDep,
    PrincipalDep,
    TurnTelemetryDep,
)
from parley.api.errors import error_response
from parley.api.schemas import (
    AgentMessageOut,
    CloseBody,
    ConversationCreate,
    ConversationDetail,
    ConversationOut,
    ConversationPage,
    ErrorBody,
    EscalationCreate,
    MessageCreate,
    MessageOut,
    StorableText,
    TurnOut,
)
from parley.api.turn_encoding import fold_turn, sse_event
from parley.domain.errors import DomainError
from parley.domain.keys import Role
from parley.domain.models import ConversationStatus
from parley.domain.paging import MAX_CURSOR_LENGTH, MAX_SEQ
from parley.domain.turns import RunningTurn, TurnEvent, TurnTimings

router = APIRouter(prefix="/conversations", tags=["conversations"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such conversation"}
}
_STATE_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorBody,
        "description": "Conversation escalated (with no handoff open) or closed",
    }
}
_LLM_FAILED: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": "The LLM failed; the user message is stored"}
    for code in (502, 503, 504)
}


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    responses={404: {"model": ErrorBody, "description": "No such goal"}},
    **roles(Role.CLIENT, Role.ADMIN),
)
async def create_conversation(
    body: ConversationCreate, conversations: ConversationsDep, principal: PrincipalDep
) -> ConversationOut:
    """Start a conversation for a goal, owned by the calling key."""
    conversation = await conversations.create(body.goal_id, body.metadata, principal.name)
    return ConversationOut.model_validate(conversation)


@router.get("/", **roles(Role.CLIENT, Role.AGENT, Role.ADMIN))
async def list_conversations(
    conversations: ConversationsDep,
    principal: PrincipalDep,
    goal_id: StorableText | None = None,
    status: ConversationStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
) -> ConversationPage:
    """List conversations, newest first, filtered by goal and status; pass next_cursor on.
    A client key lists the conversations it created."""
    page = await conversations.page(
        goal_id=goal_id,
        status=status,
        limit=limit,
        cursor=cursor,
        scope=principal.owner_scope,
    )
    return ConversationPage(
        items=[ConversationOut.model_validate(c) for c in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/{conversation_id}", responses=_NOT_FOUND, **roles(Role.CLIENT, Role.AGENT, Role.ADMIN)
)
async def get_conversation(
    conversation_id: uuid.UUID,
    conversations: ConversationsDep,
    principal: PrincipalDep,
    messages_limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    messages_before: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
) -> ConversationDetail:
    """Get a conversation with its latest messages, a page at a time."""
    # One more than asked: whether an earlier page exists, without counting them all.
    conversation = await conversations.get(
        conversation_id,
        with_messages=True,
        messages_limit=messages_limit + 1,
        messages_before=messages_before,
        scope=principal.owner_scope,
    )
    messages = conversation.messages
    next_before = None
    if len(messages) > messages_limit:
        messages = messages[1:]
        next_before = messages[0].seq
    detail = ConversationDetail.model_validate(dataclasses.replace(conversation, messages=messages))
    detail.messages_next_before = next_before
    return detail


@router.post(
    "/{conversation_id}/close",
    responses={
        **_NOT_FOUND,
        409: {"model": ErrorBody, "description": "It has already ended (nothing changes)"},
    },
    **roles(Role.CLIENT, Role.ADMIN),
)
async def close_conversation(
    conversation_id: uuid.UUID,
    conversations: ConversationsDep,
    principal: PrincipalDep,
    body: CloseBody | None = None,
) -> ConversationOut:
    """End a conversation (completed), with the outcome the client reports, if any."""
    closed = await conversations.close(
        conversation_id,
        scope=principal.owner_scope,
        outcome=body.outcome if body is not None else None,
    )
    return ConversationOut.model_validate(closed)


@router.delete(
    "/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **_NOT_FOUND,
        409: {"model": ErrorBody, "description": "It has not ended: close it first"},
    },
    **roles(Role.CLIENT, Role.ADMIN),
)
async def delete_conversation(
    conversation_id: uuid.UUID, conversations: ConversationsDep, principal: PrincipalDep
) -> Response:
    """Delete an ended conversation and everything it holds (a privacy request).

    Its messages, events, evaluation and handoff record go with it; its owner or an admin
    may; its outcome, already counted, stays counted."""
    await conversations.delete(conversation_id, scope=principal.owner_scope)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{conversation_id}/escalate",
    responses={**_NOT_FOUND, **_STATE_CONFLICT},
    **roles(Role.CLIENT, Role.ADMIN),
)
async def escalate_conversation(
    conversation_id: uuid.UUID,
    body: EscalationCreate,
    conversations: ConversationsDep,
    principal: PrincipalDep,
) -> ConversationOut:
    """Hand a conversation to a human; the assistant stops replying."""
    conversation = await conversations.escalate(
        conversation_id, body.reason, body.note, scope=principal.owner_scope
    )
    return ConversationOut.model_validate(conversation)


@router.post(
    "/{conversation_id}/messages",
    response_model=TurnOut,
    responses={
        **_NOT_FOUND,
        **_STATE_CONFLICT,
        **_LLM_FAILED,
        200: {
            "content": {"text/event-stream": {}},
            "description": "The turn, or with stream=true an SSE stream of "
            "token, done, escalated and error events",
        },
        409: {
            "model": ErrorBody,
            "description": "Conversation escalated or closed, or the Idempotency-Key was used "
            "for other content",
        },
        413: {"model": ErrorBody, "description": "Content over the configured limit"},
        202: {
            "model": TurnOut,
            "description": "The conversation is with a human agent: the message is stored "
            "for them (held_for_agent), and the assistant does not reply",
        },
        201: {
            "model": AgentMessageOut,
            "description": "With an agent key: the agent's message, stored in a conversation "
            "it holds (409 not_assigned otherwise); no LLM call",
        },
        503: {
            "model": ErrorBody,
            "description": "The LLM is rate limited, or the server is shutting down "
            "(shutting_down: nothing stored; turn_interrupted: the message is stored)",
        },
    },
    **roles(Role.CLIENT, Role.AGENT, Role.ADMIN),
)
async def post_message(
    conversation_id: uuid.UUID,
    body: MessageCreate,
    chat: ChatDep,
    handoffs: HandoffsDep,
    principal: PrincipalDep,
    telemetry: TurnTelemetryDep,
    request: Request,
    response: Response,
    accept: Annotated[str | None, Header()] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            description="A retry with the same key returns the same turn and stores nothing new",
        ),
    ] = None,
) -> TurnOut | EventSourceResponse | JSONResponse:
    """Send a message: the assistant replies, whole or streamed as SSE; an agent's is stored.

    With an agent key, the message is written as the agent holding the conversation."""
    # Ids go into the logs of everything this request does (never into metric labels).
    structlog.contextvars.bind_contextvars(conversation_id=str(conversation_id))
    if principal.role is Role.AGENT:  # a human agent answers: no LLM, no turn
        message, after = await handoffs.agent_message(conversation_id, principal, body.content)
        out = AgentMessageOut(
            conversation=ConversationOut.model_validate(after),
            message=MessageOut.model_validate(message),
        )
        return JSONResponse(out.model_dump(mode="json"), status_code=status.HTTP_201_CREATED)
    streaming = body.stream or "text/event-stream" in (accept or "")
    channel = "sse" if streaming else "http"
    trace = telemetry.begin(channel, conversation_id)  # None unless tracing is on
    try:
        turn = await chat.start_turn(
            conversation_id,
            body.content,
            streaming=streaming,
            idempotency_key=idempotency_key,
            caller=principal,
        )
    except DomainError as refused:
        telemetry.refused(channel, refused, trace)
        raise
    finally:
        if trace is not None:
            trace.detach()
    events = telemetry.observe(channel, turn.events(), turn.timings, trace)
    if streaming:
        return EventSourceResponse(_sse_events(turn, events))
    folded = asyncio.ensure_future(_whole(events))
    if await _client_left_first(request, folded):
        turn.abandon()
        return error_response(
            request,
            CLIENT_CLOSED_REQUEST,
            "client_closed",
            "client_closed_request",
            "the client closed the connection before the reply",
        )
    response.headers["Server-Timing"] = server_timing(turn.timings)
    whole = folded.result()
    if whole.held_for_agent:  # stored for the human agent: accepted, not answered
        response.status_code = status.HTTP_202_ACCEPTED
    return whole


def server_timing(timings: TurnTimings) -> str:
    """Where a whole reply's time went, for the browser's and the client's tools: the
    database, the LLM, and Parley itself (as LLM gateways expose their overhead)."""
    app = max(0.0, timings.elapsed() - timings.db - timings.llm)
    parts = (("db", timings.db), ("llm", timings.llm), ("app", app))
    return ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in parts)


# nginx's code for "the client went away first": never seen by that client, but counted.
CLIENT_CLOSED_REQUEST = 499


async def _client_left_first(request: Request, work: asyncio.Future[TurnOut]) -> bool:
    """Wait for ``work``; True if the client disconnected before it finished."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait((work, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if work.done():
        return False
    work.cancel()
    return True


async def _whole(events: AsyncGenerator[TurnEvent, None]) -> TurnOut:
    async with aclosing(events):  # closed at once, so the turn is counted at once
        return await fold_turn(events)


async def _sse_events(
    turn: RunningTurn, events: AsyncGenerator[TurnEvent, None]
) -> AsyncIterator[bytes]:
    try:
        async with aclosing(events):
            async for event in events:
                yield sse_event(event)
    finally:
        turn.abandon()  # the client left (or the stream ended: then nothing to stop)
