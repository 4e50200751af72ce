"""The judge, on the in-memory store with a scripted LLM and a clock the test moves: a
verdict becomes the outcome and is told once; malformed answers and timeouts are retried
with backoff, then given up (the end's outcome stays); a provider that is down for an hour
is waited out and the queue drains after; at most ``concurrency`` are graded at once; the
sample is the same answer every time."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from parley.domain.conversations import ConversationService
from parley.domain.events import EventFanout
from parley.domain.goals import GoalService
from parley.domain.judge import (
    JudgeService,
    JudgeSettings,
    MalformedVerdictError,
    parse_verdict,
)
from parley.domain.models import (
    Conversation,
    EvaluationState,
    JudgePolicy,
    Outcome,
    OutcomeSource,
)
from parley.domain.outcomes import judges
from parley.llm import LLMError, LLMErrorKind, Operation
from parley.testing import MemoryStore
from tests.store.helpers import open_turn, sample_goal
from tests.support.clock import Clock
from tests.support.providers import ScriptedProvider

ACHIEVED = json.dumps({"label": "achieved", "score": 0.8, "explanation": "Answered."})
CRITERIA = "The customer's question is answered."


class Judged:
    """The verdicts the judge tells the events (the other events pass by)."""

    def __init__(self) -> None:
        self.judged: list[Conversation] = []

    def conversation_judged(self, conversation: Conversation) -> None:
        self.judged.append(conversation)

    def __getattr__(self, event: str) -> Any:
        return lambda *args: None


class Setup:
    def __init__(self, steps: list[LLMError | str], *, concurrency: int = 4) -> None:
        self.store = MemoryStore()
        self.llm = ScriptedProvider(steps)
        self.told = Judged()
        events = EventFanout()
        events.add(self.told)
        goals = GoalService(self.store.goals)
        self.conversations = ConversationService(self.store.conversations, goals, events)
        self.clock = Clock()
        self.judge = JudgeService(
            self.store.evaluations,
            self.store.conversations,
            goals,
            self.llm,
            events,
            JudgeSettings(
                model="judge-model", concurrency=concurrency, max_attempts=3, backoff_seconds=10
            ),
            clock=self.clock,
        )

    async def ended(self, says: str = "where is my order?") -> uuid.UUID:
        conversation = await self.conversations.create("support", {})
        await open_turn(self.store, conversation.id, says)
        await self.conversations.close(conversation.id)
        return conversation.id

    async def current(self, conversation_id: uuid.UUID) -> Conversation:
        conversation = await self.store.conversations.get(conversation_id)
        assert conversation is not None
        return conversation


async def _judging_goal(setup: Setup) -> None:
    goal = sample_goal(success_criteria=CRITERIA, judge=JudgePolicy(enabled=True))
    await setup.store.goals.add(goal)


async def test_a_verdict_becomes_the_outcome_and_is_told_once() -> None:
    setup = Setup([ACHIEVED])
    await _judging_goal(setup)
    conversation_id = await setup.ended()
    closed = await setup.current(conversation_id)
    assert closed.judging
    assert await setup.judge.run_once() == 1
    judged = await setup.current(conversation_id)
    assert judged.ending is not None
    assert (judged.ending.outcome, judged.ending.source) == (Outcome.ACHIEVED, OutcomeSource.JUDGE)
    assert judged.evaluation is not None
    assert (judged.evaluation.score, judged.evaluation.model) == (0.8, "judge-model")
    assert [c.id for c in setup.told.judged] == [conversation_id]
    (request,) = setup.llm.calls
    assert (request.operation, request.json_output, request.model) == (
        Operation.JUDGE,
        True,
        "judge-model",
    )
    assert CRITERIA in request.messages[0].content
    assert "customer: where is my order?" in request.messages[1].content
    assert await setup.judge.run_once() == 0


async def test_malformed_answers_are_retried_with_backoff_then_given_up() -> None:
    timeout = LLMError(LLMErrorKind.TIMEOUT, "slow")
    setup = Setup(["not json", timeout, '{"label": "maybe", "score": 1, "explanation": ""}'])
    await _judging_goal(setup)
    conversation_id = await setup.ended()
    assert await setup.judge.run_once() == 1
    assert await setup.judge.run_once() == 0  # backing off
    for wait in (10, 20):
        setup.clock.advance(seconds=wait)
        assert await setup.judge.run_once() == 1
    failed = await setup.current(conversation_id)
    assert failed.evaluation is not None
    assert failed.evaluation.state is EvaluationState.FAILED
    assert failed.evaluation.last_error is not None
    assert failed.evaluation.last_error.startswith("malformed_verdict")
    assert failed.ending is not None
    assert (failed.ending.outcome, failed.ending.source) == (Outcome.UNKNOWN, OutcomeSource.CLIENT)
    assert [c.id for c in setup.told.judged] == [conversation_id]  # counted, as an error
    assert len(setup.llm.calls) == 3


async def test_a_provider_down_for_an_hour_is_waited_out_and_the_queue_drains_after() -> None:
    down = LLMError(LLMErrorKind.CONNECTION, "refused")
    setup = Setup([down] * 1000)
    await _judging_goal(setup)
    ids = [await setup.ended() for _ in range(3)]
    for _ in range(60):  # an hour, a minute at a time
        await setup.judge.run_once()
        setup.clock.advance(minutes=1)
    assert [(await setup.current(i)).judging for i in ids] == [True] * 3  # not given up
    setup.llm.steps.clear()
    setup.llm.steps.extend([ACHIEVED] * 3)
    setup.clock.advance(minutes=10)
    assert await setup.judge.run_once() == 3
    assert {(await setup.current(i)).outcome for i in ids} == {Outcome.ACHIEVED}


async def test_at_most_concurrency_are_graded_in_one_round() -> None:
    setup = Setup([ACHIEVED] * 5, concurrency=2)
    await _judging_goal(setup)
    for _ in range(5):
        await setup.ended()
    assert [await setup.judge.run_once() for _ in range(4)] == [2, 2, 1, 0]


async def test_a_conversation_deleted_before_its_verdict_is_skipped() -> None:
    setup = Setup([ACHIEVED])
    await _judging_goal(setup)
    conversation_id = await setup.ended()
    await setup.conversations.delete(conversation_id)
    assert await setup.judge.run_once() == 0
    assert setup.llm.calls == []


def test_only_a_well_formed_verdict_is_taken() -> None:
    verdict = parse_verdict(ACHIEVED)
    assert (verdict.label, verdict.score) == (Outcome.ACHIEVED, 0.8)
    for bad in (
        "prose",
        "[1, 2]",
        '{"label": "abandoned", "score": 0.5, "explanation": "x"}',
        '{"label": "achieved", "score": 2, "explanation": "x"}',
        '{"label": "achieved", "score": true, "explanation": "x"}',
        '{"label": "achieved", "score": 0.5}',
    ):
        with pytest.raises(MalformedVerdictError):
            parse_verdict(bad)


def test_the_sample_is_the_same_answer_every_time_and_follows_the_rate() -> None:
    ids = [uuid.UUID(int=n * 7919) for n in range(2000)]
    goal = sample_goal(success_criteria=CRITERIA, judge=JudgePolicy(enabled=True, sample_rate=0.3))
    picked = [judges(goal, i) for i in ids]
    assert picked == [judges(goal, i) for i in ids]
    assert 0.25 < sum(picked) / len(ids) < 0.35
    never = sample_goal(success_criteria=CRITERIA, judge=JudgePolicy(enabled=True, sample_rate=0))
    always = sample_goal(success_criteria=CRITERIA, judge=JudgePolicy(enabled=True))
    off = sample_goal(success_criteria=CRITERIA)
    assert not any(judges(never, i) for i in ids)
    assert all(judges(always, i) for i in ids)
    assert not any(judges(off, i) for i in ids)
