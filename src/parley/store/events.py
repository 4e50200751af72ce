"""The live streams' event log: each handoff step and each message written while a human
agent has a conversation, appended inside the transaction that made the change, and read
back by the streams (a conversation's after a ``seq``, the queue's after an ``id``).

Appending (or deleting a conversation) also names the conversation for the commit's
wake-up (``PUBLISHED``, read by ``Database.run_transaction`` once committed) and, on
PostgreSQL, notifies every replica (``NOTIFY`` is delivered only if the transaction
commits)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, insert, select, text
from sqlalchemy.sql import Join, Select

from parley.domain.models import (
    Conversation,
    HandoffStep,
    LiveEvent,
    LiveEventKind,
    Message,
)
from parley.store.database import PUBLISHED, Database
from parley.store.rows import to_live_event
from parley.store.tables import CONVERSATION_EVENTS, MESSAGES

# The PostgreSQL channel every replica listens on; a notification's payload is the id of
# the conversation whose stream has something new.
CHANNEL = "parley_events"
# Taken before an event's id is drawn and held to the commit: ids then commit in order,
# so the queue's stream, read "after id N", never skips one that committed late.
_ORDER_LOCK = 0x70617231  # "par1"

_E = CONVERSATION_EVENTS.c
_M = MESSAGES.c
_NEXT_SEQ = select(func.coalesce(func.max(_E.seq), 0) + 1)


def append_handoff(conn: Connection, conversation: Conversation, step: HandoffStep) -> None:
    """A step of ``conversation``'s handoff, with the state it left."""
    handoff = conversation.handoff
    state: dict[str, Any] = {"status": conversation.status.value, "handoff": None}
    if handoff is not None:
        state["handoff"] = {
            "state": handoff.state.value,
            "reason": handoff.reason.value,
            "agent": handoff.agent,
            "escalated_at": _iso(handoff.escalated_at),
            "assigned_at": _iso(handoff.assigned_at),
            "first_agent_reply_at": _iso(handoff.first_agent_reply_at),
            "resolved_at": _iso(handoff.resolved_at),
            "note": handoff.note,
        }
    _append(
        conn,
        conversation.id,
        conversation.goal_id,
        LiveEventKind.HANDOFF,
        step=step.value,
        state=state,
        created_at=conversation.updated_at,
    )


def append_message(conn: Connection, goal_id: str, message: Message) -> None:
    """A message written while a human agent has the conversation (either side's)."""
    _append(
        conn,
        message.conversation_id,
        goal_id,
        LiveEventKind.MESSAGE,
        message_id=message.id,
        created_at=message.created_at,
    )


def _append(
    conn: Connection,
    conversation_id: uuid.UUID,
    goal_id: str,
    kind: LiveEventKind,
    **values: Any,
) -> None:
    # The conversation's row is locked by the change being recorded (every caller updated
    # it first), so its next seq is this transaction's alone.
    seq = conn.execute(_NEXT_SEQ.where(_E.conversation_id == conversation_id)).scalar_one()
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ORDER_LOCK})
    conn.execute(
        insert(CONVERSATION_EVENTS).values(
            conversation_id=conversation_id, seq=seq, goal_id=goal_id, kind=kind.value, **values
        )
    )
    publish(conn, [conversation_id])


_NOTIFY_EACH = text("SELECT pg_notify(:channel, id) FROM unnest(CAST(:ids AS text[])) AS id")


def publish(conn: Connection, conversation_ids: Sequence[uuid.UUID]) -> None:
    """Wakes these conversations' streams once the transaction commits: on this replica
    (``PUBLISHED``) and, on PostgreSQL, every other (a deletion too: its streams end)."""
    if not conversation_ids:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY_EACH, {"channel": CHANNEL, "ids": [str(i) for i in conversation_ids]})
    conn.info.setdefault(PUBLISHED, set()).update(conversation_ids)


def _iso(moment: Any) -> str | None:
    return None if moment is None else moment.isoformat()


# An event's columns and its message's (``m_*``), as to_live_event reads them.
EVENT_COLUMNS = (
    *CONVERSATION_EVENTS.c,
    *(column.label(f"m_{column.name}") for column in MESSAGES.c),
)


def event_rows() -> Join:
    """The events joined with their messages, if they have one."""
    return CONVERSATION_EVENTS.outerjoin(MESSAGES, _M.id == _E.message_id)


_READ: Select[Any] = select(*EVENT_COLUMNS).select_from(event_rows())


class EventLogRepository:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def conversation_events(
        self, conversation_id: uuid.UUID, after_seq: int, limit: int
    ) -> list[LiveEvent]:
        return await self._db.run_transaction(
            _conversation_events, conversation_id, after_seq, limit
        )

    async def queue_events(self, after_id: int, limit: int) -> list[LiveEvent]:
        return await self._db.run_transaction(_queue_events, after_id, limit)

    async def last_seq(self, conversation_id: uuid.UUID) -> int:
        return await self._db.run_transaction(_last_seq, conversation_id)

    async def last_id(self) -> int:
        return await self._db.run_transaction(_last_id)


def _conversation_events(
    conn: Connection, conversation_id: uuid.UUID, after_seq: int, limit: int
) -> list[LiveEvent]:
    query = (
        _READ.where(_E.conversation_id == conversation_id, _E.seq > after_seq)
        .order_by(_E.seq)
        .limit(limit)
    )
    return _events(conn.execute(query).all())


def _queue_events(conn: Connection, after_id: int, limit: int) -> list[LiveEvent]:
    query = _READ.where(_E.id > after_id).order_by(_E.id).limit(limit)
    return _events(conn.execute(query).all())


def _events(rows: Sequence[Any]) -> list[LiveEvent]:
    return [to_live_event(row) for row in rows]


def _last_seq(conn: Connection, conversation_id: uuid.UUID) -> int:
    query = select(func.coalesce(func.max(_E.seq), 0)).where(_E.conversation_id == conversation_id)
    return int(conn.execute(query).scalar_one())


def _last_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(_E.id), 0))).scalar_one())
