"""Endings on each store (the fake, SQLite, PostgreSQL): an end records when, the outcome
and who gave it, and the customer's messages by then, in the statement that ends it; a
judged end waits in the evaluations queue; an ended conversation is deleted with all it
holds; expired ones go in bounded batches; a goal's results agree with what was stored."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from parley.domain.models import (
    Closing,
    ConversationStatus,
    EscalationReason,
    EvaluationState,
    Outcome,
    OutcomeSource,
    Verdict,
)
from parley.llm import Role
from tests.store.helpers import Ports, open_turn, sample_goal
from tests.store.test_contract import store

__all__ = ["store"]

ACTIVE, ESCALATED = ConversationStatus.ACTIVE, ConversationStatus.ESCALATED


async def _talked(store: Ports, messages: int = 2) -> uuid.UUID:
    conversation = await store.conversations.create("support", {})
    for n in range(messages):
        await open_turn(store, conversation.id, f"question {n}")
    return conversation.id


async def _end(store: Ports, conversation_id: uuid.UUID, closing: Closing) -> None:
    ended = await store.conversations.transition(
        conversation_id,
        allowed_from=[ACTIVE, ESCALATED],
        to=ConversationStatus.COMPLETED,
        closing=closing,
    )
    assert ended is not None


async def test_an_end_records_its_outcome_who_gave_it_and_the_customers_messages(
    store: Ports,
) -> None:
    await store.goals.add(sample_goal())
    conversation_id = await _talked(store, messages=3)
    before = datetime.now(UTC)
    ended = await store.conversations.transition(
        conversation_id,
        allowed_from=[ACTIVE],
        to=ConversationStatus.COMPLETED,
        closing=Closing(Outcome.ACHIEVED, OutcomeSource.CLIENT),
    )
    assert ended is not None
    assert ended.ending is not None
    assert (ended.ending.outcome, ended.ending.source) == (Outcome.ACHIEVED, OutcomeSource.CLIENT)
    assert ended.ending.turns == 3
    assert ended.ending.ended_at >= before - timedelta(seconds=1)
    assert ended.evaluation is None
    assert not ended.judging
    loaded = await store.conversations.get(conversation_id)
    assert loaded is not None
    assert loaded.ending == ended.ending


async def test_a_customer_who_leaves_the_queue_abandons_it_unless_an_outcome_is_given(
    store: Ports,
) -> None:
    await store.goals.add(sample_goal())
    endings = {}
    for given in (None, Outcome.ACHIEVED):
        conversation_id = await _talked(store, messages=1)
        await store.conversations.transition(
            conversation_id,
            allowed_from=[ACTIVE],
            to=ESCALATED,
            reason=EscalationReason.USER_REQUEST,
        )
        await _end(store, conversation_id, Closing(given, OutcomeSource.CLIENT))
        loaded = await store.conversations.get(conversation_id)
        assert loaded is not None
        assert loaded.ending is not None
        endings[given] = loaded.ending.outcome
    assert endings == {None: Outcome.ABANDONED, Outcome.ACHIEVED: Outcome.ACHIEVED}


async def test_an_agent_ending_a_handoff_records_its_outcome_returning_it_records_none(
    store: Ports,
) -> None:
    await store.goals.add(sample_goal())
    ids = []
    for _ in range(2):
        conversation_id = await _talked(store, messages=1)
        await store.conversations.transition(
            conversation_id, allowed_from=[ACTIVE], to=ESCALATED, reason=EscalationReason.MANUAL
        )
        await store.handoffs.assign(conversation_id, "ann", holder=None, transfer=False)
        ids.append(conversation_id)
    back = await store.handoffs.resolve(ids[0], holder="ann", closing=None)
    done = await store.handoffs.resolve(
        ids[1], holder="ann", closing=Closing(Outcome.NOT_ACHIEVED, OutcomeSource.AGENT)
    )
    assert back is not None
    assert back.ending is None
    assert done is not None
    assert done.ending is not None
    assert (done.ending.outcome, done.ending.source) == (
        Outcome.NOT_ACHIEVED,
        OutcomeSource.AGENT,
    )


async def test_a_judged_end_waits_in_the_evaluations_queue_written_with_the_end(
    store: Ports,
) -> None:
    await store.goals.add(sample_goal())
    conversation_id = await _talked(store)
    await _end(store, conversation_id, Closing(None, OutcomeSource.CLIENT, judged=True))
    loaded = await store.conversations.get(conversation_id)
    assert loaded is not None
    assert loaded.evaluation is not None
    assert loaded.evaluation.state is EvaluationState.PENDING
    assert loaded.judging
    results = await store.conversations.results("support", datetime.now(UTC) - timedelta(hours=1))
    assert (results.ended, results.judging) == (0, 1)  # not final: not counted yet


async def test_only_an_ended_conversation_is_deleted_and_everything_it_holds_with_it(
    store: Ports,
) -> None:
    await store.goals.add(sample_goal())
    open_one = await _talked(store)
    ended = await _talked(store)
    await store.conversations.transition(
        ended, allowed_from=[ACTIVE], to=ESCALATED, reason=EscalationReason.MANUAL
    )
    await store.handoffs.assign(ended, "ann", holder=None, transfer=False)
    await store.handoffs.agent_message(ended, "ann", "hello from ann")
    await store.handoffs.resolve(
        ended, holder="ann", closing=Closing(None, OutcomeSource.AGENT, judged=True)
    )
    assert await store.conversations.delete(open_one) is False
    assert await store.conversations.delete(ended) is True
    assert await store.conversations.delete(ended) is False
    assert await store.conversations.get(ended) is None
    assert await store.events.conversation_events(ended, 0, 100) == []
    assert await store.conversations.get(open_one, with_messages=True) is not None
    opened = await open_turn(store, open_one, "still here")
    assert opened.question.role is Role.USER


async def test_expired_conversations_go_in_bounded_batches_the_oldest_first(
    store: Ports,
) -> None:
    await store.goals.add(sample_goal())
    ids = []
    for _ in range(5):
        conversation_id = await _talked(store, messages=1)
        await _end(store, conversation_id, Closing(None, OutcomeSource.CLIENT))
        ids.append(conversation_id)
    still_open = await _talked(store, messages=1)
    cutoff = datetime.now(UTC) + timedelta(seconds=1)
    assert await store.conversations.delete_ended_before(cutoff, 2) == 2
    assert await store.conversations.delete_ended_before(cutoff, 2) == 2
    assert await store.conversations.delete_ended_before(cutoff, 2) == 1
    assert await store.conversations.delete_ended_before(cutoff, 2) == 0
    assert [await store.conversations.get(i) for i in ids] == [None] * 5
    assert await store.conversations.get(still_open) is not None
    # Ended after the cutoff: kept.
    await _end(store, still_open, Closing(None, OutcomeSource.CLIENT))
    assert await store.conversations.delete_ended_before(cutoff - timedelta(hours=1), 10) == 0
    # A goal whose conversations are all gone can be deleted again.
    assert await store.conversations.get(still_open) is not None


async def test_a_goals_results_agree_with_the_outcomes_stored(store: Ports) -> None:
    await store.goals.add(sample_goal())
    await store.goals.add(sample_goal("sales", name="Sales"))
    since = datetime.now(UTC) - timedelta(seconds=1)
    plan = [
        (1, Outcome.ACHIEVED, False),
        (3, Outcome.ACHIEVED, False),
        (5, Outcome.ACHIEVED, True),
        (2, Outcome.NOT_ACHIEVED, False),
        (1, Outcome.ABANDONED, False),
    ]
    for messages, outcome, escalate in plan:
        conversation_id = await _talked(store, messages=messages)
        if escalate:
            await store.conversations.transition(
                conversation_id,
                allowed_from=[ACTIVE],
                to=ESCALATED,
                reason=EscalationReason.MANUAL,
            )
        await _end(store, conversation_id, Closing(outcome, OutcomeSource.CLIENT))
    other = await store.conversations.create("sales", {})
    await _end(store, other.id, Closing(Outcome.NOT_ACHIEVED, OutcomeSource.CLIENT))
    await _talked(store)  # open: not in the results

    results = await store.conversations.results("support", since)
    assert (results.ended, results.contained, results.judging) == (5, 4, 0)
    counts = {outcome: stats.count for outcome, stats in results.by_outcome.items()}
    assert counts == {
        Outcome.ACHIEVED: 3,
        Outcome.NOT_ACHIEVED: 1,
        Outcome.ABANDONED: 1,
        Outcome.UNKNOWN: 0,
    }
    achieved = results.by_outcome[Outcome.ACHIEVED]
    assert achieved.median_turns == 3
    assert achieved.median_duration_seconds is not None
    assert 0 <= achieved.median_duration_seconds < 60
    assert results.by_outcome[Outcome.NOT_ACHIEVED].median_turns == 2
    assert results.by_outcome[Outcome.UNKNOWN].median_turns is None
    assert results.success_ratio == 3 / 4
    assert results.containment == 4 / 5
    later = await store.conversations.results("support", datetime.now(UTC) + timedelta(hours=1))
    assert (later.ended, later.success_ratio, later.containment) == (0, None, None)


async def _judged_end(store: Ports, customer_says: str = "thanks") -> uuid.UUID:
    conversation = await store.conversations.create("support", {})
    await open_turn(store, conversation.id, customer_says)
    await _end(
        store, conversation.id, Closing(Outcome.ABANDONED, OutcomeSource.TIMEOUT, judged=True)
    )
    return conversation.id


async def test_each_judged_end_is_claimed_by_one_holder_until_its_lease_runs_out(
    store: Ports,
) -> None:
    await store.goals.add(sample_goal())
    ids = {await _judged_end(store) for _ in range(5)}
    now = datetime.now(UTC) + timedelta(seconds=1)
    claims = await asyncio.gather(*(store.evaluations.claim(now, 60, 10) for _ in range(3)))
    claimed = [job.conversation_id for jobs in claims for job in jobs]
    assert sorted(claimed) == sorted(ids)  # each once, whichever claim took it
    assert {job.attempts for jobs in claims for job in jobs} == {1}
    assert await store.evaluations.claim(now + timedelta(seconds=30), 60, 10) == []
    again = await store.evaluations.claim(now + timedelta(seconds=61), 60, 10)
    assert {job.conversation_id for job in again} == ids
    assert {job.attempts for job in again} == {2}
    assert await store.evaluations.pending() == 5


async def test_a_verdict_becomes_the_outcome_once_and_a_give_up_keeps_the_ends(
    store: Ports,
) -> None:
    await store.goals.add(sample_goal())
    graded, failed = await _judged_end(store), await _judged_end(store)
    now = datetime.now(UTC) + timedelta(seconds=1)
    await store.evaluations.claim(now, 60, 10)
    verdict = Verdict(Outcome.ACHIEVED, 0.9, "Answered.")
    judged = await store.evaluations.judged(graded, verdict, "judge-model", now)
    assert judged is not None
    assert judged.ending is not None
    assert (judged.ending.outcome, judged.ending.source) == (Outcome.ACHIEVED, OutcomeSource.JUDGE)
    assert judged.evaluation is not None
    assert (judged.evaluation.state, judged.evaluation.score) == (EvaluationState.DONE, 0.9)
    assert await store.evaluations.judged(graded, verdict, "judge-model", now) is None
    await store.evaluations.retry(failed, now + timedelta(minutes=5), "llm_timeout")
    assert await store.evaluations.claim(now + timedelta(minutes=2), 60, 10) == []
    given_up = await store.evaluations.give_up(failed, "malformed_verdict: not JSON", now)
    assert given_up is not None
    assert given_up.evaluation is not None
    assert given_up.evaluation.state is EvaluationState.FAILED
    assert given_up.ending is not None
    assert given_up.ending.outcome is Outcome.ABANDONED  # as its end left it
    assert await store.evaluations.give_up(failed, "again", now) is None
    assert await store.evaluations.pending() == 0
    loaded = await store.conversations.get(graded)
    assert loaded is not None
    assert loaded.evaluation is not None
    assert loaded.evaluation.explanation == "Answered."
    results = await store.conversations.results("support", now - timedelta(hours=1))
    assert (results.ended, results.judging) == (2, 0)
    assert results.by_outcome[Outcome.ACHIEVED].count == 1
