"""The handoff's contract, on each store (the fake, SQLite, PostgreSQL): an escalation
opens a waiting handoff; a claim wins only while it waits; only its holder (or an admin)
hands it on, puts it back, writes as the agent or resolves it; the queue is oldest first."""

from __future__ import annotations

import asyncio
import uuid

from parley.domain.models import ConversationStatus, EscalationReason, HandoffState
from parley.llm import Role
from tests.store.helpers import CLOSED, Ports, open_turn, sample_goal
from tests.store.test_contract import store

__all__ = ["store"]


async def _escalated(store: Ports, goal_id: str = "support") -> uuid.UUID:
    conversation = await store.conversations.create(goal_id, {})
    await open_turn(store, conversation.id, "hello")
    escalated = await store.conversations.transition(
        conversation.id,
        allowed_from=[ConversationStatus.ACTIVE],
        to=ConversationStatus.ESCALATED,
        reason=EscalationReason.USER_REQUEST,
    )
    assert escalated is not None
    assert escalated.handoff is not None
    assert escalated.handoff.state is HandoffState.WAITING
    return conversation.id


async def test_an_escalation_opens_a_waiting_handoff_one_claim_wins(store: Ports) -> None:
    await store.goals.add(sample_goal())
    conversation_id = await _escalated(store)
    claims = await asyncio.gather(
        *(
            store.handoffs.assign(conversation_id, f"agent-{n}", holder=None, transfer=False)
            for n in range(5)
        )
    )
    won = [c for c in claims if c is not None]
    assert len(won) == 1
    assert won[0].handoff is not None
    assert won[0].handoff.state is HandoffState.ASSIGNED
    assert won[0].handoff.assigned_at is not None
    loaded = await store.conversations.get(conversation_id)
    assert loaded is not None
    assert loaded.handoff == won[0].handoff


async def test_only_the_holder_or_an_admin_hands_it_on_puts_it_back_or_writes(
    store: Ports,
) -> None:
    await store.goals.add(sample_goal())
    conversation_id = await _escalated(store)
    escalated_at = (await store.conversations.get(conversation_id)).handoff.escalated_at  # type: ignore[union-attr]
    handoffs = store.handoffs
    assert await handoffs.assign(conversation_id, "ann", holder=None, transfer=False)
    assert await handoffs.assign(conversation_id, "bob", holder="eve", transfer=True) is None
    assert await handoffs.agent_message(conversation_id, "bob", "hi") is None
    moved = await handoffs.assign(conversation_id, "bob", holder="ann", transfer=True)
    assert moved is not None
    assert moved.handoff is not None
    assert moved.handoff.agent == "bob"
    stored = await handoffs.agent_message(conversation_id, "bob", "I can help")
    assert stored is not None
    message, after = stored
    assert (message.role, message.author, message.content) == (Role.AGENT, "bob", "I can help")
    assert after.handoff is not None
    first = after.handoff.first_agent_reply_at
    assert first == message.created_at
    again = await handoffs.agent_message(conversation_id, "bob", "more")
    assert again is not None
    assert again[1].handoff is not None
    assert again[1].handoff.first_agent_reply_at == first  # the first reply stays first
    assert await handoffs.unassign(conversation_id, holder="ann") is None
    back = await handoffs.unassign(conversation_id, holder=None)  # an admin
    assert back is not None
    assert back.handoff is not None
    assert (back.handoff.state, back.handoff.agent) == (HandoffState.WAITING, None)
    assert back.handoff.escalated_at == escalated_at  # its wait counts from the start
    loaded = await store.conversations.get(conversation_id, with_messages=True)
    assert loaded is not None
    assert [(m.role, m.author) for m in loaded.messages][-2:] == [
        (Role.AGENT, "bob"),
        (Role.AGENT, "bob"),
    ]


async def test_resolving_returns_it_to_the_bot_or_completes_it_once(store: Ports) -> None:
    await store.goals.add(sample_goal())
    back_to_bot, done = await _escalated(store), await _escalated(store)
    for conversation_id in (back_to_bot, done):
        assert await store.handoffs.assign(conversation_id, "ann", holder=None, transfer=False)
    assert await store.handoffs.resolve(back_to_bot, holder="bob", closing=None) is None
    active = await store.handoffs.resolve(back_to_bot, holder="ann", closing=None)
    assert active is not None
    assert (active.status, active.turns) == (ConversationStatus.ACTIVE, 0)
    assert active.handoff is not None
    assert active.handoff.state is HandoffState.RESOLVED
    assert active.handoff.resolved_at is not None
    assert await store.handoffs.resolve(back_to_bot, holder="ann", closing=None) is None
    await open_turn(store, back_to_bot, "thanks, bot")  # the bot takes messages again
    completed = await store.handoffs.resolve(done, holder=None, closing=CLOSED)
    assert completed is not None
    assert completed.status is ConversationStatus.COMPLETED


async def test_the_queue_lists_the_longest_waiting_first_by_state_goal_and_agent(
    store: Ports,
) -> None:
    await store.goals.add(sample_goal())
    await store.goals.add(sample_goal("billing"))
    first, second = await _escalated(store), await _escalated(store, "billing")
    third = await _escalated(store)
    await store.handoffs.assign(second, "ann", holder=None, transfer=False)
    waiting = await store.handoffs.queue(state=HandoffState.WAITING)
    assert [c.id for c in waiting.items] == [first, third]
    page = await store.handoffs.queue(state=HandoffState.WAITING, limit=1)
    assert [c.id for c in page.items] == [first]
    assert page.next_cursor is not None
    rest = await store.handoffs.queue(state=HandoffState.WAITING, limit=1, cursor=page.next_cursor)
    assert [c.id for c in rest.items] == [third]
    assert rest.next_cursor is None
    assigned = await store.handoffs.queue(state=HandoffState.ASSIGNED, agent="ann")
    assert [c.id for c in assigned.items] == [second]
    assert (await store.handoffs.queue(state=HandoffState.ASSIGNED, agent="bob")).items == ()
    billing = await store.handoffs.queue(state=HandoffState.WAITING, goal_id="billing")
    assert billing.items == ()


async def test_a_customer_leaving_a_waiting_handoff_abandons_it(store: Ports) -> None:
    await store.goals.add(sample_goal())
    conversation_id = await _escalated(store)
    closed = await store.conversations.transition(
        conversation_id,
        allowed_from=[ConversationStatus.ESCALATED],
        to=ConversationStatus.COMPLETED,
        closing=CLOSED,
    )
    assert closed is not None
    assert closed.handoff is not None
    assert closed.handoff.state is HandoffState.ABANDONED
    assert closed.handoff.resolved_at is not None
    assert (await store.handoffs.queue(state=HandoffState.WAITING)).items == ()


async def test_queue_stats_count_open_handoffs_per_goal_and_state(store: Ports) -> None:
    await store.goals.add(sample_goal())
    await store.goals.add(sample_goal("billing"))
    first = await _escalated(store)
    await _escalated(store)
    held = await _escalated(store, "billing")
    await store.handoffs.assign(held, "ann", holder=None, transfer=False)
    stats = {
        (goal, state): (count, at) for goal, state, count, at in await store.handoffs.queue_stats()
    }
    loaded = await store.conversations.get(first)
    assert loaded is not None
    assert loaded.handoff is not None
    assert stats[("support", HandoffState.WAITING)] == (2, loaded.handoff.escalated_at)
    assert stats[("billing", HandoffState.ASSIGNED)][0] == 1
    assert len(stats) == 2
