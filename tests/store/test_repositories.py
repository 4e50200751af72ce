"""The repositories against both backends: SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from parley.domain.errors import (
    ConversationNotFoundError,
    GoalExistsError,
    GoalInUseError,
    GoalNotFoundError,
    InvalidCursorError,
)
from parley.domain.models import ConversationStatus, EscalationPolicy, EscalationReason, Goal
from parley.llm import Role, Usage
from parley.store import Database, Store, upgrade_to_head


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


async def test_messages_get_consecutive_sequence_numbers_and_turns(store: Store) -> None:
    """Each message takes the next seq; only user messages count as turns."""
    await store.goals.add(_goal())
    conversation = await store.conversations.create("support", {"channel": "web"})
    first, turns1 = await store.conversations.append_message(conversation.id, Role.USER, "hi")
    reply, turns2 = await store.conversations.append_message(
        conversation.id, Role.ASSISTANT, "hello", model="m", usage=Usage(3, 1, 4)
    )
    _, turns3 = await store.conversations.append_message(conversation.id, Role.USER, "again")
    assert (first.seq, reply.seq) == (1, 2)
    assert (turns1, turns2, turns3) == (1, 1, 2)
    loaded = await store.conversations.get(conversation.id, with_messages=True)
    assert loaded is not None
    assert [m.content for m in loaded.messages] == ["hi", "hello", "again"]
    assert loaded.messages[1].usage == Usage(3, 1, 4)
    assert loaded.metadata == {"channel": "web"}
    recent = await store.conversations.recent_messages(conversation.id, 2)
    assert [m.content for m in recent] == ["hello", "again"]


async def test_message_for_missing_conversation_is_refused(store: Store) -> None:
    with pytest.raises(ConversationNotFoundError):
        await store.conversations.append_message(uuid.uuid4(), Role.USER, "hi")


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


async def test_count_by_status_covers_every_status(store: Store) -> None:
    await store.goals.add(_goal())
    for _ in range(2):
        await store.conversations.create("support", {})
    counts = await store.conversations.count_by_status()
    assert counts == {
        ConversationStatus.ACTIVE: 2,
        ConversationStatus.COMPLETED: 0,
        ConversationStatus.ESCALATED: 0,
    }


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
