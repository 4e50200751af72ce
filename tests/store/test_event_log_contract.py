"""The live streams' event log, on each store (the fake, SQLite, PostgreSQL): every step
of a handoff and every message written during it is one event, numbered within its
conversation from 1 and, across conversations, in the order they committed; a step
refused appends nothing; and the commit names the conversations it appended for."""

from __future__ import annotations

import asyncio
import uuid

from parley.domain.models import (
    Conversation,
    ConversationStatus,
    EscalationReason,
    Goal,
    HandoffStep,
    LiveEvent,
    LiveEventKind,
)
from parley.llm import Role
from parley.store import Store
from parley.testing import MemoryStore
from tests.store.helpers import CLOSED, Ports, open_turn, sample_goal
from tests.store.test_contract import store

__all__ = ["store"]


def _trigger(goal: Goal, conversation: Conversation) -> EscalationReason | None:
    return EscalationReason.TRIGGER_PHRASE


def _told(store: Ports) -> list[set[uuid.UUID]]:
    """What the store tells of each commit with events, from now on."""
    told: list[set[uuid.UUID]] = []
    if isinstance(store, Store):
        store.database.on_published = told.append
    else:
        assert isinstance(store, MemoryStore)
        store.events.on_published = told.append
    return told


def _what(event: LiveEvent) -> str:
    if event.kind is LiveEventKind.MESSAGE:
        assert event.message is not None
        return f"{event.message.role.value}:{event.message.content}"
    assert event.step is not None
    return event.step.value


async def test_every_step_and_message_of_a_handoff_is_one_event_in_order(store: Ports) -> None:
    await store.goals.add(sample_goal())
    conversation = await store.conversations.create("support", {})
    told = _told(store)
    await open_turn(store, conversation.id, "get me a human", escalate_when=_trigger)
    await open_turn(store, conversation.id, "hello?")  # held for the agent
    handoffs = store.handoffs
    assert await handoffs.assign(conversation.id, "ann", holder=None, transfer=False)
    assert await handoffs.agent_message(conversation.id, "ann", "Ann here")
    assert await handoffs.assign(conversation.id, "bob", holder="ann", transfer=True)
    assert await handoffs.unassign(conversation.id, holder="bob")
    assert await handoffs.assign(conversation.id, "cat", holder=None, transfer=False)
    assert await handoffs.resolve(conversation.id, holder="cat", closing=None, note="ok")

    events = await store.events.conversation_events(conversation.id, 0, 100)
    assert [_what(e) for e in events] == [
        "escalated",
        "user:hello?",
        "assigned",
        "agent:Ann here",
        "transferred",
        "unassigned",
        "assigned",
        "returned_to_bot",
    ]
    assert [e.seq for e in events] == list(range(1, 9))
    assert all(e.goal_id == "support" for e in events)
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert told == [{conversation.id}] * 8  # each commit, once
    resolved = events[-1]
    assert resolved.status is ConversationStatus.ACTIVE
    assert resolved.handoff is not None
    assert (resolved.handoff.agent, resolved.handoff.note) == ("cat", "ok")
    agent_said = events[3].message
    assert agent_said is not None
    assert (agent_said.role, agent_said.author) == (Role.AGENT, "ann")
    # Read on from any point, a page at a time.
    assert [e.seq for e in await store.events.conversation_events(conversation.id, 5, 2)] == [6, 7]
    assert await store.events.last_seq(conversation.id) == 8
    assert await store.events.last_id() == events[-1].id
    after = await store.events.queue_events(events[3].id, 100)
    assert [e.seq for e in after] == [5, 6, 7, 8]


async def test_a_step_refused_or_a_conversation_outside_a_handoff_appends_nothing(
    store: Ports,
) -> None:
    await store.goals.add(sample_goal())
    conversation = await store.conversations.create("support", {})
    told = _told(store)
    await open_turn(store, conversation.id, "hello")  # the bot's turn: no event
    assert await store.handoffs.assign(conversation.id, "ann", holder=None, transfer=False) is None
    await store.conversations.transition(
        conversation.id,
        allowed_from=[ConversationStatus.ACTIVE],
        to=ConversationStatus.ESCALATED,
        reason=EscalationReason.MANUAL,
    )
    assert await store.handoffs.assign(conversation.id, "ann", holder=None, transfer=False)
    assert await store.handoffs.assign(conversation.id, "bob", holder=None, transfer=False) is None
    assert await store.handoffs.agent_message(conversation.id, "bob", "me?") is None
    events = await store.events.conversation_events(conversation.id, 0, 100)
    assert [_what(e) for e in events] == ["escalated", "assigned"]
    assert len(told) == 2


async def test_the_customer_leaving_is_abandoned_while_it_waits_ended_while_held(
    store: Ports,
) -> None:
    await store.goals.add(sample_goal())
    steps = []
    for claimed in (False, True):
        conversation = await store.conversations.create("support", {})
        await open_turn(store, conversation.id, "human please", escalate_when=_trigger)
        if claimed:
            await store.handoffs.assign(conversation.id, "ann", holder=None, transfer=False)
        closed = await store.conversations.transition(
            conversation.id,
            allowed_from=[ConversationStatus.ACTIVE, ConversationStatus.ESCALATED],
            to=ConversationStatus.COMPLETED,
            closing=CLOSED,
        )
        assert closed is not None
        events = await store.events.conversation_events(conversation.id, 0, 100)
        steps.append(events[-1].step)
        assert events[-1].status is ConversationStatus.COMPLETED
    assert steps == [HandoffStep.ABANDONED, HandoffStep.ENDED]


async def test_a_reader_following_the_queue_misses_no_event_committed_concurrently(
    store: Ports,
) -> None:
    """Events committed at once on many conversations: a reader that reads "after the
    last id it saw" while they commit ends with every one of them, each once."""
    await store.goals.add(sample_goal())
    conversations = [await store.conversations.create("support", {}) for _ in range(12)]
    for conversation in conversations:
        await store.conversations.transition(
            conversation.id,
            allowed_from=[ConversationStatus.ACTIVE],
            to=ConversationStatus.ESCALATED,
            reason=EscalationReason.MANUAL,
        )
    start = await store.events.last_id()
    seen: list[int] = []
    writing = True

    async def follow() -> None:
        cursor = start
        while writing or (await store.events.last_id()) > cursor:
            for event in await store.events.queue_events(cursor, 100):
                seen.append(event.id)
                cursor = event.id
            await asyncio.sleep(0)

    async def work(conversation: Conversation) -> None:
        await store.handoffs.assign(conversation.id, "ann", holder=None, transfer=False)
        await store.handoffs.agent_message(conversation.id, "ann", "hi")
        await store.handoffs.unassign(conversation.id, holder="ann")

    reader = asyncio.create_task(follow())
    await asyncio.gather(*(work(c) for c in conversations))
    writing = False
    await reader
    every = [e.id for e in await store.events.queue_events(start, 1000)]
    assert len(every) == 3 * len(conversations)
    assert seen == every
