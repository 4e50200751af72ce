"""API key persistence: SQLAlchemy Core statements, each transaction run whole by
``Database.run_transaction``. Only digests are stored."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Date, bindparam, case, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from parley.domain.keys import ApiKey, BudgetPeriod, KeyLimits, to_nanos
from parley.store.database import Database
from parley.store.rows import to_key
from parley.store.tables import API_KEYS, KEY_SPEND, UTCDateTime

_K = API_KEYS.c
_BY_NAME = select(API_KEYS).where(_K.name == bindparam("name"))
# A request's one read: the unique index on digest.
_BY_DIGEST = select(API_KEYS).where(_K.digest == bindparam("digest"))
_ALL = select(API_KEYS).order_by(_K.name)
_ANY = select(exists().where(_K.name.is_not(None)))
_REVOKE = (
    update(API_KEYS)
    .where(_K.name == bindparam("key_name"), _K.revoked_at.is_(None))
    .values(revoked_at=bindparam("when", type_=UTCDateTime()))
)
_S = KEY_SPEND.c
_SPENT = select(func.coalesce(func.sum(_S.cost_nanos), 0)).where(
    _S.key_name == bindparam("key_name"), _S.day >= bindparam("since", type_=Date)
)
_SPENT_DAILY = select(_S.key_name, _S.day, _S.cost_nanos).where(
    _S.day >= bindparam("since", type_=Date)
)
# A request's one read: its key by the unique index on digest, and what the key spent in
# its own budget period (the primary key's range).
_PERIOD_START = case(
    (_K.budget_period == "day", bindparam("day_start", type_=Date)),
    (_K.budget_period == "week", bindparam("week_start", type_=Date)),
    else_=bindparam("month_start", type_=Date),
)
_SPENT_IN_PERIOD = (
    select(func.coalesce(func.sum(_S.cost_nanos), 0))
    .where(_S.key_name == _K.name, _S.day >= _PERIOD_START)
    .scalar_subquery()
)
_BY_DIGEST_WITH_SPEND = select(API_KEYS, _SPENT_IN_PERIOD.label("spent_nanos")).where(
    _K.digest == bindparam("digest")
)
_TOUCH = (
    update(API_KEYS)
    .where(_K.name == bindparam("key_name"))
    .values(last_used_at=bindparam("when", type_=UTCDateTime()))
)


class KeyRepository:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def add(self, key: ApiKey) -> bool:
        try:
            await self._db.run_transaction(_insert, key)
        except IntegrityError:  # the name (or, vanishingly unlikely, the digest) is taken
            return False
        return True

    async def get(self, name: str) -> ApiKey | None:
        return await self._db.run_transaction(_one, _BY_NAME, {"name": name})

    async def by_digest(self, digest: str) -> ApiKey | None:
        return await self._db.run_read(_one, _BY_DIGEST, {"digest": digest})

    async def by_digest_with_spend(
        self, digest: str, period_starts: Mapping[BudgetPeriod, date]
    ) -> tuple[ApiKey, int] | None:
        # Every request's read: on the event loop on SQLite, alone on PostgreSQL.
        return await self._db.run_read(_with_spend, digest, period_starts)

    async def all(self) -> list[ApiKey]:
        return await self._db.run_transaction(_all)

    async def revoke(self, name: str, when: datetime) -> ApiKey | None:
        return await self._db.run_transaction(_revoke, name, when)

    async def set_limits(self, name: str, limits: KeyLimits) -> ApiKey | None:
        return await self._db.run_transaction(_set_limits, name, limits)

    async def touch(self, name: str, when: datetime) -> None:
        await self._db.run_transaction(_touch, name, when)

    async def any_exist(self) -> bool:
        return await self._db.run_read(_any)

    async def spent(self, name: str, since: date) -> int:
        return await self._db.run_transaction(_spent, name, since)

    async def spent_daily(self, since: date) -> dict[str, dict[date, int]]:
        return await self._db.run_transaction(_spent_daily, since)


def _insert(conn: Connection, key: ApiKey) -> None:
    conn.execute(
        insert(API_KEYS),
        {
            "name": key.name,
            "role": key.role.value,
            "digest": key.digest,
            "created_at": key.created_at,
            "last_used_at": key.last_used_at,
            "revoked_at": key.revoked_at,
            "budget_nanos": (
                None if key.limits.budget_usd is None else to_nanos(key.limits.budget_usd)
            ),
            "budget_period": key.limits.budget_period.value,
            "rpm": key.limits.rpm,
            "tpm": key.limits.tpm,
        },
    )


def _one(conn: Connection, statement: Any, parameters: dict[str, str]) -> ApiKey | None:
    row = conn.execute(statement, parameters).one_or_none()
    return to_key(row) if row is not None else None


def _with_spend(
    conn: Connection, digest: str, starts: Mapping[BudgetPeriod, date]
) -> tuple[ApiKey, int] | None:
    parameters = {
        "digest": digest,
        "day_start": starts[BudgetPeriod.DAY],
        "week_start": starts[BudgetPeriod.WEEK],
        "month_start": starts[BudgetPeriod.MONTH],
    }
    row = conn.execute(_BY_DIGEST_WITH_SPEND, parameters).one_or_none()
    return (to_key(row), int(row.spent_nanos)) if row is not None else None


def _all(conn: Connection) -> list[ApiKey]:
    return [to_key(row) for row in conn.execute(_ALL)]


def _revoke(conn: Connection, name: str, when: datetime) -> ApiKey | None:
    conn.execute(_REVOKE, {"key_name": name, "when": when})
    return _one(conn, _BY_NAME, {"name": name})


def _set_limits(conn: Connection, name: str, limits: KeyLimits) -> ApiKey | None:
    row = conn.execute(
        update(API_KEYS)
        .where(_K.name == name)
        .values(
            budget_nanos=None if limits.budget_usd is None else to_nanos(limits.budget_usd),
            budget_period=limits.budget_period.value,
            rpm=limits.rpm,
            tpm=limits.tpm,
        )
        .returning(API_KEYS)
    ).one_or_none()
    return None if row is None else to_key(row)


def _touch(conn: Connection, name: str, when: datetime) -> None:
    conn.execute(_TOUCH, {"key_name": name, "when": when})


def _any(conn: Connection) -> bool:
    return bool(conn.scalar(_ANY))


def _spent(conn: Connection, name: str, since: date) -> int:
    return int(conn.scalar(_SPENT, {"key_name": name, "since": since}) or 0)


def _spent_daily(conn: Connection, since: date) -> dict[str, dict[date, int]]:
    daily: dict[str, dict[date, int]] = defaultdict(dict)
    for name, day, cost in conn.execute(_SPENT_DAILY, {"since": since}):
        daily[name][day] = int(cost)
    return dict(daily)
