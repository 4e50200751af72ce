"""The contract every store keeps, run on each of them: the in-memory fake (parley.testing),
SQLite and PostgreSQL. A case the fake fails here is a fake that drifted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from parley.domain.errors import (
    BudgetExceededError,
    ConversationClosedError,
    ConversationEscalatedError,
    ConversationNotFoundError,
    GoalExistsError,
    GoalInUseError,
    GoalNotFoundError,
    IdempotencyKeyReusedError,
    InvalidCursorError,
)
from parley.domain.keys import ApiKey, BudgetPeriod, KeyLimits, Role, digest
from parley.domain.models import ConversationStatus, EscalationReason
from parley.domain.ports import ReplyDraft, SpendCap
from parley.llm import Usage
from parley.testing import MemoryStore
from tests.store.helpers import CLOSED, Ports, database_store, open_turn, sample_goal


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.integration]),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ports]:
    if request.param == "memory":
        yield MemoryStore()
        return
    async with database_store(request.param, tmp_path) as database:
        yield database


async def test_goal_round_trips_with_its_policy(store: Ports) -> None:
    """What is stored comes back equal, timestamps in UTC included."""
    goal = sample_goal(model="llama-3.3-70b-versatile")
    await store.goals.add(goal)
    loaded = await store.goals.get("support")
    assert loaded == goal
    assert loaded is not None
    assert loaded.created_at.tzinfo is not None


async def test_duplicate_goal_id_conflicts(store: Ports) -> None:
    await store.goals.add(sample_goal())
    with pytest.raises(GoalExistsError):
        await store.goals.add(sample_goal(name="Other"))
    assert [g.name for g in await store.goals.all()] == ["Support"]


async def test_goal_in_use_cannot_be_deleted(store: Ports) -> None:
    """Deleting a goal never takes its conversations with it."""
    await store.goals.add(sample_goal())
    await store.conversations.create("support", {})
    with pytest.raises(GoalInUseError):
        await store.goals.delete("support")
    assert await store.goals.get("support") is not None
    assert await store.goals.delete("missing") is False


async def test_conversation_for_missing_goal_is_refused(store: Ports) -> None:
    with pytest.raises(GoalNotFoundError):
        await store.conversations.create("nope", {})


async def test_messages_get_consecutive_sequence_numbers_and_turns(store: Ports) -> None:
    """Each message takes the next seq; only user messages count as turns; a reply records
    the message it answers."""
    await store.goals.add(sample_goal())
    conversation = await store.conversations.create("support", {"channel": "web"})
    first = await open_turn(store, conversation.id, "hi")
    reply, after = await store.conversations.store_reply(
        first.question, ReplyDraft("hello", "m", Usage(3, 1, 4, cached_prompt_tokens=2))
    )
    second = await open_turn(store, conversation.id, "again", history_limit=2)
    assert (first.question.seq, reply.seq, second.question.seq) == (1, 2, 3)
    assert (first.conversation.turns, after.turns, second.conversation.turns) == (1, 1, 2)
    assert reply.reply_to == first.question.id
    assert first.goal.id == "support"
    assert [m.content for m in second.history] == ["hello", "again"]
    loaded = await store.conversations.get(conversation.id, with_messages=True)
    assert loaded is not None
    assert [m.content for m in loaded.messages] == ["hi", "hello", "again"]
    assert loaded.messages[1].usage == Usage(3, 1, 4, cached_prompt_tokens=2)
    assert loaded.metadata == {"channel": "web"}


async def test_message_for_missing_conversation_is_refused(store: Ports) -> None:
    with pytest.raises(ConversationNotFoundError):
        await open_turn(store, uuid.uuid4(), "hi")


async def test_escalated_and_closed_conversations_take_no_message(store: Ports) -> None:
    await store.goals.add(sample_goal())
    for to, error in [
        (ConversationStatus.ESCALATED, ConversationEscalatedError),
        (ConversationStatus.COMPLETED, ConversationClosedError),
    ]:
        conversation = await store.conversations.create("support", {})
        await store.conversations.transition(
            conversation.id,
            allowed_from=[ConversationStatus.ACTIVE],
            to=to,
            closing=CLOSED if to is ConversationStatus.COMPLETED else None,
        )
        with pytest.raises(error):
            await open_turn(store, conversation.id, "hi")
        loaded = await store.conversations.get(conversation.id, with_messages=True)
        assert loaded is not None
        assert loaded.messages == ()


async def test_a_second_reply_to_one_message_returns_the_first(store: Ports) -> None:
    await store.goals.add(sample_goal())
    conversation = await store.conversations.create("support", {})
    opened = await open_turn(store, conversation.id, "hi")
    first, _ = await store.conversations.store_reply(opened.question, ReplyDraft("one", "m", None))
    second, _ = await store.conversations.store_reply(opened.question, ReplyDraft("two", "m", None))
    assert second == first
    loaded = await store.conversations.get(conversation.id, with_messages=True)
    assert loaded is not None
    assert [m.content for m in loaded.messages] == ["hi", "one"]


async def test_an_idempotency_key_names_one_stored_turn(store: Ports) -> None:
    """The same key stores nothing new and returns the turn with its reply; the same key
    for other content is a conflict."""
    await store.goals.add(sample_goal())
    conversation = await store.conversations.create("support", {})
    opened = await open_turn(store, conversation.id, "hi", idempotency_key="k1")
    reply, _ = await store.conversations.store_reply(opened.question, ReplyDraft("yo", "m", None))
    again = await open_turn(store, conversation.id, "hi", idempotency_key="k1")
    assert again.repeated
    assert again.question == opened.question
    assert again.reply == reply
    with pytest.raises(IdempotencyKeyReusedError):
        await open_turn(store, conversation.id, "other", idempotency_key="k1")
    loaded = await store.conversations.get(conversation.id, with_messages=True)
    assert loaded is not None
    assert [m.content for m in loaded.messages] == ["hi", "yo"]
    assert loaded.turns == 1


async def test_a_keyed_turn_holds_an_answer_lease_until_replied_or_released(
    store: Ports,
) -> None:
    """So a retry on another replica waits for the reply being made instead of asking the
    LLM again; once the turn ends with no reply, a retry may ask at once."""
    await store.goals.add(sample_goal())
    conversation = await store.conversations.create("support", {})
    opened = await open_turn(store, conversation.id, "hi", idempotency_key="k1")
    assert opened.answering_until is not None
    assert opened.answering_until > opened.question.created_at
    retry = await open_turn(store, conversation.id, "hi", idempotency_key="k1")
    assert retry.repeated
    assert retry.answering_until == opened.answering_until
    # Renewed while the turn lives: from now, by the lease's length.
    await store.conversations.renew_answer(opened.question)
    renewed = (await open_turn(store, conversation.id, "hi", idempotency_key="k1")).answering_until
    assert renewed is not None
    assert renewed > opened.answering_until
    await store.conversations.release_answer(opened.question)
    await store.conversations.renew_answer(opened.question)  # released stays released
    assert (
        await open_turn(store, conversation.id, "hi", idempotency_key="k1")
    ).answering_until is None
    # Replied: the reply, no lease.
    second = await open_turn(store, conversation.id, "again", idempotency_key="k2")
    await store.conversations.store_reply(second.question, ReplyDraft("yo", "m", None))
    replied = await open_turn(store, conversation.id, "again", idempotency_key="k2")
    assert replied.reply is not None
    assert replied.answering_until is None
    # No key, or a message that escalated (no reply is coming): no lease.
    assert (await open_turn(store, conversation.id, "plain")).answering_until is None

    def escalate(goal: object, conversation: object) -> EscalationReason:
        return EscalationReason.TRIGGER_PHRASE

    escalated = await open_turn(
        store, conversation.id, "human", idempotency_key="k3", escalate_when=escalate
    )
    assert escalated.answering_until is None


async def test_transition_only_from_allowed_statuses(store: Ports) -> None:
    """An escalation happens once; a second one finds nothing to change."""
    await store.goals.add(sample_goal())
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


async def test_listing_pages_through_everything_once(store: Ports) -> None:
    """Keyset pagination: newest first, no duplicates, no gaps, filters respected."""
    await store.goals.add(sample_goal("a"))
    await store.goals.add(sample_goal("b"))
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


async def test_garbage_cursor_is_refused(store: Ports) -> None:
    with pytest.raises(InvalidCursorError):
        await store.conversations.page(cursor="not-a-cursor")


async def test_messages_come_a_page_at_a_time_oldest_first(store: Ports) -> None:
    """The latest ``messages_limit`` messages before ``messages_before``, oldest first."""
    await store.goals.add(sample_goal())
    conversation = await store.conversations.create("support", {})
    for index in range(3):
        opened = await open_turn(store, conversation.id, f"q{index}")
        await store.conversations.store_reply(opened.question, ReplyDraft(f"a{index}", "m", None))
    latest = await store.conversations.get(conversation.id, with_messages=True, messages_limit=2)
    assert latest is not None
    assert [m.content for m in latest.messages] == ["q2", "a2"]
    earlier = await store.conversations.get(
        conversation.id,
        with_messages=True,
        messages_limit=3,
        messages_before=latest.messages[0].seq,
    )
    assert earlier is not None
    assert [m.content for m in earlier.messages] == ["a0", "q1", "a1"]
    bare = await store.conversations.get(conversation.id)
    assert bare is not None
    assert bare.messages == ()


async def test_consecutive_llm_failures_escalate_once_at_the_threshold(store: Ports) -> None:
    """A reply resets the streak; the escalation happens at ``escalate_at`` and only while
    the conversation is active."""
    await store.goals.add(sample_goal())
    conversation = await store.conversations.create("support", {})
    assert await store.conversations.record_llm_failure(conversation.id, escalate_at=2) is None
    opened = await open_turn(store, conversation.id, "hi")
    await store.conversations.store_reply(opened.question, ReplyDraft("ok", "m", None))
    assert await store.conversations.record_llm_failure(conversation.id, escalate_at=2) is None
    escalated = await store.conversations.record_llm_failure(conversation.id, escalate_at=2)
    assert escalated is not None
    assert escalated.status is ConversationStatus.ESCALATED
    assert escalated.escalation is not None
    assert escalated.escalation.reason is EscalationReason.LLM_FAILURE
    assert await store.conversations.record_llm_failure(conversation.id, escalate_at=2) is None
    with pytest.raises(ConversationNotFoundError):
        await store.conversations.record_llm_failure(uuid.uuid4(), escalate_at=2)


async def test_a_repeated_key_knows_the_escalation_its_message_caused(store: Ports) -> None:
    """Repeated, the message that escalated tells that escalation; one whose conversation
    was escalated later by something else does not."""
    await store.goals.add(sample_goal())

    def escalate(_goal: object, _conversation: object) -> EscalationReason:
        return EscalationReason.TRIGGER_PHRASE

    first = await store.conversations.create("support", {})
    await open_turn(store, first.id, "human", idempotency_key="k", escalate_when=escalate)
    again = await open_turn(store, first.id, "human", idempotency_key="k")
    assert again.repeated
    assert again.escalation is EscalationReason.TRIGGER_PHRASE
    second = await store.conversations.create("support", {})
    await open_turn(store, second.id, "hi", idempotency_key="k")
    await store.conversations.transition(
        second.id,
        allowed_from=[ConversationStatus.ACTIVE],
        to=ConversationStatus.ESCALATED,
        reason=EscalationReason.MANUAL,
    )
    later = await open_turn(store, second.id, "hi", idempotency_key="k")
    assert later.repeated
    assert later.escalation is None
    assert later.conversation.status is ConversationStatus.ESCALATED


async def test_only_active_conversations_are_counted_active(store: Ports) -> None:
    await store.goals.add(sample_goal())
    ids = [(await store.conversations.create("support", {})).id for _ in range(3)]
    await store.conversations.transition(
        ids[0],
        allowed_from=[ConversationStatus.ACTIVE],
        to=ConversationStatus.COMPLETED,
        closing=CLOSED,
    )
    assert await store.conversations.count_active() == 2


async def test_a_key_is_found_by_its_digest_revoked_once_and_its_name_never_reused(
    store: Ports,
) -> None:
    assert not await store.keys.any_exist()
    made = datetime.now(UTC)
    key = ApiKey("shop", Role.CLIENT, digest("parley_secret"), created_at=made)
    assert await store.keys.add(key)
    assert await store.keys.any_exist()
    assert await store.keys.by_digest(digest("parley_secret")) == key
    assert await store.keys.by_digest(digest("parley_other")) is None
    assert not await store.keys.add(ApiKey("shop", Role.ADMIN, digest("x"), created_at=made))
    await store.keys.touch("shop", made + timedelta(minutes=2))
    first = await store.keys.revoke("shop", made + timedelta(minutes=3))
    assert first is not None
    assert first.revoked_at == made + timedelta(minutes=3)
    assert first.last_used_at == made + timedelta(minutes=2)
    again = await store.keys.revoke("shop", made + timedelta(minutes=9))
    assert again == first  # revoked once: the first time stands
    assert await store.keys.revoke("nobody", made) is None
    assert [k.name for k in await store.keys.all()] == ["shop"]


async def test_an_owner_lists_and_answers_only_in_its_own_conversations(store: Ports) -> None:
    """Another owner's conversation is not found by a turn, and the turn stores nothing."""
    await store.goals.add(sample_goal())
    alice = await store.conversations.create("support", {}, "alice")
    bob = await store.conversations.create("support", {}, "bob")
    assert alice.owner == "alice"
    mine = await store.conversations.page(owner="alice")
    assert [c.id for c in mine.items] == [alice.id]
    assert {c.id for c in (await store.conversations.page()).items} == {alice.id, bob.id}
    for key in (None, "k"):
        with pytest.raises(ConversationNotFoundError):
            await open_turn(store, alice.id, "intruding", owner="bob", idempotency_key=key)
    await open_turn(store, alice.id, "hi", owner="alice", idempotency_key="k")
    with pytest.raises(ConversationNotFoundError):  # a used key tells bob nothing either
        await open_turn(store, alice.id, "other", owner="bob", idempotency_key="k")
    await store.conversations.transition(
        alice.id,
        allowed_from=[ConversationStatus.ACTIVE],
        to=ConversationStatus.COMPLETED,
        closing=CLOSED,
    )
    with pytest.raises(ConversationNotFoundError):  # not "closed": it is not bob's
        await open_turn(store, alice.id, "late", owner="bob")
    stored = await store.conversations.get(alice.id, with_messages=True)
    assert stored is not None
    assert [m.content for m in stored.messages] == ["hi"]


