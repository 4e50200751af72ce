"""The live streams, in process: a subscriber sees each event once and in order, from
now on or from the event it saw last; a heartbeat when nothing happens; another owner's
conversation is not found; past the bound, or while draining, no new stream starts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from parley.bus import Hub, HubClosedError
from parley.domain.errors import ConversationNotFoundError, TooManyStreamsError
from parley.domain.keys import Principal, Role
from parley.domain.live import LiveItem, LiveService
from parley.domain.models import HandoffStep, LiveEvent
from parley.testing import MemoryStore
from tests.store.helpers import CLOSED, escalated, sample_goal

ADMIN = Principal(name="root", role=Role.ADMIN)
ALICE = Principal(name="alice", role=Role.CLIENT)
AGENT = Principal(name="ann", role=Role.AGENT)


@pytest.fixture
async def store() -> MemoryStore:
    store = MemoryStore()
    await store.goals.add(sample_goal())
    return store


def _live(store: MemoryStore, hub: Hub, heartbeat: float = 60.0) -> LiveService:
    store.events.on_published = hub.publish
    return LiveService(store.events, store.conversations, hub, heartbeat_seconds=heartbeat)


async def _escalated(store: MemoryStore, owner: str = "alice") -> uuid.UUID:
    return await escalated(store, owner=owner)


async def _next(items: AsyncIterator[LiveItem]) -> LiveItem:
    async with asyncio.timeout(5):
        return await anext(items)


def _step(item: LiveItem) -> HandoffStep | None:
    assert isinstance(item, LiveEvent)
    return item.step


async def test_a_subscriber_sees_new_events_once_in_order_from_now_on(store: MemoryStore) -> None:
    hub = Hub(10)
    live = _live(store, hub)
    conversation_id = await _escalated(store)  # before it subscribed: not sent
    items = await live.conversation(conversation_id, ALICE, None)
    first = asyncio.ensure_future(_next(items))
    await asyncio.sleep(0)  # it waits for news
    await store.handoffs.assign(conversation_id, "ann", holder=None, transfer=False)
    assert _step(await first) is HandoffStep.ASSIGNED
    await store.handoffs.agent_message(conversation_id, "ann", "hello")
    await store.handoffs.resolve(conversation_id, holder="ann", closing=CLOSED)
    message = await _next(items)
    assert isinstance(message, LiveEvent)
    assert message.message is not None
    assert message.message.content == "hello"
    assert _step(await _next(items)) is HandoffStep.COMPLETED
    await items.aclose()
    assert hub.counts() == {"queue": 0, "conversation": 0}


async def test_a_subscriber_resuming_after_an_event_gets_the_rest(store: MemoryStore) -> None:
    live = _live(store, Hub(10))
    conversation_id = await _escalated(store)
    await store.handoffs.assign(conversation_id, "ann", holder=None, transfer=False)
    await store.handoffs.unassign(conversation_id, holder="ann")
    items = await live.conversation(conversation_id, AGENT, 1)  # saw "escalated"
    assert [_step(await _next(items)) for _ in range(2)] == [
        HandoffStep.ASSIGNED,
        HandoffStep.UNASSIGNED,
    ]
    queue = await live.queue(0)
    assert _step(await _next(queue)) is HandoffStep.ESCALATED
    await items.aclose()
    await queue.aclose()


async def test_a_last_event_id_past_the_log_resumes_from_now_not_past_new_events(
    store: MemoryStore,
) -> None:
    live = _live(store, Hub(10))
    conversation_id = await _escalated(store)  # event 1
    items = await live.conversation(conversation_id, AGENT, 999)
    first = asyncio.ensure_future(_next(items))
    await asyncio.sleep(0)
    await store.handoffs.assign(conversation_id, "ann", holder=None, transfer=False)
    event = await first
    assert isinstance(event, LiveEvent)
    assert (event.seq, event.step) == (2, HandoffStep.ASSIGNED)
    await items.aclose()


async def test_a_quiet_stream_sends_heartbeats(store: MemoryStore) -> None:
    live = _live(store, Hub(10), heartbeat=0.01)
    items = await live.queue(None)
    assert await _next(items) is None
    await items.aclose()


async def test_a_client_key_follows_only_its_own_conversations(store: MemoryStore) -> None:
    live = _live(store, Hub(10))
    theirs = await _escalated(store, owner="bob")
    with pytest.raises(ConversationNotFoundError):
        await live.conversation(theirs, ALICE, None)
    with pytest.raises(ConversationNotFoundError):
        await live.conversation(uuid.uuid4(), ADMIN, None)
    assert await live.conversation(theirs, AGENT, None) is not None


async def test_past_the_bound_or_while_draining_no_new_stream_starts(store: MemoryStore) -> None:
    hub = Hub(1)
    live = _live(store, hub)
    items = await live.queue(None)
    waiting = asyncio.ensure_future(_next(items))
    await asyncio.sleep(0)
    with pytest.raises(TooManyStreamsError):
        await live.queue(None)
    hub.close()
    with pytest.raises(StopAsyncIteration):
        await waiting  # the open stream ends
    with pytest.raises(HubClosedError):
        await live.queue(None)


async def test_streams_woken_together_at_the_same_place_share_one_read(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thousand subscribers of one conversation each read the log on every event: one
    read for all of them, not one each."""
    live = _live(store, Hub(100))
    conversation_id = await _escalated(store)
    reads: list[int] = []
    original = store.events.conversation_events

    async def counted(conversation: uuid.UUID, after: int, limit: int) -> list[LiveEvent]:
        reads.append(after)
        return await original(conversation, after, limit)

    monkeypatch.setattr(store.events, "conversation_events", counted)
    streams = [await live.conversation(conversation_id, AGENT, None) for _ in range(50)]
    firsts = [asyncio.ensure_future(_next(items)) for items in streams]
    await asyncio.sleep(0)  # each reads the log once (together), then waits for news
    reads.clear()
    await store.handoffs.assign(conversation_id, "ann", holder=None, transfer=False)
    assert {_step(await first) for first in firsts} == {HandoffStep.ASSIGNED}
    assert reads == [1]  # after event 1 (the escalation): one read, fifty streams
    for items in streams:
        await items.aclose()


async def test_a_followed_conversation_that_is_deleted_ends_its_stream_not_found(
    store: MemoryStore,
) -> None:
    live = _live(store, Hub(10))
    conversation_id = await _escalated(store)
    await store.handoffs.assign(conversation_id, "ann", holder=None, transfer=False)
    await store.handoffs.resolve(conversation_id, holder="ann", closing=CLOSED)
    items = await live.conversation(conversation_id, AGENT, None)
    following = asyncio.ensure_future(_next(items))
    await asyncio.sleep(0)  # it waits for news
    assert await store.conversations.delete(conversation_id)
    with pytest.raises(ConversationNotFoundError):
        await following
    await items.aclose()
