"""A conversation's end, written by the statement that ends it (a close, an idle sweep, an
agent's resolve): when, the outcome and who gave it, its customer's messages by then; and,
for the judge, its place in the evaluations queue in the same transaction, so no end is
lost to a crash between the two."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, insert, literal, select

from parley.domain.models import (
    Closing,
    Conversation,
    Evaluation,
    EvaluationState,
    HandoffState,
    Outcome,
)
from parley.store.tables import CONVERSATIONS, EVALUATIONS, MESSAGES

_C = CONVERSATIONS.c
_M = MESSAGES.c

_USER_MESSAGES = (
    select(func.count())
    .where(_M.conversation_id == _C.id, _M.role == "user")
    .correlate(CONVERSATIONS)
    .scalar_subquery()
)


def ending_values(closing: Closing, now: datetime) -> dict[str, Any]:
    """The columns an end sets, read against the row as it was before it (a handoff still
    waiting when its customer leaves makes the outcome abandoned, unless one is given)."""
    outcome: Any = literal(closing.outcome.value) if closing.outcome is not None else None
    if outcome is None:
        outcome = case(
            (_C.handoff_state == HandoffState.WAITING.value, Outcome.ABANDONED.value),
            else_=Outcome.UNKNOWN.value,
        )
    return {
        "ended_at": now,
        "outcome": outcome,
        "outcome_source": closing.source.value,
        "ended_turns": _USER_MESSAGES,
    }


def queue_judgement(
    conn: Connection,
    conversation: Conversation,
    closing: Closing,
    now: datetime,
    origin_trace: str | None = None,
) -> Conversation:
    """The ended conversation, in the judge's queue if its closing asks for a verdict
    (``origin_trace``: the trace of the request ending it, kept for the verdict's span)."""
    if not closing.judged:
        return conversation
    conn.execute(
        insert(EVALUATIONS).values(
            conversation_id=conversation.id,
            goal_id=conversation.goal_id,
            state=EvaluationState.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            origin_trace=origin_trace,
        )
    )
    pending = Evaluation(
        state=EvaluationState.PENDING, attempts=0, created_at=now, origin_trace=origin_trace
    )
    return dataclasses.replace(conversation, evaluation=pending)