async def test_a_reply_charges_its_cost_to_the_payer_and_its_conversation_once(
    store: Ports,
) -> None:
    """The reply's transaction adds its cost to the payer's spend of the day and its tokens
    and cost to the conversation; a second reply to the same message adds nothing."""
    await store.goals.add(sample_goal())
    conversation = await store.conversations.create("support", {})
    usage = Usage(prompt_tokens=100, completion_tokens=20, total_tokens=120)
    draft = ReplyDraft("one", "m", usage, cost_nanos=1_234_567, payer="shop")
    first = await open_turn(store, conversation.id, "hi")
    _, after = await store.conversations.store_reply(first.question, draft)
    await store.conversations.store_reply(first.question, draft)  # a duplicate: no charge
    second = await open_turn(store, conversation.id, "again")
    _, after = await store.conversations.store_reply(second.question, draft)
    free = await open_turn(store, conversation.id, "free")
    await store.conversations.store_reply(free.question, ReplyDraft("x", "m", usage))
    assert (after.tokens_used, after.cost_nanos) == (240, 2_469_134)
    loaded = await store.conversations.get(conversation.id)
    assert loaded is not None
    assert (loaded.tokens_used, loaded.cost_nanos) == (360, 2_469_134)
    today = datetime.now(UTC).date()
    assert await store.keys.spent("shop", today) == 2_469_134
    assert await store.keys.spent("shop", today + timedelta(days=1)) == 0
    assert await store.keys.spent("nobody", today) == 0
    assert await store.keys.spent_daily(today - timedelta(days=40)) == {"shop": {today: 2_469_134}}


