"""Conversations idle past their goal's timeout end: a customer who left. One waiting for
an agent is abandoned (counted, and an event for its subscribers and webhooks), one an
agent held ends; each ends once however many sweeps run; a goal's own timeout holds."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from parley.domain.conversations import ConversationService
from parley.domain.goals import GoalService
from parley.domain.models import (
    Conversation,
    ConversationStatus,
    EscalationReason,
    HandoffState,
    HandoffStep,
    Outcome,
    OutcomeSource,
)
from parley.testing import MemoryStore
from tests.store.helpers import sample_goal


class Recorded:
    """The business events the service emits."""

    def __init__(self) -> None:
        self.closed: list[tuple[Conversation, ConversationStatus]] = []
        self.steps: list[HandoffStep] = []

    def conversation_created(self, conversation: Conversation) -> None: ...

    def conversation_escalated(self, conversation: Conversation, reason: Any) -> None: ...

    def conversation_closed(self, conversation: Conversation, previous: ConversationStatus) -> None:
        self.closed.append((conversation, previous))

    def handoff_changed(self, conversation: Conversation, step: HandoffStep) -> None:
        self.steps.append(step)

    def conversation_judged(self, conversation: Conversation) -> None: ...

    def conversations_deleted(self, count: int, reason: Any) -> None: ...


async def test_idle_conversations_end_once_waiting_ones_abandoned() -> None:
    store, events = MemoryStore(), Recorded()
    await store.goals.add(sample_goal(idle_timeout_seconds=60))
    await store.goals.add(sample_goal("patient", idle_timeout_seconds=3600))
    service = ConversationService(store.conversations, GoalService(store.goals), events)
    talking = await service.create("support", {})
    waiting = await service.create("support", {})
    held = await service.create("support", {})
    patient = await service.create("patient", {})
    for conversation in (waiting, held):
        await service.escalate(conversation.id, EscalationReason.USER_REQUEST)
    await store.handoffs.assign(held.id, "ann", holder=None, transfer=False)

    in_a_while = datetime.now(UTC) + timedelta(minutes=5)
    ended = await asyncio.gather(*(service.end_idle(in_a_while) for _ in range(3)))
    assert sum(ended) == 3  # three sweeps at once (replicas): each ends once
    after = {c.id: c for c in store.conversations.conversations.values()}
    assert after[talking.id].status is ConversationStatus.COMPLETED
    assert after[patient.id].status is ConversationStatus.ACTIVE  # its goal waits an hour
    handoffs = {k: after[k].handoff for k in (waiting.id, held.id)}
    assert handoffs[waiting.id] is not None
    assert handoffs[waiting.id].state is HandoffState.ABANDONED  # type: ignore[union-attr]
    assert handoffs[held.id].state is HandoffState.RESOLVED  # type: ignore[union-attr]
    assert sorted(previous.value for _, previous in events.closed) == [
        "active",
        "escalated",
        "escalated",
    ]
    assert events.steps.count(HandoffStep.ABANDONED) == 1
    # Nobody gave an outcome: the customer left (abandoned), by the timeout.
    endings = {after[k].ending for k in (talking.id, waiting.id, held.id)}
    assert {(e.outcome, e.source) for e in endings if e} == {
        (Outcome.ABANDONED, OutcomeSource.TIMEOUT)
    }
    assert None not in endings
    log = [(e.conversation_id, e.step) for e in store.events.events]
    assert (waiting.id, HandoffStep.ABANDONED) in log
    assert (held.id, HandoffStep.ENDED) in log
    assert await service.end_idle(in_a_while) == 0


async def test_a_conversation_with_news_since_is_not_idle() -> None:
    store, events = MemoryStore(), Recorded()
    await store.goals.add(sample_goal(idle_timeout_seconds=60))
    service = ConversationService(store.conversations, GoalService(store.goals), events)
    conversation = await service.create("support", {})
    now = datetime.now(UTC)
    fresh = dataclasses.replace(
        store.conversations.conversations[conversation.id], updated_at=now + timedelta(minutes=9)
    )
    store.conversations.conversations[conversation.id] = fresh
    assert await service.end_idle(now + timedelta(minutes=5)) == 0
    assert await service.end_idle(now + timedelta(minutes=11)) == 1


async def test_thousands_idle_at_once_end_in_bounded_batches_each_once() -> None:
    """A sweep ends at most its batch per goal; the next sweeps end the rest, none twice."""
    store, events = MemoryStore(), Recorded()
    await store.goals.add(sample_goal(idle_timeout_seconds=60))
    service = ConversationService(store.conversations, GoalService(store.goals), events)
    for _ in range(2500):
        await service.create("support", {})
    later = datetime.now(UTC) + timedelta(minutes=5)
    swept = [await service.end_idle(later, limit=1000) for _ in range(4)]
    assert swept == [1000, 1000, 500, 0]
    assert len(events.closed) == 2500
    assert len({conversation.id for conversation, _ in events.closed}) == 2500
