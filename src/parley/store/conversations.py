"""Conversation and message persistence, with keyset pagination."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, func, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.domain.errors import (
    ConversationClosedError,
    ConversationEscalatedError,
    ConversationNotFoundError,
    GoalNotFoundError,
    IdempotencyKeyReusedError,
    InvalidCursorError,
)
from parley.domain.models import (
    Conversation,
    ConversationStatus,
    Escalation,
    EscalationReason,
    Message,
    MessageStatus,
    Page,
)
from parley.domain.ports import EscalationRule, OpenedTurn, ReplyDraft
from parley.llm.types import Role, Usage
from parley.store.database import Database
from parley.store.goals import to_goal
from parley.store.tables import ConversationRow, GoalRow, MessageRow


def _now() -> datetime:
    return datetime.now(UTC)


def _to_message(row: MessageRow) -> Message:
    usage = None
    if row.total_tokens is not None:
        usage = Usage(row.prompt_tokens or 0, row.completion_tokens or 0, row.total_tokens)
    return Message(
        id=row.id,
        conversation_id=row.conversation_id,
        seq=row.seq,
        role=Role(row.role),
        content=row.content,
        created_at=row.created_at,
        model=row.model,
        usage=usage,
        reply_to=row.reply_to,
        status=MessageStatus(row.status),
    )


def _to_conversation(row: ConversationRow, messages: Sequence[MessageRow] = ()) -> Conversation:
    escalation = None
    if row.escalation_reason is not None and row.escalated_at is not None:
        escalation = Escalation(
            EscalationReason(row.escalation_reason), row.escalation_note, row.escalated_at
        )
    return Conversation(
        id=row.id,
        goal_id=row.goal_id,
        status=ConversationStatus(row.status),
        metadata=dict(row.meta),
        turns=row.turns,
        created_at=row.created_at,
        updated_at=row.updated_at,
        escalation=escalation,
        messages=tuple(_to_message(m) for m in messages),
    )


def encode_cursor(created_at: datetime, conversation_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(conversation_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, ident = json.loads(raw)
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        # Must be a UTC time the database can hold: offsets can push it past year 1 or 9999.
        return created_at.astimezone(UTC), uuid.UUID(ident)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise InvalidCursorError() from exc


class ConversationRepository:
    def __init__(self, database: Database) -> None:
        self._db = database

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
            return _to_conversation(row)

    async def get(
        self, conversation_id: uuid.UUID, *, with_messages: bool = False
    ) -> Conversation | None:
        async with self._db.session() as session:
            row = await session.get(ConversationRow, conversation_id)
            if row is None:
                return None
            messages: Sequence[MessageRow] = ()
            if with_messages:
                messages = (
                    await session.scalars(
                        select(MessageRow)
                        .where(MessageRow.conversation_id == conversation_id)
                        .order_by(MessageRow.seq)
                    )
                ).all()
            return _to_conversation(row, messages)

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
        items = tuple(_to_conversation(row) for row in rows[:limit])
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
            return await self._open_turn(
                conversation_id,
                content,
                escalate_when=escalate_when,
                history_limit=history_limit,
                idempotency_key=idempotency_key,
            )
        except _Repeated as repeated:
            return repeated.turn

    async def _open_turn(
        self,
        conversation_id: uuid.UUID,
        content: str,
        *,
        escalate_when: EscalationRule,
        history_limit: int,
        idempotency_key: str | None,
    ) -> OpenedTurn:
        async with self._db.session() as session, session.begin():
            if idempotency_key is not None:
                repeated = await _repeated_turn(
                    session, conversation_id, content, idempotency_key, history_limit
                )
                if repeated is not None:
                    return repeated
            # The conditional UPDATE is the status check and the lock in one step: a
            # concurrent turn on the same conversation waits here until this one commits,
            # then sees its outcome (PostgreSQL row lock; SQLite's write lock).
            row = await _update_returning(
                session,
                conversation_id,
                ConversationRow.status == ConversationStatus.ACTIVE.value,
                message_count=ConversationRow.message_count + 1,
                turns=ConversationRow.turns + 1,
            )
            if row is None:
                await _raise_not_open(session, conversation_id)
                raise AssertionError("unreachable")
            if idempotency_key is not None:
                # Checked again under the lock: a concurrent request with the same key may
                # have committed while this one waited.
                repeated = await _repeated_turn(
                    session, conversation_id, content, idempotency_key, history_limit
                )
                if repeated is not None:
                    raise _Repeated(repeated)  # rolls back this transaction's counters
            goal_row = await session.get(GoalRow, row.goal_id)
            assert goal_row is not None  # a goal with conversations cannot be deleted
            goal = to_goal(goal_row)
            now = _after(row.updated_at)
            reason = escalate_when(goal, row.turns)
            row.updated_at = now
            if reason is not None:
                _escalate(row, reason, None, now)
            message = MessageRow(
                id=uuid.uuid4(),
                conversation_id=conversation_id,
                seq=row.message_count,
                role=Role.USER.value,
                content=content,
                created_at=now,
                idempotency_key=idempotency_key,
            )
            session.add(message)
            await session.flush()
            history = await _history(session, conversation_id, message.seq, history_limit)
            return OpenedTurn(
                conversation=_to_conversation(row),
                goal=goal,
                question=_to_message(message),
                history=history,
                escalation=reason,
            )

    async def store_reply(
        self, question: Message, reply: ReplyDraft
    ) -> tuple[Message, Conversation]:
        try:
            stored = await self._insert_reply(question, reply)
        except IntegrityError:
            stored = None  # a concurrent retry of the same turn stored its reply first
        return stored or await self._stored_reply(question)

    async def _insert_reply(
        self, question: Message, reply: ReplyDraft
    ) -> tuple[Message, Conversation] | None:
        async with self._db.session() as session, session.begin():
            if await _reply_to(session, question.id) is None:
                row = await _lock_for_message(session, question.conversation_id)
                row.llm_failures = 0
                message = MessageRow(
                    id=uuid.uuid4(),
                    conversation_id=question.conversation_id,
                    seq=row.message_count,
                    role=Role.ASSISTANT.value,
                    content=reply.content,
                    model=reply.model,
                    prompt_tokens=reply.usage.prompt_tokens if reply.usage else None,
                    completion_tokens=reply.usage.completion_tokens if reply.usage else None,
                    total_tokens=reply.usage.total_tokens if reply.usage else None,
                    created_at=row.updated_at,
                    reply_to=question.id,
                    status=reply.status.value,
                )
                session.add(message)
                await session.flush()
                return _to_message(message), _to_conversation(row)
        return None

    async def _stored_reply(self, question: Message) -> tuple[Message, Conversation]:
        async with self._db.session() as session:
            existing = await _reply_to(session, question.id)
            row = await session.get(ConversationRow, question.conversation_id)
            assert existing is not None
            assert row is not None
            return _to_message(existing), _to_conversation(row)

    async def record_llm_failure(
        self, conversation_id: uuid.UUID, *, escalate_at: int | None
    ) -> Conversation | None:
        async with self._db.session() as session, session.begin():
            row = await _update_returning(
                session, conversation_id, llm_failures=ConversationRow.llm_failures + 1
            )
            if row is None:
                raise ConversationNotFoundError(conversation_id)
            if (
                escalate_at is None
                or row.llm_failures < escalate_at
                or row.status != ConversationStatus.ACTIVE.value
            ):
                return None
            now = _after(row.updated_at)
            row.updated_at = now
            _escalate(row, EscalationReason.LLM_FAILURE, None, now)
            return _to_conversation(row)

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
            return _to_conversation(row) if row else None

    async def count_by_status(self) -> dict[ConversationStatus, int]:
        async with self._db.session() as session:
            rows = await session.execute(
                select(ConversationRow.status, func.count()).group_by(ConversationRow.status)
            )
            counts = {status: 0 for status in ConversationStatus}
            for status, count in rows:
                counts[ConversationStatus(status)] = count
            return counts


class _Repeated(Exception):  # noqa: N818 -- control flow, not an error
    """Leaves a transaction (rolling it back) with the turn an idempotency key names."""

    def __init__(self, turn: OpenedTurn) -> None:
        self.turn = turn


def _after(previous: datetime) -> datetime:
    """Now, but never before ``previous``: times follow ``seq`` even if the clock steps back."""
    return max(_now(), previous)


def _escalate(
    row: ConversationRow, reason: EscalationReason, note: str | None, now: datetime
) -> None:
    row.status = ConversationStatus.ESCALATED.value
    row.escalation_reason = reason.value
    row.escalation_note = note
    row.escalated_at = now
    row.updated_at = now


async def _update_returning(
    session: AsyncSession,
    conversation_id: uuid.UUID,
    *conditions: ColumnElement[bool],
    **values: object,
) -> ConversationRow | None:
    """One UPDATE ... RETURNING: the change, the row as it is now, and its lock until commit."""
    return (
        await session.scalars(
            update(ConversationRow)
            .where(ConversationRow.id == conversation_id, *conditions)
            .values(**values)
            .returning(ConversationRow)
            .execution_options(populate_existing=True)
        )
    ).one_or_none()


async def _lock_for_message(session: AsyncSession, conversation_id: uuid.UUID) -> ConversationRow:
    """Take the conversation's next ``seq`` (and its lock); ``updated_at`` becomes the new
    message's time."""
    row = await _update_returning(
        session, conversation_id, message_count=ConversationRow.message_count + 1
    )
    if row is None:
        raise ConversationNotFoundError(conversation_id)
    row.updated_at = _after(row.updated_at)
    return row


