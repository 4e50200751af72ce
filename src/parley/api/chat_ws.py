"""``/v1/conversations/{conversation_id}/ws``: chat over a WebSocket with JSON frames.

Client frames: ``{"type": "message", "content": ...}`` and ``{"type": "ping"}``.
Server frames: ``accepted``, ``token``, ``done``, ``escalated``, ``error`` and ``pong``.
"""

from __future__ import annotations

import uuid
from contextlib import aclosing
from typing import Any

import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from parley.api.channel import ChatChannel, InvalidFrame
from parley.api.deps import ConversationsDep
from parley.api.schemas import MessageOut
from parley.domain.conversations import ConversationService, ReplyToken
from parley.domain.errors import DomainError, NotFoundError, ReplyFailedError
from parley.domain.models import EscalationReason

router = APIRouter(tags=["conversations"])

# 4000-4999 are the application's own; 4404 mirrors HTTP's 404.
CLOSE_NOT_FOUND = 4404


def _message(message: Any) -> dict[str, Any]:
    return MessageOut.model_validate(message).model_dump(mode="json")


@router.websocket("/conversations/{conversation_id}/ws")
async def chat(websocket: WebSocket, conversation_id: str, conversations: ConversationsDep) -> None:
    """Chat in a conversation, the reply streamed token by token."""
    channel = ChatChannel(websocket)
    structlog.contextvars.bind_contextvars(conversation_id=conversation_id)
    await channel.accept()
    try:
        ident = uuid.UUID(conversation_id)
        await conversations.get(ident)
    except (ValueError, NotFoundError):
        await channel.send_error("conversation_not_found", "no such conversation")
        await channel.close(CLOSE_NOT_FOUND, "conversation not found")
        return
    try:
        while True:
            frame = await channel.receive_frame()
            await _handle(channel, conversations, ident, frame)
    except WebSocketDisconnect:
        return


async def _handle(
    channel: ChatChannel,
    conversations: ConversationService,
    conversation_id: uuid.UUID,
    frame: dict[str, Any] | InvalidFrame,
) -> None:
    if isinstance(frame, InvalidFrame):
        await channel.send_error("invalid_frame", frame.reason)
        return
    kind = frame.get("type")
    if kind == "ping":
        await channel.send_frame({"type": "pong"})
        return
    if kind != "message":
        await channel.send_error("unknown_frame_type", "type must be 'message' or 'ping'")
        return
    content = frame.get("content")
    if not isinstance(content, str) or not content:
        await channel.send_error("invalid_frame", "content must be a non-empty string")
        return
    try:
        pending = await conversations.begin_turn(conversation_id, content)
    except DomainError as exc:
        await channel.send_error(exc.code, exc.message)
        return
    await channel.send_frame({"type": "accepted", "message": _message(pending.user_message)})
    if pending.request is None:
        await channel.send_frame({"type": "escalated", "reason": pending.escalation_reason})
        return
    try:
        async with aclosing(conversations.stream_reply(pending)) as replies:
            async for item in replies:
                if isinstance(item, ReplyToken):
                    await channel.send_frame({"type": "token", "content": item.content})
                else:
                    message = _message(item.message)
                    await channel.send_frame(
                        {"type": "done", "message": message, "usage": message["usage"]}
                    )
    except ReplyFailedError as exc:
        await channel.send_error(exc.code, exc.message, escalated=exc.escalated)
        if exc.escalated:
            await channel.send_frame(
                {"type": "escalated", "reason": EscalationReason.LLM_FAILURE.value}
            )
