"""What only the database store does, on SQLite and PostgreSQL: concurrency, statements,
threads, restarts and the goal cache. The contract every store keeps, the in-memory fake
included, is tests/store/test_contract.py."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import ProgrammingError

from parley.domain.keys import ApiKey, KeyService, digest, new_secret
from parley.domain.keys import Role as KeyRole
from parley.domain.models import Conversation, ConversationStatus, EscalationReason, Goal
from parley.domain.ports import OpenedTurn, ReplyDraft
from parley.llm import ChatMessage, Role
from parley.store import Database, Store, upgrade_to_head
from parley.store.conversations import COUNT_ACTIVE
from parley.store.database import EngineOptions
from parley.store.goals import GoalCache
from parley.store.tables import metadata
from tests.store.helpers import open_turn, sample_goal


@pytest.mark.parametrize("clients", [20, 100])
async def test_concurrent_messages_respect_max_turns_and_order(
    database_url: str, clients: int
) -> None:
    """Many writers on one conversation, each on its own connection: exactly ``max_turns``
    messages are answered, one escalates, the rest wait for the human agent; seq and
    created_at agree."""
    database = Database(database_url)
    await upgrade_to_head(database.engine)
    store = Store(database)
    try:
        await store.goals.add(sample_goal())
        conversation = await store.conversations.create("support", {})

        def max_five(goal: Goal, conversation: Conversation) -> EscalationReason | None:
            return EscalationReason.MAX_TURNS if conversation.turns > 5 else None

        async def send(index: int) -> OpenedTurn:
            return await open_turn(store, conversation.id, f"m{index}", escalate_when=max_five)

        outcomes = await asyncio.gather(*(send(i) for i in range(clients)))
        answered = [o for o in outcomes if not o.held]
        assert len(answered) == 6
        assert [o.escalation for o in answered].count(EscalationReason.MAX_TURNS) == 1
        assert sum(o.held for o in outcomes) == clients - 6  # stored for the human agent
        loaded = await store.conversations.get(conversation.id, with_messages=True)
        assert loaded is not None
        assert [m.seq for m in loaded.messages] == list(range(1, clients + 1))
        times = [m.created_at for m in loaded.messages]
        assert times == sorted(times)
        assert loaded.status is ConversationStatus.ESCALATED
        assert loaded.turns == 6
    finally:
        await database.dispose()


async def test_the_active_count_reads_active_conversations_through_their_index(
    store: Store,
) -> None:
    """The scrape counts active conversations by an index range, so its cost follows
    the active ones, not every conversation ever stored (it was a GROUP BY of the table)."""
    await store.goals.add(sample_goal())
    ids = [(await store.conversations.create("support", {})).id for _ in range(3)]
    await store.conversations.transition(
        ids[0],
        allowed_from=[ConversationStatus.ACTIVE],
        to=ConversationStatus.ESCALATED,
        reason=EscalationReason.MANUAL,
    )
    assert await store.conversations.count_active() == 2
    engine = store.database.engine
    sql = str(COUNT_ACTIVE.compile(engine, compile_kwargs={"literal_binds": True}))
    async with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
            plan = " ".join(str(row) for row in rows)
            assert "SEARCH" in plan, plan
            assert "ix_conversations_status" in plan, plan
        else:  # a tiny table: tell the planner what a large one would make it do
            await connection.exec_driver_sql("SET enable_seqscan = off")
            plan = " ".join(str(row) for row in await connection.exec_driver_sql(f"EXPLAIN {sql}"))
            assert "Index Cond" in plan, plan


async def test_data_survives_a_restart(database_url: str) -> None:
    """A new engine on the same database sees what the old one wrote; migrating is idempotent."""
    first = Database(database_url)
    await upgrade_to_head(first.engine)
    await Store(first).goals.add(sample_goal())
    await first.dispose()

    second = Database(database_url)
    await upgrade_to_head(second.engine)
    try:
        assert await Store(second).goals.get("support") is not None
        assert await second.ping()
    finally:
        await second.dispose()


def _on_each_statement(database: Database, listener: Any) -> None:
    """``listener`` before every statement, on every engine the store runs them on."""
    for engine in database.engines:
        event.listen(engine, "before_cursor_execute", listener)


async def test_a_turn_costs_three_statements_before_the_llm_and_two_after(
    database_url: str,
) -> None:
    """The hot path's round trips (issue 11): UPDATE ... RETURNING, INSERT and the history
    before the LLM call (the goal cached), UPDATE ... RETURNING and INSERT after it;
    BEGIN and COMMIT around each."""
    database = Database(database_url)
    await upgrade_to_head(database.engine)
    store = Store(database, goal_cache_seconds=60)
    statements: list[str] = []

    def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    _on_each_statement(database, _count)

    try:
        await store.goals.add(sample_goal())
        conversation = await store.conversations.create("support", {})
        await open_turn(store, conversation.id, "first: reads the goal once")
        statements.clear()
        opened = await open_turn(store, conversation.id, "hi")
        assert statements == ["UPDATE", "INSERT", "SELECT"]
        statements.clear()
        await store.conversations.store_reply(opened.question, ReplyDraft("hello", "m", None))
        assert statements == ["UPDATE", "INSERT"]
    finally:
        await database.dispose()


async def test_sqlite_runs_each_turn_transaction_whole_in_a_worker_thread(
    database_url: str,
) -> None:
    """SQLite: one hand-off to a thread per transaction (aiosqlite made four per
    statement, two thirds of a turn's database CPU); PostgreSQL: on the event loop."""
    database = Database(database_url)
    await upgrade_to_head(database.engine)
    store = Store(database, goal_cache_seconds=60)
    threads: list[str] = []

    def _thread(*_args: Any) -> None:
        threads.append(threading.current_thread().name)

    _on_each_statement(database, _thread)
    try:
        await store.goals.add(sample_goal())
        conversation = await store.conversations.create("support", {})
        threads.clear()
        opened = await open_turn(store, conversation.id, "hi")
        await store.conversations.store_reply(opened.question, ReplyDraft("hello", "m", None))
        await store.conversations.record_llm_failure(conversation.id, escalate_at=None)
    finally:
        await database.dispose()
    assert threads
    if database.engine.dialect.name == "sqlite":
        assert all(name.startswith("parley-sqlite") for name in threads), threads
    else:
        assert set(threads) == {threading.current_thread().name}


def _one_transaction(connection: Connection) -> bool:
    """PostgreSQL: whether two statements run in one transaction (a BEGIN sent before
    them), not each in its own (autocommit)."""
    first, second = (connection.scalar(text("SELECT txid_current()")) for _ in range(2))
    return bool(first == second)


async def test_a_key_is_read_on_the_event_loop_on_sqlite_and_alone_on_postgresql(
    database_url: str,
) -> None:
    """A request reads its key unless its replica keeps it: on SQLite on the event
    loop, where the hand-off to the worker thread and back cost three times the read; on
    PostgreSQL in autocommit, one round trip instead of BEGIN, SELECT and COMMIT. The read
    sees a revocation committed a moment before."""
    database = Database(database_url)
    await upgrade_to_head(database.engine)
    store = Store(database)
    threads: list[str] = []

    def _thread(*_args: Any) -> None:
        threads.append(threading.current_thread().name)

    now = datetime.now(UTC)
    secret = new_secret()
    key = ApiKey("reader", KeyRole.CLIENT, digest(secret), created_at=now)
    try:
        await store.keys.add(key)
        await store.keys.revoke("reader", now)
        _on_each_statement(database, _thread)
        found = await store.keys.by_digest(key.digest)
        assert found is not None
        assert found.revoked_at is not None
        assert threads == [threading.current_thread().name]
        if database.engine.dialect.name == "postgresql":
            assert not await database.run_read(_one_transaction)
            assert await database.run_transaction(_one_transaction)
    finally:
        await database.dispose()


async def test_a_key_read_sqlite_answers_busy_waits_on_the_worker_thread_not_the_loop(
    tmp_path: Path,
) -> None:
    """A reader never waits on the event loop: with the file locked even to readers
    (another process holding it exclusively), the read goes to the worker thread, which
    waits for the lock, and the loop keeps serving meanwhile; then reads are back on the
    loop."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    setup = Database(url)
    await upgrade_to_head(setup.engine)
    now = datetime.now(UTC)
    key = ApiKey("reader", KeyRole.CLIENT, digest(new_secret()), created_at=now)
    await Store(setup).keys.add(key)
    await setup.dispose()  # WAL: an exclusive lock waits for every connection to close
    holder = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE api_keys SET rpm = 7")
    database = Database(url, EngineOptions(statement_timeout=20))
    threads: list[str] = []
    _on_each_statement(database, lambda *_: threads.append(threading.current_thread().name))
    try:
        read = asyncio.create_task(Store(database).keys.by_digest(key.digest))
        ticks = 0
        # A read that waited on the loop would hold it for SQLite's busy timeout (pysqlite's
        # default is 5 s), and this deadline would be past when the loop came back.
        async with asyncio.timeout(4):
            while ticks < 20:  # the loop runs while the read waits
                await asyncio.sleep(0.01)
                ticks += 1
        assert not read.done()
        holder.execute("COMMIT")
        holder.close()  # gives the lock up (in WAL, an exclusive mode lasts the connection)
        found = await asyncio.wait_for(read, 10)
        assert found is not None
        assert found.limits.rpm == 7
        assert threads[-1].startswith("parley-sqlite"), threads
        # The lock gone, the next read is on the loop again (a connection of its own).
        threads.clear()
        assert await Store(database).keys.by_digest(key.digest) is not None
        assert threads == [threading.current_thread().name]
    finally:
        holder.close()
        await database.dispose()


def _refused(connection: Connection) -> object:
    """A read the driver refuses after its value is bound: SQLite, for the value's type
    (a list); PostgreSQL, for an unknown column (asyncpg's own message for a bad value
    would quote the value itself)."""
    value: object = "parley_secret"
    statement = "SELECT nope FROM api_keys WHERE digest = :digest"
    if connection.dialect.name == "sqlite":
        value, statement = [value], statement.replace("nope", "name")
    return connection.execute(text(statement), {"digest": value}).all()


async def test_a_failed_read_shows_no_bound_value_in_its_error(database_url: str) -> None:
    """Bound values are user content and key digests: the read's own engines (SQLite's
    reader on the loop, PostgreSQL's autocommit) hide them from errors, as the others do."""
    database = Database(database_url)
    await upgrade_to_head(database.engine)
    try:
        with pytest.raises(ProgrammingError) as raised:
            await database.run_read(_refused)
    finally:
        await database.dispose()
    chain: list[str] = []
    error: BaseException | None = raised.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("parameters hidden" in text for text in chain), chain
    assert not any("parley_secret" in text for text in chain), chain


async def test_the_sqlite_reader_holds_no_snapshot_between_reads(tmp_path: Path) -> None:
    """The reader's connection stays open between reads but inside no transaction: a
    snapshot held would keep every later write in the WAL (no checkpoint could finish,
    the file would grow without bound)."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await upgrade_to_head(database.engine)
    store = Store(database)
    now = datetime.now(UTC)
    key = ApiKey("reader", KeyRole.CLIENT, digest(new_secret()), created_at=now)
    checkpointer = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    try:
        await store.keys.add(key)
        assert await store.keys.by_digest(key.digest)
        await store.keys.touch("reader", now)  # a write after the read
        busy, _frames, _done = checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        checkpointer.close()
        await database.dispose()


async def test_the_history_reads_only_what_the_llm_is_sent(database_url: str) -> None:
    """Role and content, oldest first: a turn's history is 40 rows, and building whole
    messages of them (ids, times, statuses) was the largest part of its fixed CPU."""
    database = Database(database_url)
    await upgrade_to_head(database.engine)
    store = Store(database, goal_cache_seconds=60)
    selects: list[str] = []

    def _record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    _on_each_statement(database, _record)

    try:
        await store.goals.add(sample_goal())
        conversation = await store.conversations.create("support", {})
        first = await open_turn(store, conversation.id, "hello")
        await store.conversations.store_reply(first.question, ReplyDraft("hi there", "m", None))
        selects.clear()
        opened = await open_turn(store, conversation.id, "again")
        assert opened.history == (
            ChatMessage(Role.USER, "hello"),
            ChatMessage(Role.ASSISTANT, "hi there"),
            ChatMessage(Role.USER, "again"),
        )
        [history] = selects
        columns = history.split("FROM", 1)[0]
        assert columns.split() == ["SELECT", "messages.role,", "messages.content"]
    finally:
        await database.dispose()


async def test_a_changed_goal_applies_to_the_next_turn_here_and_within_the_ttl_elsewhere(
    database_url: str,
) -> None:
    database = Database(database_url)
    await upgrade_to_head(database.engine)
    here = Store(database, goal_cache_seconds=60)
    elsewhere = Store(database, goal_cache_seconds=60)  # another replica's cache
    try:
        await here.goals.add(sample_goal(instructions="Old."))
        conversation = await here.conversations.create("support", {})
        assert (await open_turn(elsewhere, conversation.id, "a")).goal.instructions == "Old."
        await here.goals.replace(sample_goal(instructions="New."))
        assert (await open_turn(here, conversation.id, "b")).goal.instructions == "New."
        # The other replica keeps its copy until the TTL ends.
        assert (await open_turn(elsewhere, conversation.id, "c")).goal.instructions == "Old."
    finally:
        await database.dispose()


def test_goal_cache_entries_expire_and_a_zero_ttl_keeps_nothing() -> None:
    now = [0.0]
    cache = GoalCache(5, clock=lambda: now[0])
    goal = sample_goal()
    cache.put(goal)
    now[0] = 4.9
    assert cache.get("support") is goal
    now[0] = 5.0
    assert cache.get("support") is None
    uncached = GoalCache(0)
    uncached.put(goal)
    assert uncached.get("support") is None


async def test_the_tables_the_statements_use_are_the_schema_the_migrations_make(
    database_url: str,
) -> None:
    """The Core tables describe the migrated schema: no column, type, key or index differs
    (Alembic's own comparison, as autogenerate runs it)."""
    database = Database(database_url)
    await upgrade_to_head(database.engine)

    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection)
        return list(compare_metadata(context, metadata))

    try:
        async with database.engine.connect() as connection:
            assert await connection.run_sync(differences) == []
    finally:
        await database.dispose()


@pytest.mark.parametrize(("setting", "level"), [("normal", 1), ("full", 2)])
async def test_sqlite_durability_is_the_setting_on_both_of_its_engines(
    tmp_path: Path, setting: str, level: int
) -> None:
    """PARLEY_SQLITE_SYNCHRONOUS reaches the engine the turns write through and the one
    the health checks and migrations use (PRAGMA synchronous: 1 NORMAL, 2 FULL)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"
    database = Database(url, EngineOptions(sqlite_synchronous=setting))

    def synchronous(connection: Connection) -> int:
        value: int = connection.exec_driver_sql("PRAGMA synchronous").scalar_one()
        return value

    try:
        assert await database.run_transaction(synchronous) == level
        async with database.engine.connect() as connection:
            assert await connection.run_sync(synchronous) == level
    finally:
        await database.dispose()


async def test_a_kept_key_costs_sqlite_no_statement_until_a_key_changes(
    tmp_path: Path,
) -> None:
    """On SQLite a replica reads the key epoch's row (the standard library's driver)
    instead of the key: a revocation or a limit change moves it in the same transaction,
    so the next request reads the key again, at once, in this process or any other."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    database, elsewhere = Database(url), Database(url)
    await upgrade_to_head(database.engine)
    statements: list[str] = []
    _on_each_statement(database, lambda *args: statements.append(args[2]))
    epoch = Store(database).keys.epoch_reader()
    assert epoch is not None
    keys = KeyService(Store(database).keys, lambda: datetime.now(UTC))
    keys.follow(epoch)
    other = KeyService(Store(elsewhere).keys, lambda: datetime.now(UTC))
    try:
        _, secret = await other.create("shop", KeyRole.CLIENT)
        assert await keys.authenticate(secret) is not None
        statements.clear()
        for _ in range(3):
            assert await keys.authenticate(secret) is not None
        assert statements == []
        before = epoch.epoch()
        await other.update_limits("shop", {"rpm": 9})
        assert epoch.epoch() == (before or 0) + 1
        principal = await keys.authenticate(secret)
        assert principal is not None
        assert principal.limits.rpm == 9
        await other.revoke("shop")
        assert await keys.authenticate(secret) is None
    finally:
        epoch.close()
        await database.dispose()
        await elsewhere.dispose()


async def test_the_key_epoch_vouches_for_nothing_it_cannot_read(tmp_path: Path) -> None:
    """No such table (not migrated), or the file locked even to readers: None, so the
    key is read (and never waited for on the loop); no file is made where there is none;
    and no snapshot is held between reads (a checkpoint completes)."""
    path = tmp_path / "store.db"
    database = Database(f"sqlite+aiosqlite:///{path}")
    epoch = Store(database).keys.epoch_reader()
    assert epoch is not None
    assert epoch.epoch() is None
    assert not path.exists()
    await upgrade_to_head(database.engine)
    await database.dispose()
    assert epoch.epoch() == 0
    checkpointer = sqlite3.connect(path, isolation_level=None)
    try:
        busy, _frames, _done = checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        epoch.close()  # WAL: an exclusive lock waits for every connection to close
        checkpointer.execute("PRAGMA locking_mode=EXCLUSIVE")
        checkpointer.execute("BEGIN EXCLUSIVE")
        checkpointer.execute("UPDATE key_epoch SET epoch = 5")
        assert epoch.epoch() is None
        checkpointer.execute("COMMIT")
    finally:
        checkpointer.close()
    assert epoch.epoch() == 5
    epoch.close()
