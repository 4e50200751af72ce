"""``/v1/conversations/{conversation_id}/ws``: chat over a WebSocket with JSON frames.

Client frames: ``{"type": "message", "content": ..., "id": ...}`` (``id`` optional: a
retry with the same id returns the same turn) and ``{"type": "ping"}``.
Server frames: ``accepted``, ``token``, ``done``, ``escalated``, ``handoff``, ``error`` and
``pong`` for turns, and ``event`` for the conversation's live events (as its SSE stream's,
from the connection on, or after ``?last_event_id=N``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import structlog
from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect

from parley.api.auth import (
    principal_of,
    rate_identity,
    readmit,
    require_allowed_origin,
    roles,
)
from parley.api.channel import ChatChannel, InvalidFrame
from parley.api.deps import ChatDep, ConversationsDep, StateDep, TurnTelemetryDep
from parley.api.events import live_payload
from parley.api.rate_limits import RateLimitedError
from parley.api.stream_schemas import MAX_FRAME_ID_LENGTH, WsMessage
from parley.api.turn_encoding import ws_frame
from parley.domain.chat import ChatService
from parley.domain.errors import (
    DatabaseUnavailableError,
    DomainError,
    KeyRevokedError,
    NotFoundError,
    RetryLaterError,
)
from parley.domain.keys import Principal, Role
from parley.domain.live import LiveItem, LiveService
from parley.limiter import LimiterUnavailableError
from parley.telemetry import TurnTelemetry

router = APIRouter(tags=["conversations"])

# 4000-4999 are the application's own; 4404 mirrors HTTP's 404.
CLOSE_NOT_FOUND = 4404
# RFC 6455's "Try Again Later": the server cannot take the socket now (the database).
CLOSE_TRY_AGAIN_LATER = 1013
# RFC 6455's "Policy Violation", as the handshake answers a missing or revoked key.
CLOSE_POLICY_VIOLATION = 1008


_ROLES = roles(Role.CLIENT, Role.ADMIN)


@router.websocket(
    "/conversations/{conversation_id}/ws",
    dependencies=[Depends(require_allowed_origin), *_ROLES["dependencies"]],
)
async def chat(
    websocket: WebSocket,
    conversation_id: str,
    conversations: ConversationsDep,
    chat: ChatDep,
    telemetry: TurnTelemetryDep,
    state: StateDep,
) -> None:
    """Chat in a conversation, the reply streamed token by token."""
    channel = ChatChannel(websocket)
    structlog.contextvars.bind_contextvars(conversation_id=conversation_id)
    await channel.accept()
    caller = principal_of(websocket)
    try:
        ident = uuid.UUID(conversation_id)
        await conversations.get(ident, scope=caller.owner_scope)
    except (ValueError, NotFoundError):
        await channel.send_error("conversation_not_found", "no such conversation")
        await channel.close(CLOSE_NOT_FOUND, "conversation not found")
        return
    except DatabaseUnavailableError as unavailable:
        await channel.send_error(unavailable.code, unavailable.message)
        await channel.close(CLOSE_TRY_AGAIN_LATER, "database unavailable")
        return
    identity = rate_identity(websocket)

    async def admit_turn() -> Principal:
        """Each message frame: the key as it is now (revoked since the handshake: the
        socket ends; its limits changed: they hold), counted as an HTTP turn is."""
        current = await readmit(websocket)
        await state.rate_limits.take(identity, current.limits.rpm)
        return current

    after = _last_event_id(websocket.query_params.get("last_event_id"))
    # "From now on" is fixed before the first frame is handled: its events are pushed.
    events = await _live_events(channel, state.services.live, ident, caller, after)
    push = asyncio.create_task(_push_events(channel, events, lambda: readmit(websocket)))
    try:
        while True:
            frame = await channel.receive_frame()
            await _handle(channel, chat, telemetry, admit_turn, ident, frame)
    except WebSocketDisconnect:
        return
    except KeyRevokedError as revoked:
        await _end_revoked(channel, revoked)
    finally:
        push.cancel()
        channel.stop_reading()


def _last_event_id(value: str | None) -> int | None:
    """``?last_event_id=N``: pushed events resume after the conversation's event N."""
    if value is None or not value.isdigit() or len(value) > 18:
        return None  # absent or not a number: from now on
    return int(value)


