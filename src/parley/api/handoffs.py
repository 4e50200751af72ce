"""The human handoff over HTTP: ``GET /v1/handoffs`` (the queue) and, on a conversation,
``assign``, ``unassign`` and ``resolve``, for agent and admin keys. An agent's message is
``POST /v1/conversations/{id}/messages`` with an agent key (parley.api.conversations)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from parley.api.auth import roles
from parley.api.deps import HandoffsDep, PrincipalDep
from parley.api.schemas import (
    AssignBody,
    ConversationOut,
    ErrorBody,
    HandoffItem,
    HandoffPage,
    ResolveBody,
)
from parley.domain.errors import InvalidInputError
from parley.domain.keys import Role
from parley.domain.models import Conversation, HandoffState
from parley.domain.paging import MAX_CURSOR_LENGTH

queue = APIRouter(prefix="/handoffs", tags=["handoffs"])
steps = APIRouter(prefix="/conversations", tags=["handoffs"])

AGENTS = roles(Role.AGENT, Role.ADMIN)
_STEP_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such conversation"},
    409: {
        "model": ErrorBody,
        "description": "not_in_handoff (not waiting for or held by an agent), "
        "already_assigned (another agent claimed it first), or not_assigned (another "
        "agent holds it)",
    },
}


def _item(conversation: Conversation, now: datetime) -> HandoffItem:
    handoff = conversation.handoff
    assert handoff is not None  # the queue lists conversations in a handoff only
    until = handoff.assigned_at or handoff.resolved_at or now
    return HandoffItem.model_validate(
        {
            **ConversationOut.model_validate(conversation).model_dump(),
            "wait_seconds": max(0.0, (until - handoff.escalated_at).total_seconds()),
        }
    )


@queue.get("/", **AGENTS)
async def list_handoffs(
    handoffs: HandoffsDep,
    state: HandoffState = HandoffState.WAITING,
    goal_id: Annotated[str | None, Query(max_length=64)] = None,
    agent: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
) -> HandoffPage:
    """Conversations in a handoff, the longest waiting first, each with its wait."""
    page = await handoffs.queue(
        state=state, goal_id=goal_id, agent=agent, limit=limit, cursor=cursor
    )
    now = datetime.now(UTC)
    return HandoffPage(
        items=[_item(conversation, now) for conversation in page.items],
        next_cursor=page.next_cursor,
    )


@steps.post("/{conversation_id}/assign", responses=_STEP_ERRORS, **AGENTS)
async def assign(
    conversation_id: uuid.UUID,
    handoffs: HandoffsDep,
    principal: PrincipalDep,
    body: AssignBody | None = None,
) -> ConversationOut:
    """Claim a waiting conversation for the calling agent, or hand it to another one.

    Two claims at once: one gets it, the other 409 already_assigned. With ``agent``, the
    holder (or an admin) hands it to that agent."""
    to = body.agent if body is not None else None
    return ConversationOut.model_validate(await handoffs.assign(conversation_id, principal, to))


@steps.post("/{conversation_id}/unassign", responses=_STEP_ERRORS, **AGENTS)
async def unassign(
    conversation_id: uuid.UUID, handoffs: HandoffsDep, principal: PrincipalDep
) -> ConversationOut:
    """Put it back in the queue; its wait still counts from its escalation."""
    return ConversationOut.model_validate(await handoffs.unassign(conversation_id, principal))


@steps.post("/{conversation_id}/resolve", responses=_STEP_ERRORS, **AGENTS)
async def resolve(
    conversation_id: uuid.UUID, body: ResolveBody, handoffs: HandoffsDep, principal: PrincipalDep
) -> ConversationOut:
    """End the handoff (the assigned agent or an admin): back to the bot, or completed."""
    if body.return_to_bot and body.outcome is not None:
        raise InvalidInputError("an outcome is for ending it: not with return_to_bot")
    resolved = await handoffs.resolve(
        conversation_id,
        principal,
        return_to_bot=body.return_to_bot,
        note=body.note,
        outcome=body.outcome,
    )
    return ConversationOut.model_validate(resolved)
