"""Goal persistence."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Row, delete, exists, select
from sqlalchemy.exc import IntegrityError

from parley.domain.errors import GoalExistsError, GoalInUseError
from parley.domain.models import EscalationPolicy, Goal
from parley.store.database import Database
from parley.store.tables import ConversationRow, GoalRow


def to_goal(row: GoalRow | Row[Any]) -> Goal:
    return Goal(
        id=row.id,
        name=row.name,
        instructions=row.instructions,
        model=row.model,
        escalation=EscalationPolicy(
            max_turns=row.max_turns,
            trigger_phrases=tuple(row.trigger_phrases),
            on_llm_failure=row.escalate_on_llm_failure,
            max_llm_failures=row.max_llm_failures,
        ),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _fill(row: GoalRow, goal: Goal) -> None:
    row.name = goal.name
    row.instructions = goal.instructions
    row.model = goal.model
    row.max_turns = goal.escalation.max_turns
    row.trigger_phrases = list(goal.escalation.trigger_phrases)
    row.escalate_on_llm_failure = goal.escalation.on_llm_failure
    row.max_llm_failures = goal.escalation.max_llm_failures
    row.created_at = goal.created_at
    row.updated_at = goal.updated_at


class GoalCache:
    """Goals as recently read. Every turn needs its goal (instructions and escalation
    policy) and goals change rarely, so a turn reads it from here when it can. This
    process's own changes drop an entry at once; another replica's are seen within
    ``ttl_seconds`` (0: no cache)."""

    MAX_ENTRIES = 10_000  # goals are few; a bound all the same

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[str, tuple[float, Goal]] = {}

    def get(self, goal_id: str) -> Goal | None:
        entry = self._entries.get(goal_id)
        if entry is None:
            return None
        read_at, goal = entry
        if self._clock() - read_at >= self._ttl:
            self._entries.pop(goal_id, None)  # turns read it from several threads
            return None
        return goal

    def put(self, goal: Goal) -> Goal:
        if self._ttl > 0:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[goal.id] = (self._clock(), goal)
        return goal

    def drop(self, goal_id: str) -> None:
        self._entries.pop(goal_id, None)


class GoalRepository:
    def __init__(self, database: Database, cache: GoalCache | None = None) -> None:
        self._db = database
        self._cache = cache or GoalCache(0)

    async def add(self, goal: Goal) -> Goal:
        row = GoalRow(id=goal.id)
        _fill(row, goal)
        async with self._db.session() as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise GoalExistsError(goal.id) from exc
        return goal

    async def get(self, goal_id: str) -> Goal | None:
        async with self._db.session() as session:
            row = await session.get(GoalRow, goal_id)
            return to_goal(row) if row else None

    async def all(self) -> list[Goal]:
        async with self._db.session() as session:
            rows = await session.scalars(select(GoalRow).order_by(GoalRow.id))
            return [to_goal(row) for row in rows]

    async def oldest_ids(self, limit: int) -> list[str]:
        async with self._db.session() as session:
            ids = await session.scalars(
                select(GoalRow.id).order_by(GoalRow.created_at, GoalRow.id).limit(limit)
            )
            return list(ids)

    async def replace(self, goal: Goal) -> Goal | None:
        """Store ``goal`` over the existing one; ``None`` if it is gone."""
        async with self._db.session() as session, session.begin():
            row = await session.get(GoalRow, goal.id, with_for_update=True)
            if row is None:
                return None
            _fill(row, goal)
        self._cache.drop(goal.id)
        return goal

    async def delete(self, goal_id: str) -> bool:
        async with self._db.session() as session, session.begin():
            in_use = await session.scalar(
                select(exists().where(ConversationRow.goal_id == goal_id))
            )
            if in_use:
                raise GoalInUseError(goal_id)
            try:
                result = await session.execute(delete(GoalRow).where(GoalRow.id == goal_id))
            except IntegrityError as exc:  # a conversation was created meanwhile
                raise GoalInUseError(goal_id) from exc
            self._cache.drop(goal_id)
            return bool(getattr(result, "rowcount", 0))