async def _live_events(
    channel: ChatChannel,
    live: LiveService,
    conversation_id: uuid.UUID,
    caller: Principal,
    after: int | None,
) -> AsyncGenerator[LiveItem, None] | None:
    """The conversation's live events, or None (and an ``events_stopped`` frame) if they
    cannot be followed now."""
    try:
        return await live.conversation(conversation_id, caller, after)
    except DomainError as refused:  # too many streams, draining, the database away
        await _events_stopped(channel, refused)
        return None


async def _push_events(
    channel: ChatChannel,
    items: AsyncGenerator[LiveItem, None] | None,
    readmit: Callable[[], Awaitable[Principal]],
) -> None:
    """Pushed as ``event`` frames beside the turns' frames."""
    if items is None:
        return
    try:
        async with aclosing(items):  # cancelled with the socket: unsubscribed at once
            async for item in items:
                await readmit()  # a key revoked since: the socket ends
                if item is not None:  # heartbeats: the WebSocket has its own pings
                    await channel.send_frame({"type": "event", **live_payload(item)})
    except KeyRevokedError as revoked:
        await _end_revoked(channel, revoked)
    except DomainError as refused:  # the database away, the server draining
        await _events_stopped(channel, refused)
    except Exception:  # the client left: the socket's own loop ends it
        return


async def _events_stopped(channel: ChatChannel, refused: DomainError) -> None:
    # Not an ``error`` frame: that one belongs to the turn in flight, if any.
    stopped = {"type": "events_stopped", "code": refused.code, "message": refused.message}
    with contextlib.suppress(Exception):
        await channel.send_frame(stopped)


async def _end_revoked(channel: ChatChannel, revoked: KeyRevokedError) -> None:
    with contextlib.suppress(Exception):  # the client may be gone already
        await channel.send_error(revoked.code, revoked.message)
        await channel.close(CLOSE_POLICY_VIOLATION, "API key revoked")


_MESSAGE_FIELDS = frozenset(WsMessage.model_fields)


async def _handle(
    channel: ChatChannel,
    chat: ChatService,
    telemetry: TurnTelemetry,
    admit_turn: Callable[[], Awaitable[Principal]],
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
    unknown = sorted(set(frame) - _MESSAGE_FIELDS)
    if unknown:  # as on HTTP: a field not understood is refused, not dropped
        await channel.send_error("invalid_frame", f"unknown fields: {', '.join(unknown)[:200]}")
        return
    content = frame.get("content")
    if not isinstance(content, str) or not content:
        await channel.send_error("invalid_frame", "content must be a non-empty string")
        return
    key = frame.get("id")
    if key is not None and not (isinstance(key, str) and 0 < len(key) <= MAX_FRAME_ID_LENGTH):
        await channel.send_error(
            "invalid_frame", f"id must be a string of 1 to {MAX_FRAME_ID_LENGTH}"
        )
        return
    try:
        caller = await admit_turn()  # raises KeyRevokedError: the socket ends
    except DatabaseUnavailableError as unavailable:  # the key could not be read again
        await channel.send_error(unavailable.code, unavailable.message, retry_after=1)
        return
    except LimiterUnavailableError:
        await channel.send_error(
            "rate_limiter_unavailable", "the rate limiter is unavailable", retry_after=1
        )
        return
    except RateLimitedError as limited:  # the socket stays open: the client may wait
        telemetry.rejected("ws")
        await channel.send_error(
            limited.code, limited.message, retry_after=limited.retry_after_seconds
        )
        return
    trace = telemetry.begin("ws", conversation_id)  # None unless tracing is on
    try:
        turn = await chat.start_turn(
            conversation_id, content, streaming=True, idempotency_key=key, caller=caller
        )
    except RetryLaterError as later:  # the socket stays open: the client may wait
        telemetry.refused("ws", later, trace)
        await channel.send_error(later.code, later.message, retry_after=later.retry_after_seconds)
        return
    except LimiterUnavailableError:
        if trace is not None:
            trace.end("rejected", "rate_limiter_unavailable")
        await channel.send_error(
            "rate_limiter_unavailable", "the rate limiter is unavailable", retry_after=1
        )
        return
    except DomainError as exc:
        telemetry.refused("ws", exc, trace)
        await channel.send_error(exc.code, exc.message)
        return
    finally:
        if trace is not None:
            trace.detach()
    channel.on_leave = turn.abandon  # the client leaving mid-reply stops the LLM call
    try:
        observed = telemetry.observe("ws", turn.events(), turn.timings, trace)
        async with aclosing(observed) as events:
            async for event in events:
                await channel.send_frame(ws_frame(event))
    finally:
        channel.on_leave = None
        turn.abandon()  # a failed send: the client left (after the end, nothing to stop)
