"""What the store's tests share: a goal to store, and opening a turn with defaults."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from parley.domain.models import (
    Closing,
    Conversation,
    ConversationStatus,
    EscalationPolicy,
    EscalationReason,
    Goal,
    OutcomeSource,
)
from parley.domain.ports import (
    ConversationStore,
    EvaluationStore,
    EventLog,
    GoalStore,
    HandoffStore,
    KeyStore,
    OpenedTurn,
)
from parley.store import Database, Store, upgrade_to_head
from tests.conftest import postgres_url

# A client's close with no outcome reported, and no judge.
CLOSED = Closing(outcome=None, source=OutcomeSource.CLIENT)


class Ports(Protocol):
    """A store as the domain sees it: the database's ``Store`` or ``parley.testing``'s."""

    @property
    def goals(self) -> GoalStore: ...

    @property
    def conversations(self) -> ConversationStore: ...

    @property
    def keys(self) -> KeyStore: ...

    @property
    def handoffs(self) -> HandoffStore: ...

    @property
    def events(self) -> EventLog: ...

    @property
    def evaluations(self) -> EvaluationStore: ...


async def escalated(
    store: Ports, *, owner: str | None = None, goal_id: str = "support"
) -> uuid.UUID:
    """A new conversation of ``goal_id``'s, escalated by hand: its handoff waits."""
    conversation = await store.conversations.create(goal_id, {}, owner=owner)
    await store.conversations.transition(
        conversation.id,
        allowed_from=[ConversationStatus.ACTIVE],
        to=ConversationStatus.ESCALATED,
        reason=EscalationReason.MANUAL,
    )
    return conversation.id


def sample_goal(goal_id: str = "support", **changes: object) -> Goal:
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


def never(goal: Goal, conversation: Conversation) -> EscalationReason | None:
    return None


async def open_turn(
    store: Ports, conversation_id: uuid.UUID, content: str, **options: Any
) -> OpenedTurn:
    options.setdefault("escalate_when", never)
    options.setdefault("history_limit", 40)
    return await store.conversations.open_turn(conversation_id, content, **options)


@asynccontextmanager
async def database_store(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    """The database's store, migrated: ``sqlite`` on a file, or ``postgresql`` (emptied)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/store.db"
    if kind == "postgresql":
        url = await postgres_url()
    database = Database(url)
    await upgrade_to_head(database.engine)
    try:
        yield Store(database)
    finally:
        await database.dispose()
