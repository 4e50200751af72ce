"""The judge's queue and its verdicts, in the evaluations table: one row per judged end,
written with the end itself (parley.store.endings). A replica claims due rows with a lease
(a conditional update, which two replicas cannot both win; ``SKIP LOCKED`` on PostgreSQL
keeps them off each other's rows), and a verdict becomes the conversation's outcome in
the transaction that stores it."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select, update

from parley.domain.models import (
    Conversation,
    EvaluationState,
    JudgeJob,
    OutcomeSource,
    Verdict,
)
from parley.store.database import Database
from parley.store.rows import CONVERSATION_COLUMNS, to_conversation, to_evaluation
from parley.store.tables import CONVERSATIONS, EVALUATIONS

_E, _C = EVALUATIONS.c, CONVERSATIONS.c
_PENDING = EvaluationState.PENDING.value


class EvaluationRepository:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def claim(self, now: datetime, lease_seconds: float, limit: int) -> list[JudgeJob]:
        return await self._db.run_transaction(_claim, now, timedelta(seconds=lease_seconds), limit)

    async def judged(
        self, conversation_id: uuid.UUID, verdict: Verdict, model: str, now: datetime
    ) -> Conversation | None:
        return await self._db.run_transaction(_judged, conversation_id, verdict, model, now)

    async def retry(self, conversation_id: uuid.UUID, at: datetime, error: str) -> None:
        await self._db.run_transaction(
            _set, conversation_id, next_attempt_at=at, last_error=error[:200]
        )

    async def give_up(
        self, conversation_id: uuid.UUID, error: str, now: datetime
    ) -> Conversation | None:
        return await self._db.run_transaction(_give_up, conversation_id, error[:200], now)

    async def pending(self) -> int:
        return await self._db.run_transaction(_pending)


def _claim(conn: Connection, now: datetime, lease: timedelta, limit: int) -> list[JudgeJob]:
    due = (_E.state == _PENDING) & (_E.next_attempt_at <= now)
    ids = list(
        conn.scalars(
            select(_E.conversation_id)
            .where(due)
            .order_by(_E.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        return []
    # Conditional: a row another replica took since (SQLite has no row locks) stays its.
    rows = conn.execute(
        update(EVALUATIONS)
        .where(_E.conversation_id.in_(ids), due)
        .values(next_attempt_at=now + lease, attempts=_E.attempts + 1)
        .returning(_E.conversation_id, _E.goal_id, _E.attempts, _E.created_at)
    ).all()
    return [
        JudgeJob(row.conversation_id, row.goal_id, row.attempts, row.created_at) for row in rows
    ]


def _judged(
    conn: Connection, conversation_id: uuid.UUID, verdict: Verdict, model: str, now: datetime
) -> Conversation | None:
    evaluation = conn.execute(
        update(EVALUATIONS)
        .where(_E.conversation_id == conversation_id, _E.state == _PENDING)
        .values(
            state=EvaluationState.DONE.value,
            label=verdict.label.value,
            score=verdict.score,
            explanation=verdict.explanation,
            model=model[:200],
            evaluated_at=now,
            last_error=None,
        )
        .returning(EVALUATIONS)
    ).one_or_none()
    if evaluation is None:
        return None
    row = conn.execute(
        update(CONVERSATIONS)
        .where(_C.id == conversation_id)
        .values(outcome=verdict.label.value, outcome_source=OutcomeSource.JUDGE.value)
        .returning(*CONVERSATION_COLUMNS)
    ).one()
    return to_conversation(row, evaluation=to_evaluation(evaluation))


def _give_up(
    conn: Connection, conversation_id: uuid.UUID, error: str, now: datetime
) -> Conversation | None:
    evaluation = conn.execute(
        update(EVALUATIONS)
        .where(_E.conversation_id == conversation_id, _E.state == _PENDING)
        .values(state=EvaluationState.FAILED.value, last_error=error, evaluated_at=now)
        .returning(EVALUATIONS)
    ).one_or_none()
    if evaluation is None:
        return None
    row = conn.execute(select(*CONVERSATION_COLUMNS).where(_C.id == conversation_id)).one()
    return to_conversation(row, evaluation=to_evaluation(evaluation))


def _set(conn: Connection, conversation_id: uuid.UUID, /, **values: Any) -> None:
    conn.execute(
        update(EVALUATIONS)
        .where(_E.conversation_id == conversation_id, _E.state == _PENDING)
        .values(**values)
    )


def _pending(conn: Connection) -> int:
    count: int = conn.execute(
        select(func.count()).select_from(EVALUATIONS).where(_E.state == _PENDING)
    ).scalar_one()
    return count
