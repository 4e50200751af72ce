"""A turn's events on each channel: folded into one HTTP reply, or encoded as SSE events and
WebSocket frames. The turn itself is told once, by the domain's event stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable
from typing import Any

from fastapi.sse import format_sse_event

from parley.api.errors import domain_status, error_body
from parley.api.schemas import ConversationOut, HandoffOut, MessageOut, TurnOut
from parley.domain.errors import DomainError, ReplyFailedError
from parley.domain.models import Conversation, Message
from parley.domain.turns import (
    Accepted,
    Done,
    Escalated,
    Failed,
    HeldForAgent,
    Token,
    TurnEvent,
)


def _message(message: Message) -> dict[str, Any]:
    return MessageOut.model_validate(message).model_dump(mode="json")


def _handoff(conversation: Conversation) -> dict[str, Any]:
    assert conversation.handoff is not None  # held: the conversation is in a handoff
    return HandoffOut.model_validate(conversation.handoff).model_dump(mode="json")


def _error_details(error: DomainError) -> list[dict[str, Any]] | None:
    if isinstance(error, ReplyFailedError):
        return [{"escalated": error.escalated}]
    return None


async def fold_turn(events: AsyncIterable[TurnEvent]) -> TurnOut:
    """The whole turn as one reply; a failure is raised for the error handlers to shape."""
    accepted: Accepted | None = None
    failure: DomainError | None = None
    async for event in events:
        match event:
            case Accepted():
                accepted = event
            case Done(conversation, message):
                assert accepted is not None
                return TurnOut(
                    conversation=ConversationOut.model_validate(conversation),
                    user_message=MessageOut.model_validate(accepted.message),
                    reply=MessageOut.model_validate(message),
                )
            case Escalated(conversation, reason) if failure is None:
                assert accepted is not None
                return TurnOut(
                    conversation=ConversationOut.model_validate(conversation),
                    user_message=MessageOut.model_validate(accepted.message),
                    reply=None,
                    escalation_reason=reason,
                )
            case HeldForAgent(conversation):
                assert accepted is not None
                return TurnOut(
                    conversation=ConversationOut.model_validate(conversation),
                    user_message=MessageOut.model_validate(accepted.message),
                    reply=None,
                    held_for_agent=True,
                )
            case Failed(error):
                failure = error
            case Token() | Escalated():
                pass
    if failure is None:
        raise AssertionError("a turn ends with done, escalated or failed")
    raise failure


def sse_event(event: TurnEvent) -> bytes:
    match event:
        case Accepted(_, message):
            return _sse("accepted", _message(message))
        case Token(content):
            return _sse("token", {"content": content})
        case Done(_, message):
            return _sse("done", _message(message))
        case Escalated(_, reason):
            return _sse("escalated", {"reason": reason.value})
        case HeldForAgent(conversation):
            return _sse("handoff", _handoff(conversation))
        case Failed(error):
            status, error_type = domain_status(error)
            body = error_body(error_type, error.code, error.message, _error_details(error))
            return _sse("error", {**body, "status": status})


def _sse(event: str, payload: dict[str, Any]) -> bytes:
    return format_sse_event(event=event, data_str=json.dumps(payload))


def ws_frame(event: TurnEvent) -> dict[str, Any]:
    match event:
        case Accepted(_, message):
            return {"type": "accepted", "message": _message(message)}
        case Token(content):
            return {"type": "token", "content": content}
        case Done(_, message):
            encoded = _message(message)
            return {"type": "done", "message": encoded, "usage": encoded["usage"]}
        case Escalated(_, reason):
            return {"type": "escalated", "reason": reason.value}
        case HeldForAgent(conversation):
            return {"type": "handoff", "handoff": _handoff(conversation)}
        case Failed(error):
            frame: dict[str, Any] = {
                "type": "error",
                "code": error.code,
                "message": error.message,
            }
            if isinstance(error, ReplyFailedError):
                frame["escalated"] = error.escalated
            return frame