async def test_a_turn_is_refused_in_its_opening_transaction_once_its_budget_is_spent(
    store: Ports,
) -> None:
    """The budget is checked where the turn opens, counting only the period's days: a
    refused message is not stored, and a message for the human agent needs no budget."""
    await store.goals.add(sample_goal())
    conversation = await store.conversations.create("support", {})
    opened = await open_turn(store, conversation.id, "first")
    draft = ReplyDraft("r", "m", None, cost_nanos=500, payer="shop")
    await store.conversations.store_reply(opened.question, draft)
    today = datetime.now(UTC).date()
    resets = datetime.now(UTC) + timedelta(days=1)
    tomorrow = SpendCap("shop", today + timedelta(days=1), 500, resets)  # yesterday's spend
    assert (await open_turn(store, conversation.id, "second", spend_cap=tomorrow)).question
    other = SpendCap("other", today, 1, resets)
    assert (await open_turn(store, conversation.id, "third", spend_cap=other)).question
    below = SpendCap("shop", today, 501, resets)
    assert (await open_turn(store, conversation.id, "fourth", spend_cap=below)).question
    before = await store.conversations.get(conversation.id, with_messages=True)
    assert before is not None
    spent = SpendCap("shop", today, 500, resets)
    with pytest.raises(BudgetExceededError) as refused:
        await open_turn(store, conversation.id, "fifth", spend_cap=spent, idempotency_key="k")
    assert refused.value.resets_at == resets
    after = await store.conversations.get(conversation.id, with_messages=True)
    assert after == before
    # The same key again, once the budget allows: stored as new, not a repeat.
    again = await open_turn(store, conversation.id, "fifth", spend_cap=below, idempotency_key="k")
    assert not again.repeated
    # Escalated, the conversation's messages go to the human agent: no LLM, no budget.
    await open_turn(
        store, conversation.id, "a human", escalate_when=lambda *_: EscalationReason.USER_REQUEST
    )
    assert (await open_turn(store, conversation.id, "still there?", spend_cap=spent)).held


