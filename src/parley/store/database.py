"""Engine and session factory for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BUSY_TIMEOUT_MS = 30_000
_PG_READ_ONLY = "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"


def create_engine(
    url: str, *, hide_parameters: bool = True, pool_size: int = 20, max_overflow: int = 30
) -> AsyncEngine:
    """``hide_parameters``: SQL logs (at DEBUG) and errors show no bound values, which
    are the users' messages."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, hide_parameters=hide_parameters
        )
        _configure_sqlite(engine)
        return engine
    # No ping before every checkout (a round trip per transaction): a connection the
    # server dropped fails its statement once and is discarded (SQLAlchemy invalidates
    # the whole pool on a disconnect), and connections are renewed every half hour.
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        hide_parameters=hide_parameters,
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # Foreign keys are off by default in SQLite; WAL lets readers run beside a writer.
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()


async def _sqlite_lock_free(connection: AsyncConnection, timeout_seconds: float) -> bool:
    raw = await connection.execution_options(isolation_level="AUTOCOMMIT")
    await raw.exec_driver_sql(f"PRAGMA busy_timeout={int(timeout_seconds * 500)}")
    try:
        await raw.exec_driver_sql("BEGIN IMMEDIATE")
        await raw.exec_driver_sql("ROLLBACK")
        return True
    except OperationalError:  # "database is locked"
        return False
    finally:
        await raw.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


class Database:
    def __init__(
        self, url: str, *, hide_parameters: bool = True, pool_size: int = 20, max_overflow: int = 30
    ) -> None:
        self.url = url
        self.engine = create_engine(
            url, hide_parameters=hide_parameters, pool_size=pool_size, max_overflow=max_overflow
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> AsyncSession:
        return self.sessions()

    def transaction(self) -> AsyncContextManager[AsyncConnection]:
        """A connection inside BEGIN ... COMMIT (ROLLBACK on an exception), for Core
        statements on the hot path."""
        return self.engine.begin()

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def writable(self, timeout_seconds: float = 1.0) -> bool:
        """Whether a write could start now: SQLite's write lock can be taken (a connection
        left inside a transaction holds it), PostgreSQL is not read-only."""
        try:
            async with asyncio.timeout(timeout_seconds), self.engine.connect() as connection:
                if self.engine.dialect.name == "sqlite":
                    return await _sqlite_lock_free(connection, timeout_seconds)
                read_only = await connection.scalar(text(_PG_READ_ONLY))
                return not read_only
        except Exception:
            return False

    async def dispose(self) -> None:
        await self.engine.dispose()
