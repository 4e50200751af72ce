"""A goal's results from the conversations table: counts by outcome, how many were
contained, and each outcome's median turns and duration (an ordered read of the ended
index's range, so the cost follows the window, not every conversation ever stored)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Float, and_, cast, exists, func, select

from parley.domain.models import EvaluationState, Outcome
from parley.domain.outcomes import GoalResults, OutcomeStats
from parley.store.tables import CONVERSATIONS, EVALUATIONS

_C, _EV = CONVERSATIONS.c, EVALUATIONS.c

# Awaiting the judge: ended, not yet final (the metrics count it once its verdict is in).
_JUDGING = exists().where(_EV.conversation_id == _C.id, _EV.state == EvaluationState.PENDING.value)


def goal_results(conn: Connection, goal_id: str, since: datetime) -> GoalResults:
    window = and_(_C.goal_id == goal_id, _C.ended_at >= since)
    final = and_(window, ~_JUDGING)
    judging = conn.execute(select(func.count()).where(window, _JUDGING)).scalar_one()
    counts = conn.execute(
        select(_C.outcome, func.count(), func.count(_C.escalated_at))
        .where(final)
        .group_by(_C.outcome)
    ).all()
    by_outcome: dict[Outcome, OutcomeStats] = {}
    ended = contained = 0
    for outcome in Outcome:
        count, escalated = next(((n, e) for o, n, e in counts if o == outcome.value), (0, 0))
        ended += count
        contained += count - escalated
        in_outcome = and_(final, _C.outcome == outcome.value)
        duration: ColumnElement[Any] = func.extract("epoch", _C.ended_at - _C.created_at)
        if conn.dialect.name == "sqlite":
            duration = (func.julianday(_C.ended_at) - func.julianday(_C.created_at)) * 86400.0
        by_outcome[outcome] = OutcomeStats(
            count=count,
            median_turns=_median(conn, cast(_C.ended_turns, Float), in_outcome, count),
            median_duration_seconds=_median(conn, duration, in_outcome, count),
        )
    return GoalResults(
        goal_id=goal_id,
        since=since,
        ended=ended,
        contained=contained,
        judging=judging,
        by_outcome=by_outcome,
    )


def _median(conn: Connection, value: Any, where: Any, count: int) -> float | None:
    """The median of ``value`` over ``count`` rows: the middle one or two, in order."""
    if count == 0:
        return None
    middle: Sequence[Any] = conn.scalars(
        select(value).where(where).order_by(value).offset((count - 1) // 2).limit(2 - count % 2)
    ).all()
    return sum(float(v) for v in middle) / len(middle)
