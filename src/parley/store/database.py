"""The database: SQLite (embedded default) or PostgreSQL, and the store's one way to it,
``run_transaction`` (a whole transaction of Core statements as plain calls; ``run_read``
for a hot read of one statement), which also turns the database being unavailable into
``DatabaseUnavailableError`` (a 503)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from parley import defaults
from parley.domain.errors import DatabaseUnavailableError
from parley.store.unavailable import unavailable_kind

# One thread for SQLite's transactions: they queue there instead of meeting on SQLite's
# one write lock, where the busy handler sleeps a millisecond or more (at 10 streams an
# UPDATE took 1.9 ms on average with eight threads, 0.24 ms with one).
SQLITE_THREADS = 1
_PG_READ_ONLY = "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How Parley talks to its database; the defaults are parley.defaults'."""

    hide_parameters: bool = True  # SQL logs and errors show no bound values (user content)
    pool_size: int = defaults.DB_POOL_SIZE
    max_overflow: int = defaults.DB_MAX_OVERFLOW
    sqlite_synchronous: str = defaults.SQLITE_SYNCHRONOUS
    # Seconds, fit for a web request: opening a connection, one statement (SQLite: the
    # wait for its write lock), and the wait for a free pooled connection.
    connect_timeout: float = defaults.DB_CONNECT_TIMEOUT_SECONDS
    statement_timeout: float = defaults.DB_STATEMENT_TIMEOUT_SECONDS
    pool_timeout: float = defaults.DB_POOL_TIMEOUT_SECONDS


def create_engine(url: str, options: EngineOptions | None = None) -> AsyncEngine:
    options = options or EngineOptions()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(
            url,
            connect_args={"timeout": options.statement_timeout},
            hide_parameters=options.hide_parameters,
        )
        _configure_sqlite(engine, options)
        return engine
    # No ping before every checkout (a round trip per transaction): a connection the
    # server dropped fails its statement once and is discarded (SQLAlchemy invalidates
    # the whole pool on a disconnect), and connections are renewed every half hour.
    return create_async_engine(
        url,
        pool_size=options.pool_size,
        max_overflow=options.max_overflow,
        pool_recycle=1800,
        pool_timeout=options.pool_timeout,
        hide_parameters=options.hide_parameters,
        connect_args={
            "timeout": options.connect_timeout,
            "command_timeout": options.statement_timeout,
        },
    )


def _threaded_sqlite_engine(url: str, options: EngineOptions) -> Engine:
    """The same file through the standard library's driver, for transactions run whole in
    a worker thread (``Database.run_transaction``)."""
    sync_url = make_url(url).set(drivername="sqlite+pysqlite")
    engine = create_sync_engine(
        sync_url,
        connect_args={"timeout": options.statement_timeout},
        hide_parameters=options.hide_parameters,
        pool_size=SQLITE_THREADS,
        max_overflow=0,
    )
    _configure_sqlite(engine, options)
    return engine


