"""``/v1/conversations``: create, read, list, close, escalate, and post messages."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Query, status
from fastapi.sse import EventSourceResponse, format_sse_event
from pydantic import BaseModel

from parley.api.deps import ConversationsDep
from parley.api.errors import domain_status, error_body
from parley.api.schemas import (
    ConversationCreate,
    ConversationDetail,
    ConversationOut,
    ConversationPage,
    ErrorBody,
    EscalationCreate,
    MessageCreate,
    MessageOut,
    TurnOut,
)
from parley.domain.conversations import ConversationService, PendingTurn, ReplyToken
from parley.domain.errors import ReplyFailedError
from parley.domain.models import ConversationStatus

router = APIRouter(prefix="/conversations", tags=["conversations"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such conversation"}
}
_STATE_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "Conversation escalated or closed"}
}
_LLM_FAILED: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": "The LLM failed; the user message is stored"}
    for code in (502, 503, 504)
}


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    responses={404: {"model": ErrorBody, "description": "No such goal"}},
)
async def create_conversation(
    body: ConversationCreate, conversations: ConversationsDep
) -> ConversationOut:
    """Start a conversation for a goal."""
    conversation = await conversations.create(body.goal_id, body.metadata)
    return ConversationOut.model_validate(conversation)


@router.get("/")
async def list_conversations(
    conversations: ConversationsDep,
    goal_id: str | None = None,
    status: ConversationStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> ConversationPage:
    """List conversations, newest first, filtered by goal and status; pass next_cursor on."""
    page = await conversations.page(goal_id=goal_id, status=status, limit=limit, cursor=cursor)
    return ConversationPage(
        items=[ConversationOut.model_validate(c) for c in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/{conversation_id}", responses=_NOT_FOUND)
async def get_conversation(
    conversation_id: uuid.UUID, conversations: ConversationsDep
) -> ConversationDetail:
    """Get a conversation with all its messages."""
    conversation = await conversations.get(conversation_id, with_messages=True)
    return ConversationDetail.model_validate(conversation)


@router.post("/{conversation_id}/close", responses=_NOT_FOUND)
async def close_conversation(
    conversation_id: uuid.UUID, conversations: ConversationsDep
) -> ConversationOut:
    """Mark a conversation completed."""
    return ConversationOut.model_validate(await conversations.close(conversation_id))


@router.post("/{conversation_id}/escalate", responses={**_NOT_FOUND, **_STATE_CONFLICT})
async def escalate_conversation(
    conversation_id: uuid.UUID, body: EscalationCreate, conversations: ConversationsDep
) -> ConversationOut:
    """Hand a conversation to a human; the assistant stops replying."""
    conversation = await conversations.escalate(conversation_id, body.reason, body.note)
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
        413: {"model": ErrorBody, "description": "Content over the configured limit"},
    },
)
async def post_message(
    conversation_id: uuid.UUID,
    body: MessageCreate,
    conversations: ConversationsDep,
    accept: Annotated[str | None, Header()] = None,
) -> TurnOut | EventSourceResponse:
    """Send a user message and get the assistant's reply, whole or streamed as SSE."""
    # Ids go into the logs of everything this request does (never into metric labels).
    structlog.contextvars.bind_contextvars(conversation_id=str(conversation_id))
    pending = await conversations.begin_turn(conversation_id, body.content)
    if body.stream or "text/event-stream" in (accept or ""):
        return EventSourceResponse(_sse_events(conversations, pending))
    turn = await conversations.reply(pending)
    return TurnOut.model_validate(turn)


def _sse(event: str, payload: BaseModel | dict[str, object]) -> bytes:
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return format_sse_event(event=event, data_str=data)


async def _sse_events(service: ConversationService, pending: PendingTurn) -> AsyncIterator[bytes]:
    yield _sse("accepted", MessageOut.model_validate(pending.user_message))
    if pending.request is None:
        yield _sse("escalated", {"reason": pending.escalation_reason})
        return
    try:
        async for item in service.stream_reply(pending):
            if isinstance(item, ReplyToken):
                yield _sse("token", {"content": item.content})
            else:
                yield _sse("done", MessageOut.model_validate(item.message))
    except ReplyFailedError as exc:
        status_code, error_type = domain_status(exc)
        body = error_body(error_type, exc.code, exc.message, [{"escalated": exc.escalated}])
        yield _sse("error", {**body, "status": status_code})
        if exc.escalated:
            yield _sse("escalated", {"reason": "llm_failure"})
