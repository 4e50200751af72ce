"""API key persistence: SQLAlchemy Core statements, each transaction run whole by
``Database.run_transaction``. Only digests are stored."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Date, bindparam, exists, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from parley.domain.keys import ApiKey, KeyLimits, to_nanos
from parley.store.database import Database, read_only_never_waiting
from parley.store.rows import to_key
from parley.store.tables import API_KEYS, KEY_EPOCH, KEY_SPEND, UTCDateTime

# Every replica keeps the keys it read while told of every change (parley.bus): NOTIFY is
# sent inside the transaction that changes a key, so only a committed change is told.
CHANNEL = "parley_keys"
_NOTIFY = text("SELECT pg_notify(:channel, :key_name)")
_NEXT_EPOCH = update(KEY_EPOCH).values(epoch=KEY_EPOCH.c.epoch + 1)
_EPOCH_SQL = "SELECT epoch FROM key_epoch"
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
# What a key spent since a day (the primary key's range): read alone, and in the UPDATE
# that opens a budgeted key's turn (parley.store.turns).
SPENT_SINCE = select(func.coalesce(func.sum(_S.cost_nanos), 0)).where(
    _S.key_name == bindparam("key_name"), _S.day >= bindparam("since", type_=Date)
)
_SPENT_DAILY = select(_S.key_name, _S.day, _S.cost_nanos).where(
    _S.day >= bindparam("since", type_=Date)
)
_TOUCH = (
    update(API_KEYS)
    .where(_K.name == bindparam("key_name"))
    .values(last_used_at=bindparam("when", type_=UTCDateTime()))
)


class KeyRepository:
    def __init__(self, database: Database) -> None:
        self._db = database

    def epoch_reader(self) -> SQLiteKeyEpoch | None:
        """On SQLite, what tells a replica that keys changed (on PostgreSQL: parley.bus)."""
        if self._db.engine.dialect.name != "sqlite":
            return None
        path = self._db.engine.url.database
        return None if path in (None, "", ":memory:") else SQLiteKeyEpoch(path)

    async def add(self, key: ApiKey) -> bool:
        try:
            await self._db.run_transaction(_insert, key)
        except IntegrityError:  # the name (or, vanishingly unlikely, the digest) is taken
            return False
        return True

    async def get(self, name: str) -> ApiKey | None:
        return await self._db.run_transaction(_one, _BY_NAME, {"name": name})

    async def by_digest(self, digest: str) -> ApiKey | None:
        # Every request's read (unless cached): on the event loop on SQLite, alone on
        # PostgreSQL.
        return await self._db.run_read(_one, _BY_DIGEST, {"digest": digest})

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


def _all(conn: Connection) -> list[ApiKey]:
    return [to_key(row) for row in conn.execute(_ALL)]


def _revoke(conn: Connection, name: str, when: datetime) -> ApiKey | None:
    conn.execute(_REVOKE, {"key_name": name, "when": when})
    _tell_replicas(conn, name)
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
    _tell_replicas(conn, name)
    return None if row is None else to_key(row)


def _tell_replicas(conn: Connection, name: str) -> None:
    """A key changed: the epoch moves (SQLite's replicas read it), and on PostgreSQL every
    replica is told (its listener), both only once the transaction commits."""
    conn.execute(_NEXT_EPOCH)
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY, {"channel": CHANNEL, "key_name": name})


class SQLiteKeyEpoch:
    """``KeyChanges`` on SQLite: the key_epoch row, read on every request through a
    connection of its own (the standard library's driver, kept open, read-only, never
    waiting for a lock): a few microseconds on the event loop, where reading the key
    through SQLAlchemy cost a fifth of a millisecond. A commit that moved it is seen by
    the next request, so a revoked key still stops at once. Any error: None (the key is
    read)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None

    def epoch(self) -> int | None:
        try:
            if self._connection is None:
                self._connection = _epoch_connection(self._path)
            # fetchall steps to the end: no read transaction is left open between calls.
            rows = self._connection.execute(_EPOCH_SQL).fetchall()
        except sqlite3.Error:  # busy, or no such table yet: read the key
            self.close()
            return None
        return int(rows[0][0]) if rows else None

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def _epoch_connection(path: str) -> sqlite3.Connection:
    # Only ever used on the event loop, but a new loop (as in tests) may run in another
    # thread; autocommit, so that no snapshot is held.
    uri = Path(path).resolve().as_uri() + "?mode=rw"  # never creates the file
    connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    read_only_never_waiting(connection)
    return connection


def _touch(conn: Connection, name: str, when: datetime) -> None:
    conn.execute(_TOUCH, {"key_name": name, "when": when})


def _any(conn: Connection) -> bool:
    return bool(conn.scalar(_ANY))


def _spent(conn: Connection, name: str, since: date) -> int:
    return int(conn.scalar(SPENT_SINCE, {"key_name": name, "since": since}) or 0)


def _spent_daily(conn: Connection, since: date) -> dict[str, dict[date, int]]:
    daily: dict[str, dict[date, int]] = defaultdict(dict)
    for name, day, cost in conn.execute(_SPENT_DAILY, {"since": since}):
        daily[name][day] = int(cost)
    return dict(daily)
