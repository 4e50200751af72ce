"""Conversation and message persistence, with keyset pagination."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from parley.domain.errors import GoalNotFoundError
from parley.domain.models import (
    Conversation,
    ConversationStatus,
    EscalationReason,
    Message,
    Page,
)
from parley.domain.paging import decode_cursor, encode_cursor
from parley.domain.ports import EscalationRule, OpenedTurn, ReplyDraft
from parley.store import turns
from parley.store.database import Database
from parley.store.goals import GoalCache
from parley.store.tables import ConversationRow, MessageRow
from parley.store.turns import now as _now
from parley.store.turns import to_conversation, to_message

# The scrape's count: a range of the status index, so its cost follows the active
# conversations, not every conversation ever stored.
COUNT_ACTIVE = (
    select(func.count())
    .select_from(ConversationRow)
    .where(ConversationRow.status == ConversationStatus.ACTIVE.value)
)


class ConversationRepository:
    def __init__(self, database: Database, goals: GoalCache | None = None) -> None:
        self._db = database
        self._goals = goals or GoalCache(0)

    async def create(self, goal_id: str, metadata: dict[str, object]) -> Conversation:
        now = _now()
        row = ConversationRow(
            id=uuid.uuid4(),
            goal_id=goal_id,
            status=ConversationStatus.ACTIVE.value,
            meta=metadata,
            message_count=0,
            turns=0,
            created_at=now,
            updated_at=now,
        )
        async with self._db.session() as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError as exc:  # the goal was deleted meanwhile
                raise GoalNotFoundError(goal_id) from exc
            return to_conversation(row)

    async def get(
        self,
        conversation_id: uuid.UUID,
        *,
        with_messages: bool = False,
        messages_limit: int | None = None,
        messages_before: int | None = None,
    ) -> Conversation | None:
        async with self._db.session() as session:
            row = await session.get(ConversationRow, conversation_id)
            if row is None:
                return None
            messages: Sequence[MessageRow] = ()
            if with_messages:
                # Newest first, so a limit keeps the latest; returned oldest first.
                query = (
                    select(MessageRow)
                    .where(MessageRow.conversation_id == conversation_id)
                    .order_by(MessageRow.seq.desc())
                )
                if messages_before is not None:
                    query = query.where(MessageRow.seq < messages_before)
                if messages_limit is not None:
                    query = query.limit(messages_limit)
                messages = list(reversed((await session.scalars(query)).all()))
            return to_conversation(row, tuple(to_message(m) for m in messages))

    async def page(
        self,
        *,
        goal_id: str | None = None,
        status: ConversationStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        query = select(ConversationRow)
        if goal_id is not None:
            query = query.where(ConversationRow.goal_id == goal_id)
        if status is not None:
            query = query.where(ConversationRow.status == status.value)
        if cursor is not None:
            created_at, last_id = decode_cursor(cursor)
            query = query.where(
                tuple_(ConversationRow.created_at, ConversationRow.id) < (created_at, last_id)
            )
        query = query.order_by(ConversationRow.created_at.desc(), ConversationRow.id.desc())
        async with self._db.session() as session:
            rows = (await session.scalars(query.limit(limit + 1))).all()
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
    ) -> OpenedTurn:
        try:
            return await self._db.run_transaction(
                turns.open_turn,
                conversation_id,
                content,
                escalate_when=escalate_when,
                history_limit=history_limit,
                idempotency_key=idempotency_key,
                goals=self._goals,
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

    async def transition(
        self,
        conversation_id: uuid.UUID,
        *,
        allowed_from: Sequence[ConversationStatus],
        to: ConversationStatus,
        reason: EscalationReason | None = None,
        note: str | None = None,
    ) -> Conversation | None:
        """Move to ``to`` only from a status in ``allowed_from``; ``None`` if not allowed."""
        now = _now()
        values: dict[str, object] = {"status": to.value, "updated_at": now}
        if reason is not None:
            values |= {
                "escalation_reason": reason.value,
                "escalation_note": note,
                "escalated_at": now,
            }
        async with self._db.session() as session, session.begin():
            result = await session.execute(
                update(ConversationRow)
                .where(
                    ConversationRow.id == conversation_id,
                    ConversationRow.status.in_([s.value for s in allowed_from]),
                )
                .values(**values)
                .returning(ConversationRow)
            )
            row = result.scalar_one_or_none()
            return to_conversation(row) if row else None

    async def count_active(self) -> int:
        async with self._db.transaction() as connection:
            count: int = (await connection.execute(COUNT_ACTIVE)).scalar_one()
            return count