class _SQLiteReader:
    """Reads run at once on the event loop: one connection to the same file, through the
    standard library's driver, kept open (a pool checkout per read cost a third of it),
    that only reads and never waits for a lock (busy at once)."""

    def __init__(self, url: str, options: EngineOptions) -> None:
        sync_url = make_url(url).set(drivername="sqlite+pysqlite")
        # Used only from the event loop (a new loop, as in tests, may run in another
        # thread: the calls never overlap).
        self.engine = create_sync_engine(
            sync_url,
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
            hide_parameters=options.hide_parameters,
        )
        event.listen(self.engine, "connect", lambda dbapi, _record: read_only_never_waiting(dbapi))
        self._connection: Connection | None = None

    def run(
        self, work: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        connection = self._connection
        if connection is None:
            connection = self._connection = self.engine.connect()
        try:
            return work(connection, *args, **kwargs)
        except BaseException:
            self.close()  # not reused: the next read opens a new one
            raise
        finally:
            if self._connection is not None:
                connection.rollback()  # the next read starts afresh, seeing every commit

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.invalidate()
            connection.close()

    def dispose(self) -> None:
        self.close()
        self.engine.dispose()


def read_only_never_waiting(dbapi_connection: Any) -> None:
    """A SQLite connection (the standard library's) that only reads, and answers busy at
    once instead of waiting for a lock: fit for the event loop."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute("PRAGMA busy_timeout=0")
    cursor.close()


def _busy_ms(options: EngineOptions) -> int:
    return int(options.statement_timeout * 1000)


def _configure_sqlite(engine: AsyncEngine | Engine, options: EngineOptions) -> None:
    synchronous = options.sqlite_synchronous.upper()
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"SQLite synchronous must be normal or full, not {synchronous!r}")
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # Foreign keys are off by default in SQLite; WAL lets readers run beside a writer.
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={_busy_ms(options)}")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()


async def _sqlite_lock_free(
    connection: AsyncConnection, timeout_seconds: float, busy_ms: int
) -> bool:
    raw = await connection.execution_options(isolation_level="AUTOCOMMIT")
    await raw.exec_driver_sql(f"PRAGMA busy_timeout={int(timeout_seconds * 500)}")
    try:
        await raw.exec_driver_sql("BEGIN IMMEDIATE")
        await raw.exec_driver_sql("ROLLBACK")
        return True
    except OperationalError:  # "database is locked"
        return False
    finally:
        await raw.exec_driver_sql(f"PRAGMA busy_timeout={busy_ms}")


# Below this much free space a SQLite write (its WAL frames, a checkpoint) may fail with
# "database or disk is full": the instance says it is not ready.
SQLITE_MIN_FREE_BYTES = 4 * 1024 * 1024


def _room_for_sqlite(url: str) -> bool:
    path = make_url(url).database
    if not path or path == ":memory:":
        return True
    directory = os.path.dirname(os.path.abspath(path))
    return shutil.disk_usage(directory).free >= SQLITE_MIN_FREE_BYTES


# Told each time the database is found unavailable: (kind, the error) -> None.
UnavailableListener = Callable[[str, BaseException], None]
# Key of ``Connection.info`` under which a transaction names the conversations it appended
# live events for (store.events); told to ``on_published`` once it has committed.
PUBLISHED = "parley_published"
PublishedListener = Callable[[set[uuid.UUID]], None]


def _no_trace() -> str | None:
    return None


class Database:
    def __init__(
        self,
        url: str,
        options: EngineOptions | None = None,
        *,
        on_unavailable: UnavailableListener | None = None,
    ) -> None:
        self.url = url
        self.options = options or EngineOptions()
        self.engine = create_engine(url, self.options)
        self.on_unavailable = on_unavailable
        self.on_published: PublishedListener | None = None
        # The current trace as a W3C traceparent, or None (tracing off, or not sampled):
        # set by the app with tracing on; kept with a judged end for its verdict's span.
        self.trace_context: Callable[[], str | None] = _no_trace
        # SQLite's hot-path transactions run whole in a thread of their own: aiosqlite
        # hands every statement to its thread and back four times (cursor, execute,
        # fetch, close), two thirds of a turn's database CPU and a wait on a busy loop.
        self._sqlite_thread = (
            _SQLiteThread(url, self.options) if self.engine.dialect.name == "sqlite" else None
        )
        self._sqlite_reader = (
            _SQLiteReader(url, self.options) if self._sqlite_thread is not None else None
        )
        # PostgreSQL reads of one statement: no BEGIN and COMMIT round trips around it.
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @property
    def engines(self) -> tuple[Engine, ...]:
        """Every engine statements run on, for event listeners (metrics, tests)."""
        sqlite = (
            (self._sqlite_thread.engine, self._sqlite_reader.engine)
            if self._sqlite_thread is not None and self._sqlite_reader is not None
            else ()
        )
        return (self.engine.sync_engine, *sqlite)

    async def run_transaction(
        self, work: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``work(connection, ...)`` inside BEGIN ... COMMIT (ROLLBACK on an exception),
        its statements plain calls: on SQLite in a worker thread, one hand-off for the
        whole transaction; on PostgreSQL on the event loop, through asyncpg. On SQLite a
        caller cancelled meanwhile does not stop it: the thread commits or rolls back
        all the same (turns are never cancelled while they store, see domain.turns).

        The database unavailable (refused, reset, timed out, full, read-only) raises
        ``DatabaseUnavailableError``; every other error is raised as it is."""
        with self._unavailable_as_such():
            if self._sqlite_thread is not None:
                result, published = await self._sqlite_thread.run_transaction(work, *args, **kwargs)
            else:
                async with self.engine.begin() as connection:
                    connection.info.pop(PUBLISHED, None)  # a rolled-back transaction's
                    result = await connection.run_sync(work, *args, **kwargs)
                    published = connection.info.pop(PUBLISHED, None)
        if published and self.on_published is not None:
            self.on_published(published)
        return result

    async def run_read(
        self, work: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``work(connection, ...)``, which runs one read statement (a key by its digest,
        on every request): on SQLite at once on the event loop, through a connection of
        its own (about 45 us, against 270 us handed to the worker thread and back); on
        PostgreSQL alone in autocommit, one round trip instead of three. A reader never
        waits for SQLite's write lock (WAL); should SQLite answer busy all the same, the
        read goes to the worker thread as ``run_transaction``, rather than block the
        loop. Errors as ``run_transaction``'s."""
        if self._sqlite_reader is not None:
            try:
                return self._sqlite_reader.run(work, *args, **kwargs)
            except OperationalError:  # busy, or worse: the worker thread waits and tells
                return await self.run_transaction(work, *args, **kwargs)
        with self._unavailable_as_such():
            async with self._autocommit.connect() as connection:
                return await connection.run_sync(work, *args, **kwargs)

    async def ping(self, timeout_seconds: float = 1.0) -> bool:
        """Whether the database answers within ``timeout_seconds``."""
        try:
            async with asyncio.timeout(timeout_seconds), self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def writable(self, timeout_seconds: float = 1.0) -> bool:
        """Whether a write could start now: SQLite's write lock can be taken (a connection
        left inside a transaction holds it) and its disk has room, PostgreSQL is not
        read-only."""
        if self._sqlite_thread is not None and not _room_for_sqlite(self.url):
            return False
        try:
            async with asyncio.timeout(timeout_seconds), self.engine.connect() as connection:
                if self.engine.dialect.name == "sqlite":
                    busy_ms = _busy_ms(self.options)
                    return await _sqlite_lock_free(connection, timeout_seconds, busy_ms)
                read_only = await connection.scalar(text(_PG_READ_ONLY))
                return not read_only
        except Exception:
            return False

    @contextmanager
    def _unavailable_as_such(self) -> Iterator[None]:
        """An error that means the database is unavailable raised as
        ``DatabaseUnavailableError`` (and told to ``on_unavailable``); any other as it is."""
        try:
            yield
        except Exception as error:
            kind = unavailable_kind(error)
            if kind is None:
                raise
            if self.on_unavailable is not None:
                self.on_unavailable(kind, error)
            raise DatabaseUnavailableError(kind) from error

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._sqlite_reader is not None:
            self._sqlite_reader.dispose()
        if self._sqlite_thread is not None:
            await self._sqlite_thread.dispose()


class _SQLiteThread:
    """SQLite's transactions, each run whole on one worker thread through the standard
    library's driver."""

    def __init__(self, url: str, options: EngineOptions) -> None:
        self.engine = _threaded_sqlite_engine(url, options)
        self._executor = ThreadPoolExecutor(SQLITE_THREADS, thread_name_prefix="parley-sqlite")

    async def run_transaction(
        self, work: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> tuple[T, set[uuid.UUID] | None]:
        """What ``work`` returned, and the conversations it published events for."""
        # In the caller's context (run_in_executor gives none): the statements' trace spans
        # are children of the turn's, as on PostgreSQL.
        transaction = functools.partial(self._in_transaction, work, *args, **kwargs)
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, context.run, transaction
        )

    def _in_transaction(
        self, work: Callable[Concatenate[Connection, P], T], *args: Any, **kwargs: Any
    ) -> tuple[T, set[uuid.UUID] | None]:
        with self.engine.begin() as connection:
            connection.info.pop(PUBLISHED, None)  # a rolled-back transaction's
            result = work(connection, *args, **kwargs)
            published: set[uuid.UUID] | None = connection.info.pop(PUBLISHED, None)
        return result, published

    async def dispose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.engine.dispose)
        self._executor.shutdown()
