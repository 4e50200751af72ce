"""API key persistence: SQLAlchemy Core statements, each transaction run whole by
``Database.run_transaction``. Only digests are stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from parley.domain.keys import ApiKey
from parley.store.database import Database
from parley.store.rows import to_key
from parley.store.tables import API_KEYS, UTCDateTime

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
        return await self._db.run_transaction(_one, _BY_DIGEST, {"digest": digest})

    async def all(self) -> list[ApiKey]:
        return await self._db.run_transaction(_all)

    async def revoke(self, name: str, when: datetime) -> ApiKey | None:
        return await self._db.run_transaction(_revoke, name, when)

    async def touch(self, name: str, when: datetime) -> None:
        await self._db.run_transaction(_touch, name, when)

    async def any_exist(self) -> bool:
        return await self._db.run_transaction(_any)


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
        },
    )


def _one(conn: Connection, statement: Any, parameters: dict[str, str]) -> ApiKey | None:
    row = conn.execute(statement, parameters).one_or_none()
    return to_key(row) if row is not None else None


def _all(conn: Connection) -> list[ApiKey]:
    return [to_key(row) for row in conn.execute(_ALL)]


def _revoke(conn: Connection, name: str, when: datetime) -> ApiKey | None:
    conn.execute(_REVOKE, {"key_name": name, "when": when})
    return _one(conn, _BY_NAME, {"name": name})


def _touch(conn: Connection, name: str, when: datetime) -> None:
    conn.execute(_TOUCH, {"key_name": name, "when": when})


def _any(conn: Connection) -> bool:
    return bool(conn.scalar(_ANY))
