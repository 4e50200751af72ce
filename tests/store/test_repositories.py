"""The repositories against both backends: SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event

from parley.domain.errors import (
    ConversationClosedError,
    ConversationEscalatedError,
    ConversationNotFoundError,
    GoalExistsError,
    GoalInUseError,
    GoalNotFoundError,
    IdempotencyKeyReusedError,
    InvalidCursorError,
)
from parley.domain.models import ConversationStatus, EscalationPolicy, EscalationReason, Goal
from parley.domain.ports import OpenedTurn, ReplyDraft
from parley.llm import ChatMessage, Role, Usage
from parley.store import Database, Store, upgrade_to_head
from parley.store.conversations import COUNT_ACTIVE
from parley.store.goals import GoalCache


def _goal(goal_id: str = "support", **changes: object) -> Goal:
    now = datetime.now(UTC)
    values: dict[str, object] = {
        "id": goal_id,
        "name": "Support",
        "instructions": "Help.",
        "model": None,
        "escalation": EscalationPolicy(5, ("human",), True),
        "created_at": now,
        "updated_at": now,
    }
    values.update(changes)
    return Goal(**values)  # type: ignore[arg-type]


async def test_goal_round_trips_with_its_policy(store: Store) -> None:
    """What is stored comes back equal, timestamps in UTC included."""
    goal = _goal(model="llama-3.3-70b-versatile")
    await store.goals.add(goal)
    loaded = await store.goals.get("support")
    assert loaded == goal
    assert loaded is not None
    assert loaded.created_at.tzinfo is not None


async def test_duplicate_goal_id_conflicts(store: Store) -> None:
    await store.goals.add(_goal())
    with pytest.raises(GoalExistsError):
        await store.goals.add(_goal(name="Other"))
    assert [g.name for g in await store.goals.all()] == ["Support"]


async def test_goal_in_use_cannot_be_deleted(store: Store) -> None:
    """Deleting a goal never takes its conversations with it."""
    await store.goals.add(_goal())
    await store.conversations.create("support", {})
    with pytest.raises(GoalInUseError):
        await store.goals.delete("support")
    assert await store.goals.get("support") is not None
    assert await store.goals.delete("missing") is False


async def test_conversation_for_missing_goal_is_refused(store: Store) -> None:
    with pytest.raises(GoalNotFoundError):
        await store.conversations.create("nope", {})


def _never(goal: Goal, turns: int) -> EscalationReason | None:
    return None


async def _open(
    store: Store, conversation_id: uuid.UUID, content: str, **options: Any
) -> OpenedTurn:
    options.setdefault("escalate_when", _never)
    options.setdefault("history_limit", 40)
    return await store.conversations.open_turn(conversation_id, content, **options)


async def test_messages_get_consecutive_sequence_numbers_and_turns(store: Store) -> None:
    """Each message takes the next seq; only user messages count as turns; a reply records
    the message it answers."""
    await store.goals.add(_goal())
    conversation = await store.conversations.create("support", {"channel": "web"})
    first = await _open(store, conversation.id, "hi")
    reply, after = await store.conversations.store_reply(
        first.question, ReplyDraft("hello", "m", Usage(3, 1, 4))
    )
    second = await _open(store, conversation.id, "again", history_limit=2)
    assert (first.question.seq, reply.seq, second.question.seq) == (1, 2, 3)
    assert (first.conversation.turns, after.turns, second.conversation.turns) == (1, 1, 2)
    assert reply.reply_to == first.question.id
    assert first.goal.id == "support"
    assert [m.content for m in second.history] == ["hello", "again"]
    loaded = await store.conversations.get(conversation.id, with_messages=True)
    assert loaded is not None
    assert [m.content for m in loaded.messages] == ["hi", "hello", "again"]
    assert loaded.messages[1].usage == Usage(3, 1, 4)
    assert loaded.metadata == {"channel": "web"}


async def test_message_for_missing_conversation_is_refused(store: Store) -> None:
    with pytest.raises(ConversationNotFoundError):
        await _open(store, uuid.uuid4(), "hi")


async def test_escalated_and_closed_conversations_take_no_message(store: Store) -> None:
    await store.goals.add(_goal())
    for to, error in [
        (ConversationStatus.ESCALATED, ConversationEscalatedError),
        (ConversationStatus.COMPLETED, ConversationClosedError),
    ]:
        conversation = await store.conversations.create("support", {})
        await store.conversations.transition(
            conversation.id, allowed_from=[ConversationStatus.ACTIVE], to=to
        )
        with pytest.raises(error):
            await _open(store, conversation.id, "hi")
        loaded = await store.conversations.get(conversation.id, with_messages=True)
        assert loaded is not None
        assert loaded.messages == ()


async def test_a_second_reply_to_one_message_returns_the_first(store: Store) -> None:
    await store.goals.add(_goal())
    conversation = await store.conversations.create("support", {})
    opened = await _open(store, conversation.id, "hi")
    first, _ = await store.conversations.store_reply(opened.question, ReplyDraft("one", "m", None))
    second, _ = await store.conversations.store_reply(opened.question, ReplyDraft("two", "m", None))
    assert second == first
    loaded = await store.conversations.get(conversation.id, with_messages=True)
    assert loaded is not None
    assert [m.content for m in loaded.messages] == ["hi", "one"]


async def test_an_idempotency_key_names_one_stored_turn(store: Store) -> None:
    """The same key stores nothing new and returns the turn with its reply; the same key
    for other content is a conflict."""
    await store.goals.add(_goal())
    conversation = await store.conversations.create("support", {})
    opened = await _open(store, conversation.id, "hi", idempotency_key="k1")
    reply, _ = await store.conversations.store_reply(opened.question, ReplyDraft("yo", "m", None))
    again = await _open(store, conversation.id, "hi", idempotency_key="k1")
    assert again.repeated
    assert again.question == opened.question
    assert again.reply == reply
    with pytest.raises(IdempotencyKeyReusedError):
        await _open(store, conversation.id, "other", idempotency_key="k1")
    loaded = await store.conversations.get(conversation.id, with_messages=True)
    assert loaded is not None
    assert [m.content for m in loaded.messages] == ["hi", "yo"]
    assert loaded.turns == 1


@pytest.mark.parametrize("clients", [20, 100])
async def test_concurrent_messages_respect_max_turns_and_order(
    database_url: str, clients: int
) -> None:
    """Many writers on one conversation, each on its own connection: exactly ``max_turns``
    messages are answered, one escalates, the rest are refused; seq and created_at agree."""
    database = Database(database_url)
    await upgrade_to_head(database.engine)
    store = Store(database)
    try:
        await store.goals.add(_goal())
        conversation = await store.conversations.create("support", {})

        def max_five(goal: Goal, turns: int) -> EscalationReason | None:
            return EscalationReason.MAX_TURNS if turns > 5 else None

        async def send(index: int) -> OpenedTurn | Exception:
            try:
                return await _open(store, conversation.id, f"m{index}", escalate_when=max_five)
            except ConversationEscalatedError as refused:
                return refused

        outcomes = await asyncio.gather(*(send(i) for i in range(clients)))
        accepted = [o for o in outcomes if isinstance(o, OpenedTurn)]
        assert len(accepted) == 6
        assert [o.escalation for o in accepted].count(EscalationReason.MAX_TURNS) == 1
        assert sum(isinstance(o, ConversationEscalatedError) for o in outcomes) == clients - 6
        loaded = await store.conversations.get(conversation.id, with_messages=True)
        assert loaded is not None
        assert [m.seq for m in loaded.messages] == list(range(1, 7))
        times = [m.created_at for m in loaded.messages]
        assert times == sorted(times)
        assert loaded.status is ConversationStatus.ESCALATED
        assert loaded.turns == 6
    finally:
        await database.dispose()


async def test_transition_only_from_allowed_statuses(store: Store) -> None:
    """An escalation happens once; a second one finds nothing to change."""
    await store.goals.add(_goal())
    conversation = await store.conversations.create("support", {})
    escalated = await store.conversations.transition(
        conversation.id,
        allowed_from=[ConversationStatus.ACTIVE],
        to=ConversationStatus.ESCALATED,
        reason=EscalationReason.MANUAL,
        note="angry customer",
    )
    assert escalated is not None
    assert escalated.status is ConversationStatus.ESCALATED
    assert escalated.escalation is not None
    assert escalated.escalation.reason is EscalationReason.MANUAL
    assert escalated.escalation.note == "angry customer"
    again = await store.conversations.transition(
        conversation.id, allowed_from=[ConversationStatus.ACTIVE], to=ConversationStatus.ESCALATED
    )
    assert again is None


async def test_listing_pages_through_everything_once(store: Store) -> None:
    """Keyset pagination: newest first, no duplicates, no gaps, filters respected."""
    await store.goals.add(_goal("a"))
    await store.goals.add(_goal("b"))
    created = [await store.conversations.create("a" if i % 3 else "b", {}) for i in range(7)]
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page = await store.conversations.page(limit=3, cursor=cursor)
        seen.extend(c.id for c in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [c.id for c in reversed(created)]
    only_b = await store.conversations.page(goal_id="b", limit=10)
    assert {c.goal_id for c in only_b.items} == {"b"}
    assert len(only_b.items) == 3
    active = await store.conversations.page(status=ConversationStatus.ESCALATED, limit=10)
    assert active.items == ()


async def test_garbage_cursor_is_refused(store: Store) -> None:
    with pytest.raises(InvalidCursorError):
        await store.conversations.page(cursor="not-a-cursor")


async def test_the_active_count_reads_active_conversations_through_their_index(
    store: Store,
) -> None:
    """The scrape counts active conversations by an index range, so its cost follows
    the active ones, not every conversation ever stored (it was a GROUP BY of the table)."""
    await store.goals.add(_goal())
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
    await Store(first).goals.add(_goal())
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
        await store.goals.add(_goal())
        conversation = await store.conversations.create("support", {})
        await _open(store, conversation.id, "first: reads the goal once")
        statements.clear()
        opened = await _open(store, conversation.id, "hi")
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
        await store.goals.add(_goal())
        conversation = await store.conversations.create("support", {})
        threads.clear()
        opened = await _open(store, conversation.id, "hi")
        await store.conversations.store_reply(opened.question, ReplyDraft("hello", "m", None))
        await store.conversations.record_llm_failure(conversation.id, escalate_at=None)
    finally:
        await database.dispose()
    assert threads
    if database.engine.dialect.name == "sqlite":
        assert all(name.startswith("parley-sqlite") for name in threads), threads
    else:
        assert set(threads) == {threading.current_thread().name}


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
        await store.goals.add(_goal())
        conversation = await store.conversations.create("support", {})
        first = await _open(store, conversation.id, "hello")
        await store.conversations.store_reply(first.question, ReplyDraft("hi there", "m", None))
        selects.clear()
        opened = await _open(store, conversation.id, "again")
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
        await here.goals.add(_goal(instructions="Old."))
        conversation = await here.conversations.create("support", {})
        assert (await _open(elsewhere, conversation.id, "a")).goal.instructions == "Old."
        await here.goals.replace(_goal(instructions="New."))
        assert (await _open(here, conversation.id, "b")).goal.instructions == "New."
        # The other replica keeps its copy until the TTL ends.
        assert (await _open(elsewhere, conversation.id, "c")).goal.instructions == "Old."
    finally:
        await database.dispose()


def test_goal_cache_entries_expire_and_a_zero_ttl_keeps_nothing() -> None:
    now = [0.0]
    cache = GoalCache(5, clock=lambda: now[0])
    goal = _goal()
    cache.put(goal)
    now[0] = 4.9
    assert cache.get("support") is goal
    now[0] = 5.0
    assert cache.get("support") is None
    uncached = GoalCache(0)
    uncached.put(goal)
    assert uncached.get("support") is None