async def test_a_key_keeps_its_budget_and_rate_limits(store: Ports) -> None:
    limits = KeyLimits(budget_usd=12.5, budget_period=BudgetPeriod.WEEK, rpm=60, tpm=10_000)
    key = ApiKey("shop", Role.CLIENT, digest("s"), created_at=datetime.now(UTC), limits=limits)
    assert await store.keys.add(key)
    assert await store.keys.get("shop") == key
    assert await store.keys.by_digest(digest("s")) == key


async def test_a_keys_limits_are_replaced_whole_and_read_back(store: Ports) -> None:
    limits = KeyLimits(budget_usd=12.5, budget_period=BudgetPeriod.WEEK, rpm=60, tpm=10_000)
    key = ApiKey("shop", Role.CLIENT, digest("s"), created_at=datetime.now(UTC), limits=limits)
    assert await store.keys.add(key)
    changed = KeyLimits(budget_usd=None, budget_period=BudgetPeriod.DAY, rpm=120, tpm=None)
    updated = await store.keys.set_limits("shop", changed)
    assert updated is not None
    assert updated.limits == changed
    assert (await store.keys.by_digest(digest("s"))) == updated
    assert await store.keys.set_limits("nobody", changed) is None


async def test_idle_lists_a_goals_open_conversations_unchanged_since_and_ends_only_those(
    store: Ports,
) -> None:
    await store.goals.add(sample_goal())
    await store.goals.add(sample_goal("other"))
    quiet = await store.conversations.create("support", {})
    busy = await store.conversations.create("support", {})
    closed = await store.conversations.create("support", {})
    await store.conversations.transition(
        closed.id,
        allowed_from=[ConversationStatus.ACTIVE],
        to=ConversationStatus.COMPLETED,
        closing=CLOSED,
    )
    await store.conversations.create("other", {})
    cutoff = datetime.now(UTC)
    await open_turn(store, busy.id, "still here")  # something happens after the cutoff
    idle = await store.conversations.idle("support", cutoff, 10)
    assert idle == [(quiet.id, ConversationStatus.ACTIVE)]
    # Changed since: never ended as idle, whatever was read before.
    refused = await store.conversations.transition(
        busy.id,
        allowed_from=[ConversationStatus.ACTIVE],
        to=ConversationStatus.COMPLETED,
        closing=CLOSED,
        idle_before=cutoff,
    )
    assert refused is None
    ended = await store.conversations.transition(
        quiet.id,
        allowed_from=[ConversationStatus.ACTIVE],
        to=ConversationStatus.COMPLETED,
        closing=CLOSED,
        idle_before=cutoff,
    )
    assert ended is not None
    assert ended.status is ConversationStatus.COMPLETED
    assert await store.conversations.idle("support", cutoff, 10) == []
