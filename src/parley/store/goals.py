"""Goal persistence: SQLAlchemy Core statements, each transaction run whole by
``Database.run_transaction`` (the store's one execution model)."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection, Integer, bindparam, delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from parley.domain.errors import GoalExistsError, GoalInUseError
from parley.domain.models import Goal
from parley.store.database import Database
from parley.store.rows import goal_values, to_goal
from parley.store.tables import CONVERSATIONS, GOALS

_BY_ID = select(GOALS).where(GOALS.c.id == bindparam("goal_id"))
_ALL = select(GOALS).order_by(GOALS.c.id)
_OLDEST = (
    select(GOALS.c.id)
    .order_by(GOALS.c.created_at, GOALS.c.id)
    .limit(bindparam("limit", type_=Integer))
)
_IN_USE = select(exists().where(CONVERSATIONS.c.goal_id == bindparam("goal_id")))


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
        try:
            await self._db.run_transaction(_insert, goal)
        except IntegrityError as exc:
            raise GoalExistsError(goal.id) from exc
        return goal

    async def get(self, goal_id: str) -> Goal | None:
        return await self._db.run_transaction(_get, goal_id)

    async def all(self) -> list[Goal]:
        return await self._db.run_transaction(_all)

    async def oldest_ids(self, limit: int) -> list[str]:
        return await self._db.run_transaction(_oldest_ids, limit)

    async def replace(self, goal: Goal) -> Goal | None:
        """Store ``goal`` over the existing one; ``None`` if it is gone."""
        replaced = await self._db.run_transaction(_replace, goal)
        self._cache.drop(goal.id)
        return goal if replaced else None

    async def delete(self, goal_id: str) -> bool:
        try:
            deleted = await self._db.run_transaction(_delete, goal_id)
        except IntegrityError as exc:  # a conversation was created meanwhile
            raise GoalInUseError(goal_id) from exc
        self._cache.drop(goal_id)
        return deleted


def _insert(conn: Connection, goal: Goal) -> None:
    conn.execute(insert(GOALS), goal_values(goal))


def _get(conn: Connection, goal_id: str) -> Goal | None:
    row = conn.execute(_BY_ID, {"goal_id": goal_id}).one_or_none()
    return to_goal(row) if row is not None else None


def _all(conn: Connection) -> list[Goal]:
    return [to_goal(row) for row in conn.execute(_ALL)]


def _oldest_ids(conn: Connection, limit: int) -> list[str]:
    return list(conn.scalars(_OLDEST, {"limit": limit}))


def _replace(conn: Connection, goal: Goal) -> bool:
    values = goal_values(goal)
    del values["id"]
    result = conn.execute(update(GOALS).where(GOALS.c.id == goal.id).values(**values))
    return bool(result.rowcount)


def _delete(conn: Connection, goal_id: str) -> bool:
    if conn.scalar(_IN_USE, {"goal_id": goal_id}):
        raise GoalInUseError(goal_id)
    result = conn.execute(delete(GOALS).where(GOALS.c.id == goal_id))
    return bool(result.rowcount)
