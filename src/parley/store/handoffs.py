"""The human handoff's writes and the queue: each step one conditional UPDATE on the
conversation's row (the state check and the change in one statement, so two agents
claiming at once cannot both win), run whole by ``Database.run_transaction``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select, tuple_, update

from parley.domain.models import (
    Closing,
    Conversation,
    ConversationStatus,
    HandoffState,
    HandoffStep,
    Message,
    Page,
)
from parley.domain.paging import decode_cursor, encode_cursor
from parley.llm.types import Role
from parley.store.database import Database
from parley.store.endings import ending_values, queue_judgement
from parley.store.events import append_handoff, append_message
from parley.store.rows import CONVERSATION_COLUMNS, aggregated_utc, to_conversation
from parley.store.tables import CONVERSATIONS
from parley.store.turns import insert_message
from parley.store.turns import now as _now

_C = CONVERSATIONS.c
_ESCALATED = ConversationStatus.ESCALATED.value
_WAITING, _ASSIGNED = HandoffState.WAITING.value, HandoffState.ASSIGNED.value


def _held_by(holder: str | None) -> ColumnElement[bool]:
    """Assigned, to ``holder`` (None: to anyone, for an admin)."""
    held = _C.handoff_state == _ASSIGNED
    return held if holder is None else held & (_C.handoff_agent == holder)


class HandoffRepository:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def queue(
        self,
        *,
        state: HandoffState,
        goal_id: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        after = decode_cursor(cursor) if cursor is not None else None
        rows = await self._db.run_transaction(_queue, state, goal_id, agent, limit + 1, after)
        items = tuple(to_conversation(row) for row in rows[:limit])
        more = len(rows) > limit
        last = items[-1] if items else None
        next_cursor = (
            encode_cursor(last.escalation.created_at, last.id)
            if more and last is not None and last.escalation is not None
            else None
        )
        return Page(items, next_cursor)

    async def queue_stats(self) -> list[tuple[str, HandoffState, int, datetime]]:
        return await self._db.run_transaction(_queue_stats)

    async def assign(
        self, conversation_id: uuid.UUID, agent: str, *, holder: str | None, transfer: bool
    ) -> Conversation | None:
        return await self._db.run_transaction(_assign, conversation_id, agent, holder, transfer)

    async def unassign(
        self, conversation_id: uuid.UUID, *, holder: str | None
    ) -> Conversation | None:
        return await self._db.run_transaction(_unassign, conversation_id, holder)

    async def resolve(
        self,
        conversation_id: uuid.UUID,
        *,
        holder: str | None,
        closing: Closing | None,
        note: str | None = None,
    ) -> Conversation | None:
        origin = self._db.trace_context() if closing is not None and closing.judged else None
        return await self._db.run_transaction(
            _resolve, conversation_id, holder, closing, note, origin
        )

    async def agent_message(
        self, conversation_id: uuid.UUID, agent: str, content: str
    ) -> tuple[Message, Conversation] | None:
        return await self._db.run_transaction(_agent_message, conversation_id, agent, content)


def _queue(
    conn: Connection,
    state: HandoffState,
    goal_id: str | None,
    agent: str | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> Sequence[Any]:
    query = select(*CONVERSATION_COLUMNS).where(_C.handoff_state == state.value)
    if goal_id is not None:
        query = query.where(_C.goal_id == goal_id)
    if agent is not None:
        query = query.where(_C.handoff_agent == agent)
    if after is not None:
        query = query.where(tuple_(_C.escalated_at, _C.id) > after)
    query = query.order_by(_C.escalated_at, _C.id).limit(limit)  # the longest wait first
    return conn.execute(query).all()


# The open handoffs per goal and state: a range of the handoff index, whatever the number
# of conversations ever stored.
_QUEUE_STATS = (
    select(_C.goal_id, _C.handoff_state, func.count(), func.min(_C.escalated_at))
    .where(_C.handoff_state.in_([_WAITING, _ASSIGNED]))
    .group_by(_C.goal_id, _C.handoff_state)
)


def _queue_stats(conn: Connection) -> list[tuple[str, HandoffState, int, datetime]]:
    return [
        (goal_id, HandoffState(state), int(count), aggregated_utc(first))
        for goal_id, state, count, first in conn.execute(_QUEUE_STATS)
    ]


def _changed(conn: Connection, conversation_id: uuid.UUID, where: Any, **values: Any) -> Any:
    statement = (
        update(CONVERSATIONS)
        .where(_C.id == conversation_id, where)
        .values(updated_at=_now(), **values)
        .returning(*CONVERSATION_COLUMNS)
    )
    return conn.execute(statement).one_or_none()


def _assign(
    conn: Connection,
    conversation_id: uuid.UUID,
    agent: str,
    holder: str | None,
    transfer: bool,
) -> Conversation | None:
    now = _now()
    if transfer:  # from its holder (or any, for an admin) to another agent
        where = _held_by(holder)
    else:  # claimed from the queue: only while nobody holds it
        where = (_C.status == _ESCALATED) & (_C.handoff_state == _WAITING)
    row = _changed(
        conn,
        conversation_id,
        where,
        handoff_state=_ASSIGNED,
        handoff_agent=agent,
        handoff_assigned_at=now,
    )
    return _recorded(conn, row, HandoffStep.TRANSFERRED if transfer else HandoffStep.ASSIGNED)


def _unassign(
    conn: Connection, conversation_id: uuid.UUID, holder: str | None
) -> Conversation | None:
    # Back in the queue where it was: its wait still counts from its escalation.
    row = _changed(
        conn,
        conversation_id,
        _held_by(holder),
        handoff_state=_WAITING,
        handoff_agent=None,
        handoff_assigned_at=None,
    )
    return _recorded(conn, row, HandoffStep.UNASSIGNED)


def _resolve(
    conn: Connection,
    conversation_id: uuid.UUID,
    holder: str | None,
    closing: Closing | None,
    note: str | None,
    origin_trace: str | None = None,
) -> Conversation | None:
    """With no closing, back to the bot; with one, the conversation ends."""
    now = _now()
    values: dict[str, Any] = {
        "handoff_state": HandoffState.RESOLVED.value,
        "handoff_resolved_at": now,
        "handoff_note": note,
    }
    if closing is None:  # the bot answers again, its escalation counters from zero
        values |= {"status": ConversationStatus.ACTIVE.value, "turns": 0, "llm_failures": 0}
    else:
        values |= {"status": ConversationStatus.COMPLETED.value} | ending_values(closing, now)
    row = _changed(conn, conversation_id, _held_by(holder), **values)
    if row is None:
        return None
    conversation = to_conversation(row)
    if closing is not None:
        conversation = queue_judgement(conn, conversation, closing, now, origin_trace)
    step = HandoffStep.RETURNED_TO_BOT if closing is None else HandoffStep.COMPLETED
    append_handoff(conn, conversation, step)
    return conversation


def _recorded(conn: Connection, row: Any, step: HandoffStep) -> Conversation | None:
    """The changed conversation (None: no change), its step appended to its events."""
    if row is None:
        return None
    conversation = to_conversation(row)
    append_handoff(conn, conversation, step)
    return conversation


def _agent_message(
    conn: Connection, conversation_id: uuid.UUID, agent: str, content: str
) -> tuple[Message, Conversation] | None:
    now = _now()
    row = conn.execute(
        update(CONVERSATIONS)
        .where(_C.id == conversation_id, _held_by(agent))
        .values(
            message_count=_C.message_count + 1,
            updated_at=now,
            handoff_first_agent_reply_at=func.coalesce(_C.handoff_first_agent_reply_at, now),
        )
        .returning(*CONVERSATION_COLUMNS)
    ).one_or_none()
    if row is None:
        return None
    message = Message(
        id=uuid.uuid4(),
        conversation_id=conversation_id,
        seq=row.message_count,
        role=Role.AGENT,
        content=content,
        created_at=row.updated_at,
        author=agent,
    )
    insert_message(conn, message)
    append_message(conn, row.goal_id, message)
    return message, to_conversation(row)
