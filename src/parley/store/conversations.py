"""Conversation and message persistence, with keyset pagination."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from parley.domain.errors import ConversationNotFoundError, GoalNotFoundError, InvalidCursorError
from parley.domain.models import (
    Conversation,
    ConversationStatus,
    Escalation,
    EscalationReason,
    Message,
    Page,
)
from parley.llm.types import Role, Usage
from parley.store.database import Database
from parley.store.tables import ConversationRow, MessageRow


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
        return created_at, uuid.UUID(ident)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
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

    async def recent_messages(self, conversation_id: uuid.UUID, limit: int) -> list[Message]:
        async with self._db.session() as session:
            rows = (
                await session.scalars(
                    select(MessageRow)
                    .where(MessageRow.conversation_id == conversation_id)
                    .order_by(MessageRow.seq.desc())
                    .limit(limit)
                )
            ).all()
        return [_to_message(row) for row in reversed(rows)]

    async def append_message(
        self,
        conversation_id: uuid.UUID,
        role: Role,
        content: str,
        *,
        model: str | None = None,
        usage: Usage | None = None,
    ) -> tuple[Message, int]:
        """Store a message; returns it with the conversation's user-turn count."""
        now = _now()
        async with self._db.session() as session, session.begin():
            # One atomic UPDATE ... RETURNING hands out the sequence number, so concurrent
            # writers to one conversation never collide.
            counters = (
                await session.execute(
                    update(ConversationRow)
                    .where(ConversationRow.id == conversation_id)
                    .values(
                        message_count=ConversationRow.message_count + 1,
                        turns=ConversationRow.turns + (1 if role is Role.USER else 0),
                        updated_at=now,
                    )
                    .returning(ConversationRow.message_count, ConversationRow.turns)
                )
            ).one_or_none()
            if counters is None:
                raise ConversationNotFoundError(conversation_id)
            seq, turns = counters
            row = MessageRow(
                id=uuid.uuid4(),
                conversation_id=conversation_id,
                seq=seq,
                role=role.value,
                content=content,
                model=model,
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=usage.completion_tokens if usage else None,
                total_tokens=usage.total_tokens if usage else None,
                created_at=now,
            )
            session.add(row)
        return _to_message(row), turns

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
