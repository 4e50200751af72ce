"""A key's LLM tokens a minute: checked before a turn, charged after its reply; a busy
key found within its limit is not asked about again for a second (a Redis round trip
each), unless a reply's charge goes over it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from parley.domain.chat import ChatService
from parley.domain.conversations import ConversationService
from parley.domain.errors import TooManyTokensError
from parley.domain.events import EventFanout
from parley.domain.goals import GoalService
from parley.domain.keys import KeyLimits, Principal, Role
from parley.domain.models import EscalationPolicy, Goal
from parley.domain.recent_checks import RecentChecks
from parley.domain.turns import Done, TurnEvent
from parley.testing import MemoryConversations, MemoryGoals
from tests.support.limiters import CountingLimiter
from tests.support.metrics import FakeClock
from tests.support.providers import ScriptedProvider

# ScriptedProvider's "ok reply" uses 7 tokens (5 prompt, 2 completion).
SHOP = Principal("shop", Role.CLIENT, KeyLimits(tpm=20))


class Keyed:
    def __init__(self, limiter: type[CountingLimiter] = CountingLimiter) -> None:
        self.clock = FakeClock()
        self.limiter = limiter(self.clock)
        now = datetime.now(UTC)
        goals = MemoryGoals(
            Goal("support", "Support", "Help.", None, EscalationPolicy(max_turns=50), now, now)
        )
        store = MemoryConversations(goals)
        events = EventFanout()
        self.conversations = ConversationService(store, GoalService(goals), events)
        self.chat = ChatService(
            store,
            ScriptedProvider(),
            events,
            rate_limiter=self.limiter,
            tokens_checked=RecentChecks(clock=self.clock),
        )

    async def turn(self, conversation_id: uuid.UUID) -> list[TurnEvent]:
        turn = await self.chat.start_turn(conversation_id, "hi", streaming=False, caller=SHOP)
        async with asyncio.timeout(10):
            return [event async for event in turn.events()]


async def test_a_busy_key_is_asked_about_once_a_second_until_a_reply_goes_over() -> None:
    keyed = Keyed()
    conversation = (await keyed.conversations.create("support", {}, owner="shop")).id
    for _ in range(2):  # 7, then 14 of 20 tokens: asked once
        assert isinstance((await keyed.turn(conversation))[-1], Done)
    assert keyed.limiter.checks == 1
    keyed.clock.advance(1.5)  # a second on: asked again (14 of 20, and refilled a little)
    assert isinstance((await keyed.turn(conversation))[-1], Done)
    assert keyed.limiter.checks == 2
    # That turn's charge went over (21 of 20, less the refill): the next is asked, refused.
    with pytest.raises(TooManyTokensError):
        await keyed.turn(conversation)
    assert keyed.limiter.checks == 3


async def test_a_changed_limit_is_asked_about_at_once() -> None:
    keyed = Keyed()
    conversation = (await keyed.conversations.create("support", {}, owner="shop")).id
    await keyed.turn(conversation)
    assert keyed.limiter.checks == 1
    lowered = Principal("shop", Role.CLIENT, KeyLimits(tpm=10))  # within the second
    turn = await keyed.chat.start_turn(conversation, "hi", streaming=False, caller=lowered)
    await turn.wait()
    assert keyed.limiter.checks == 2


class SlowChargeLimiter(CountingLimiter):
    """A charge that waits until the test lets it through (a Redis round trip)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.charging = asyncio.Event()
        self.let_through = asyncio.Event()
        self.charged = 0

    async def charge(self, name: str, identity: str, per_minute: int, cost: int) -> bool:
        self.charging.set()
        await self.let_through.wait()
        self.charged += cost
        return await super().charge(name, identity, per_minute, cost)


async def test_the_reply_is_out_before_its_tokens_are_counted_and_the_turn_ends_after() -> None:
    """The reply does not wait on the charge (with Redis, a round trip), but the turn
    stays in flight until its tokens are counted: shutdown's drain waits for it."""
    keyed = Keyed(SlowChargeLimiter)
    limiter = keyed.limiter
    assert isinstance(limiter, SlowChargeLimiter)
    conversation = (await keyed.conversations.create("support", {}, owner="shop")).id
    turn = await keyed.chat.start_turn(conversation, "hi", streaming=False, caller=SHOP)
    events = turn.events()
    async with asyncio.timeout(10):
        while not isinstance(await anext(events), Done):
            pass
        await limiter.charging.wait()
    assert limiter.charged == 0
    assert not turn.done
    limiter.let_through.set()
    async with asyncio.timeout(10):
        assert [event async for event in events] == []
        await turn.wait()
    assert limiter.charged == 7