async def _raise_not_open(session: AsyncSession, conversation_id: uuid.UUID) -> None:
    status = await session.scalar(
        select(ConversationRow.status).where(ConversationRow.id == conversation_id)
    )
    if status is None:
        raise ConversationNotFoundError(conversation_id)
    if status == ConversationStatus.ESCALATED.value:
        raise ConversationEscalatedError()
    raise ConversationClosedError()


async def _history(
    session: AsyncSession, conversation_id: uuid.UUID, up_to_seq: int, limit: int
) -> tuple[Message, ...]:
    rows = (
        await session.scalars(
            select(MessageRow)
            .where(MessageRow.conversation_id == conversation_id, MessageRow.seq <= up_to_seq)
            .order_by(MessageRow.seq.desc())
            .limit(limit)
        )
    ).all()
    return tuple(_to_message(row) for row in reversed(rows))


async def _reply_to(session: AsyncSession, question_id: uuid.UUID) -> MessageRow | None:
    return (
        await session.scalars(select(MessageRow).where(MessageRow.reply_to == question_id))
    ).one_or_none()


async def _repeated_turn(
    session: AsyncSession,
    conversation_id: uuid.UUID,
    content: str,
    idempotency_key: str,
    history_limit: int,
) -> OpenedTurn | None:
    question = (
        await session.scalars(
            select(MessageRow).where(
                MessageRow.conversation_id == conversation_id,
                MessageRow.idempotency_key == idempotency_key,
            )
        )
    ).one_or_none()
    if question is None:
        return None
    if question.content != content:
        raise IdempotencyKeyReusedError()
    conversation = await session.get(ConversationRow, conversation_id)
    assert conversation is not None
    goal = await session.get(GoalRow, conversation.goal_id)
    assert goal is not None
    reply = await _reply_to(session, question.id)
    return OpenedTurn(
        conversation=_to_conversation(conversation),
        goal=to_goal(goal),
        question=_to_message(question),
        history=await _history(session, conversation_id, question.seq, history_limit),
        reply=_to_message(reply) if reply is not None else None,
        repeated=True,
    )
