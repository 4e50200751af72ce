"""Conversation and message persistence, with keyset pagination: SQLAlchemy Core
statements, each transaction run whole by ``Database.run_transaction`` (the store's one
execution model; a turn's own statements are in parley.store.turns)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError

from parley import defaults
from parley.domain.errors import GoalNotFoundError
from parley.domain.models import (
    Closing,
    Conversation,
    ConversationStatus,
    EscalationReason,
    HandoffState,
    HandoffStep,
    Message,
    Page,
)
from parley.domain.outcomes import GoalResults
from parley.domain.paging import decode_cursor, encode_cursor
from parley.domain.ports import EscalationRule, OpenedTurn, ReplyDraft, SpendCap
from parley.store import turns
from parley.store.database import Database
from parley.store.endings import ending_values, queue_judgement
from parley.store.events import append_handoff, publish
from parley.store.goals import GoalCache
from parley.store.outcomes import goal_results
from parley.store.rows import CONVERSATION_COLUMNS, to_conversation, to_evaluation, to_message
from parley.store.tables import CONVERSATIONS, EVALUATIONS, MESSAGES, NEW_HANDOFF, UTCDateTime
from parley.store.turns import now as _now

OPEN_STATES = (HandoffState.WAITING.value, HandoffState.ASSIGNED.value)

_C, _M, _EV = CONVERSATIONS.c, MESSAGES.c, EVALUATIONS.c
# The scrape's count: a range of the status index, so its cost follows the active
# conversations, not every conversation ever stored.
COUNT_ACTIVE = (
    select(func.count())
    .select_from(CONVERSATIONS)
    .where(_C.status == ConversationStatus.ACTIVE.value)
)


class ConversationRepository:
    def __init__(
        self,
        database: Database,
        goals: GoalCache | None = None,
        *,
        answer_lease_seconds: float = defaults.ANSWER_LEASE_SECONDS,
    ) -> None:
        self._db = database
        self._goals = goals or GoalCache(0)
        self._answer_lease = timedelta(seconds=answer_lease_seconds)

    async def create(
        self, goal_id: str, metadata: dict[str, object], owner: str | None = None
    ) -> Conversation:
        try:
            return await self._db.run_transaction(_create, goal_id, metadata, owner)
        except IntegrityError as exc:  # the goal does not exist (or was deleted meanwhile)
            raise GoalNotFoundError(goal_id) from exc

    async def get(
        self,
        conversation_id: uuid.UUID,
        *,
        with_messages: bool = False,
        messages_limit: int | None = None,
        messages_before: int | None = None,
    ) -> Conversation | None:
        return await self._db.run_transaction(
            _get,
            conversation_id,
            with_messages=with_messages,
            messages_limit=messages_limit,
            messages_before=messages_before,
        )

    async def page(
        self,
        *,
        goal_id: str | None = None,
        status: ConversationStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> Page:
        after = decode_cursor(cursor) if cursor is not None else None
        rows = await self._db.run_transaction(_page, goal_id, status, owner, limit + 1, after)
        items = tuple(to_conversation(row) for row in rows[:limit])
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor(items[-1].created_at, items[-1].id)
        return Page(items, next_cursor)

    async def open_turn(
        self,
        conversation_id: uuid.UUID,
        content: str,
        *,
        escalate_when: EscalationRule,
        history_limit: int,
        idempotency_key: str | None = None,
        owner: str | None = None,
        spend_cap: SpendCap | None = None,
    ) -> OpenedTurn:
        try:
            return await self._db.run_transaction(
                turns.open_turn,
                conversation_id,
                content,
                escalate_when=escalate_when,
                history_limit=history_limit,
                idempotency_key=idempotency_key,
                owner=owner,
                goals=self._goals,
                answer_lease=self._answer_lease,
                spend_cap=spend_cap,
            )
        except turns.Repeated as repeated:  # rolled back this transaction's counters
            return repeated.turn

    async def store_reply(
        self, question: Message, reply: ReplyDraft
    ) -> tuple[Message, Conversation]:
        try:
            return await self._db.run_transaction(turns.insert_reply, question, reply)
        except IntegrityError:
            # A concurrent retry of the same turn stored its reply first.
            return await self._db.run_transaction(turns.stored_reply, question)

    async def record_llm_failure(
        self, conversation_id: uuid.UUID, *, escalate_at: int | None
    ) -> Conversation | None:
        return await self._db.run_transaction(
            turns.record_llm_failure, conversation_id, escalate_at=escalate_at
        )

    async def release_answer(self, question: Message) -> None:
        await self._db.run_transaction(turns.release_answer, question)

    async def renew_answer(self, question: Message) -> None:
        await self._db.run_transaction(turns.renew_answer, question, self._answer_lease)

    async def transition(
        self,
        conversation_id: uuid.UUID,
        *,
        allowed_from: Sequence[ConversationStatus],
        to: ConversationStatus,
        reason: EscalationReason | None = None,
        note: str | None = None,
        idle_before: datetime | None = None,
        closing: Closing | None = None,
    ) -> Conversation | None:
        """Move to ``to`` only from a status in ``allowed_from``; ``None`` if not allowed."""
        origin = self._db.trace_context() if closing is not None and closing.judged else None
        return await self._db.run_transaction(
            _transition,
            conversation_id,
            allowed_from,
            to,
            reason,
            note,
            idle_before,
            closing,
            origin,
        )

    async def idle(
        self, goal_id: str, idle_before: datetime, limit: int
    ) -> list[tuple[uuid.UUID, ConversationStatus]]:
        return await self._db.run_transaction(_idle, goal_id, idle_before, limit)

    async def count_active(self) -> int:
        return await self._db.run_transaction(_count_active)

    async def delete(self, conversation_id: uuid.UUID) -> bool:
        """Delete an ended conversation with everything it holds; False if it is not (or
        no longer) an ended one."""
        return await self._db.run_transaction(_delete, conversation_id)

    async def delete_ended_before(self, before: datetime, limit: int) -> int:
        return await self._db.run_transaction(_delete_ended_before, before, limit)

    async def results(self, goal_id: str, since: datetime) -> GoalResults:
        return await self._db.run_transaction(goal_results, goal_id, since)


def _create(
    conn: Connection, goal_id: str, metadata: dict[str, object], owner: str | None
) -> Conversation:
    now = _now()
    row = conn.execute(
        insert(CONVERSATIONS)
        .values(
            id=uuid.uuid4(),
            goal_id=goal_id,
            status=ConversationStatus.ACTIVE.value,
            metadata=metadata,
            message_count=0,
            turns=0,
            llm_failures=0,
            created_at=now,
            updated_at=now,
            owner=owner,
        )
        .returning(*CONVERSATION_COLUMNS)
    ).one()
    return to_conversation(row)


def _get(
    conn: Connection,
    conversation_id: uuid.UUID,
    *,
    with_messages: bool,
    messages_limit: int | None,
    messages_before: int | None,
) -> Conversation | None:
    row = conn.execute(select(*CONVERSATION_COLUMNS).where(_C.id == conversation_id)).one_or_none()
    if row is None:
        return None
    evaluation = None
    if row.ended_at is not None:
        judged = conn.execute(select(EVALUATIONS).where(_EV.conversation_id == conversation_id))
        evaluation = next((to_evaluation(e) for e in judged), None)
    if not with_messages:
        return to_conversation(row, evaluation=evaluation)
    # Newest first, so a limit keeps the latest; returned oldest first.
    query = select(MESSAGES).where(_M.conversation_id == conversation_id).order_by(_M.seq.desc())
    if messages_before is not None:
        query = query.where(_M.seq < messages_before)
    if messages_limit is not None:
        query = query.limit(messages_limit)
    messages = tuple(to_message(m) for m in reversed(conn.execute(query).all()))
    return to_conversation(row, messages, evaluation)


def _delete(conn: Connection, conversation_id: uuid.UUID) -> bool:
    # Its messages, events (and their webhook deliveries) and evaluation go by cascade.
    result = conn.execute(
        delete(CONVERSATIONS).where(
            _C.id == conversation_id, _C.status == ConversationStatus.COMPLETED.value
        )
    )
    if result.rowcount:
        publish(conn, [conversation_id])  # its open streams end
    return bool(result.rowcount)


def _delete_ended_before(conn: Connection, before: datetime, limit: int) -> int:
    """One batch of the oldest ended before ``before``. On PostgreSQL, rows another
    replica's batch holds are skipped, so two replicas never delete the same ones."""
    batch = (
        select(_C.id)
        .where(_C.ended_at < before)
        .order_by(_C.ended_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(conn.scalars(batch))
    if not ids:
        return 0
    deleted = conn.scalars(
        delete(CONVERSATIONS).where(_C.id.in_(ids), _C.ended_at < before).returning(_C.id)
    ).all()
    publish(conn, deleted)  # their open streams end
    return len(deleted)


def _page(
    conn: Connection,
    goal_id: str | None,
    status: ConversationStatus | None,
    owner: str | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> Sequence[Any]:
    query = select(*CONVERSATION_COLUMNS)
    if owner is not None:
        query = query.where(_C.owner == owner)
    if goal_id is not None:
        query = query.where(_C.goal_id == goal_id)
    if status is not None:
        query = query.where(_C.status == status.value)
    if after is not None:
        query = query.where(tuple_(_C.created_at, _C.id) < after)
    query = query.order_by(_C.created_at.desc(), _C.id.desc()).limit(limit)
    return conn.execute(query).all()


def _transition(
    conn: Connection,
    conversation_id: uuid.UUID,
    allowed_from: Sequence[ConversationStatus],
    to: ConversationStatus,
    reason: EscalationReason | None,
    note: str | None,
    idle_before: datetime | None = None,
    closing: Closing | None = None,
    origin_trace: str | None = None,
) -> Conversation | None:
    now = _now()
    values: dict[str, object] = {"status": to.value, "updated_at": now}
    if reason is not None:
        values |= {"escalation_reason": reason.value, "escalation_note": note, "escalated_at": now}
        values |= NEW_HANDOFF
    if to is ConversationStatus.COMPLETED:
        if closing is None:
            raise ValueError("a conversation ends with a closing")
        values |= ending_values(closing, now)
        # The customer left: a handoff still waiting is abandoned, one an agent held ends.
        values |= {
            "handoff_state": case(
                (_C.handoff_state == HandoffState.WAITING.value, HandoffState.ABANDONED.value),
                (_C.handoff_state == HandoffState.ASSIGNED.value, HandoffState.RESOLVED.value),
                else_=_C.handoff_state,
            ),
            "handoff_resolved_at": case(
                (_C.handoff_state.in_(OPEN_STATES), literal(now, UTCDateTime())),
                else_=_C.handoff_resolved_at,
            ),
        }
    where = [_C.id == conversation_id, _C.status.in_([s.value for s in allowed_from])]
    if idle_before is not None:  # nothing happened in it since: still idle, as it was read
        where.append(_C.updated_at < idle_before)
    row = conn.execute(
        update(CONVERSATIONS).where(*where).values(**values).returning(*CONVERSATION_COLUMNS)
    ).one_or_none()
    if row is None:
        return None
    conversation = to_conversation(row)
    if closing is not None:
        conversation = queue_judgement(conn, conversation, closing, now, origin_trace)
    step = _handoff_step(conversation, reason, now)
    if step is not None:
        append_handoff(conn, conversation, step)
    return conversation


def _handoff_step(
    conversation: Conversation, reason: EscalationReason | None, now: datetime
) -> HandoffStep | None:
    """What a transition did to the conversation's handoff, if anything."""
    handoff = conversation.handoff
    if handoff is None:
        return None
    if reason is not None:
        return HandoffStep.ESCALATED
    if handoff.resolved_at != now:  # not ended by this transition
        return None
    return HandoffStep.ABANDONED if handoff.state is HandoffState.ABANDONED else HandoffStep.ENDED


def _idle(
    conn: Connection, goal_id: str, idle_before: datetime, limit: int
) -> list[tuple[uuid.UUID, ConversationStatus]]:
    query = (
        select(_C.id, _C.status)
        .where(
            _C.goal_id == goal_id,
            _C.status.in_(OPEN_STATUSES),
            _C.updated_at < idle_before,
        )
        .order_by(_C.updated_at)
        .limit(limit)
    )
    return [(row.id, ConversationStatus(row.status)) for row in conn.execute(query)]


OPEN_STATUSES = (ConversationStatus.ACTIVE.value, ConversationStatus.ESCALATED.value)


def _count_active(conn: Connection) -> int:
    count: int = conn.execute(COUNT_ACTIVE).scalar_one()
    return count
