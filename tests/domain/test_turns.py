"""Every branch of a turn, on the domain's ports with in-memory fakes: the events each
channel encodes, and what ends up stored."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from parley import defaults
from parley.domain.chat import ChatLimits, ChatService
from parley.domain.conversations import ConversationService
from parley.domain.errors import (
    ContentTooLargeError,
    ConversationClosedError,
    ConversationEscalatedError,
    ReplyFailedError,
    ShuttingDownError,
    TurnCrashedError,
    TurnInterruptedError,
)
from parley.domain.events import EventFanout
from parley.domain.goals import GoalService
from parley.domain.models import (
    EscalationPolicy,
    EscalationReason,
    Goal,
    Message,
    MessageStatus,
)
from parley.domain.ports import OpenedTurn
from parley.domain.turns import Accepted, Done, Escalated, Failed, RunningTurn, Token, TurnEvent
from parley.llm import ChatRequest, LLMError, LLMErrorKind, StreamChunk, Usage
from parley.testing import MemoryConversations, MemoryGoals
from tests.support.providers import ScriptedProvider


def _goal(**policy: object) -> Goal:
    now = datetime.now(UTC)
    escalation = EscalationPolicy(**{"max_turns": 3, "trigger_phrases": ("human",), **policy})  # type: ignore[arg-type]
    return Goal("support", "Support", "Help.", None, escalation, now, now)


class HeldStream:
    """An LLM that streams ``before`` tokens, then waits until released (or stopped)."""

    def __init__(self, before: int = 2, after: int = 2) -> None:
        self.before = before
        self.after = after
        self.release = asyncio.Event()
        self.holding = asyncio.Event()
        self.stopped = False
        self.streams = 0  # calls made

    async def complete(self, request: ChatRequest) -> object:
        self.holding.set()
        await self.release.wait()
        raise AssertionError("not released in these tests")

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        self.streams += 1
        try:
            for index in range(self.before):
                yield StreamChunk(content=f"t{index} ")
            self.holding.set()
            await self.release.wait()
            for index in range(self.before, self.before + self.after):
                yield StreamChunk(content=f"t{index} ")
            yield StreamChunk(usage=Usage(10, self.before + self.after, 14))
        except asyncio.CancelledError:
            self.stopped = True
            raise


class Harness:
    def __init__(
        self,
        llm: object = None,
        *,
        answer_lease_seconds: float = defaults.ANSWER_LEASE_SECONDS,
        **policy: object,
    ) -> None:
        self.goals = MemoryGoals(_goal(**policy))
        self.store = MemoryConversations(self.goals, answer_lease_seconds=answer_lease_seconds)
        self.llm = llm or ScriptedProvider()
        events = EventFanout()
        self.conversations = ConversationService(self.store, GoalService(self.goals), events)
        self.chat = ChatService(
            self.store,
            self.llm,  # type: ignore[arg-type]
            events,
            ChatLimits(max_message_chars=100),
        )

    async def conversation(self) -> uuid.UUID:
        return (await self.conversations.create("support", {})).id

    async def turn(
        self, conversation_id: uuid.UUID, content: str, *, streaming: bool = True, **options: Any
    ) -> list[TurnEvent]:
        turn = await self.chat.start_turn(conversation_id, content, streaming=streaming, **options)
        async with asyncio.timeout(10):
            return [event async for event in turn.events()]

    def stored(self, conversation_id: uuid.UUID) -> list[Message]:
        return self.store.messages[conversation_id]

    async def left_while_held(self, llm: HeldStream) -> uuid.UUID:
        """A streamed turn whose client leaves while ``llm`` holds; returns its conversation."""
        conversation_id = await self.conversation()
        turn = await self.chat.start_turn(conversation_id, "hi", streaming=True)
        await asyncio.wait_for(llm.holding.wait(), 10)
        turn.abandon()
        await asyncio.wait_for(turn.wait(), 10)
        return conversation_id


def _kinds(events: list[TurnEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


async def test_a_streamed_turn_is_accepted_tokens_done() -> None:
    """The stored user message comes first, then each token, then the stored reply."""
    harness = Harness(ScriptedProvider(["hello there friend"]))
    conversation_id = await harness.conversation()
    events = await harness.turn(conversation_id, "hi")
    assert _kinds(events) == ["Accepted", "Token", "Token", "Token", "Done"]
    accepted, done = events[0], events[-1]
    assert isinstance(accepted, Accepted)
    assert isinstance(done, Done)
    assert done.message.content == "hello there friend"
    assert done.message.reply_to == accepted.message.id
    assert done.message.usage == Usage(5, 3, 8)
    assert [m.content for m in harness.stored(conversation_id)] == ["hi", "hello there friend"]


async def test_a_whole_turn_is_accepted_then_done() -> None:
    harness = Harness(ScriptedProvider(["whole reply"]))
    conversation_id = await harness.conversation()
    events = await harness.turn(conversation_id, "hi", streaming=False)
    assert _kinds(events) == ["Accepted", "Done"]


async def test_a_trigger_phrase_escalates_without_an_llm_call() -> None:
    harness = Harness()
    conversation_id = await harness.conversation()
    events = await harness.turn(conversation_id, "a HUMAN please")
    assert _kinds(events) == ["Accepted", "Escalated"]
    assert isinstance(events[1], Escalated)
    assert events[1].reason is EscalationReason.TRIGGER_PHRASE
    assert harness.llm.calls == []  # type: ignore[attr-defined]
    held = await harness.turn(conversation_id, "hello?")  # for the human agent now
    assert _kinds(held) == ["Accepted", "HeldForAgent"]
    assert harness.llm.calls == []  # type: ignore[attr-defined]
    assert [m.content for m in harness.stored(conversation_id)][-1] == "hello?"


async def test_the_turn_after_max_turns_escalates() -> None:
    harness = Harness()
    conversation_id = await harness.conversation()
    for index in range(3):
        assert _kinds(await harness.turn(conversation_id, f"m{index}"))[-1] == "Done"
    events = await harness.turn(conversation_id, "one more")
    assert isinstance(events[-1], Escalated)
    assert events[-1].reason is EscalationReason.MAX_TURNS


async def test_an_llm_failure_fails_the_turn_and_keeps_the_message() -> None:
    harness = Harness(ScriptedProvider([LLMError(LLMErrorKind.TIMEOUT, "slow")]))
    conversation_id = await harness.conversation()
    events = await harness.turn(conversation_id, "hi")
    assert _kinds(events) == ["Accepted", "Failed"]
    failed = events[1]
    assert isinstance(failed, Failed)
    assert isinstance(failed.error, ReplyFailedError)
    assert (failed.error.code, failed.error.escalated) == ("llm_timeout", False)
    assert [m.role.value for m in harness.stored(conversation_id)] == ["user"]


async def test_consecutive_failures_escalate_at_the_limit_and_a_success_resets() -> None:
    down = LLMError(LLMErrorKind.SERVER_ERROR, "down")
    harness = Harness(ScriptedProvider([down, "ok", down, down]), max_llm_failures=2, max_turns=10)
    conversation_id = await harness.conversation()
    outcomes = [_kinds(await harness.turn(conversation_id, f"m{i}"))[1:] for i in range(4)]
    assert outcomes == [
        ["Failed"],
        ["Token", "Done"],
        ["Failed"],
        ["Failed", "Escalated"],
    ]


async def test_failures_never_escalate_when_the_policy_says_so() -> None:
    down = LLMError(LLMErrorKind.SERVER_ERROR, "down")
    harness = Harness(ScriptedProvider([down] * 3), max_llm_failures=1, on_llm_failure=False)
    conversation_id = await harness.conversation()
    for index in range(3):
        assert _kinds(await harness.turn(conversation_id, f"m{index}")) == ["Accepted", "Failed"]


async def test_a_repeated_key_tells_the_stored_turn_again_and_stores_nothing() -> None:
    harness = Harness(ScriptedProvider(["first answer"]))
    conversation_id = await harness.conversation()
    first = await harness.turn(conversation_id, "hi", idempotency_key="k")
    again = await harness.turn(conversation_id, "hi", idempotency_key="k")
    assert _kinds(again) == ["Accepted", "Token", "Done"]
    # The same stored messages; the conversation as it is now (the reply moved it on).
    for retold, told in ((again[0], first[0]), (again[-1], first[-1])):
        assert isinstance(retold, Accepted | Done)
        assert isinstance(told, Accepted | Done)
        assert retold.message == told.message
    assert len(harness.stored(conversation_id)) == 2
    assert len(harness.llm.calls) == 1  # type: ignore[attr-defined]


async def test_a_repeated_key_whose_turn_failed_asks_the_llm_again() -> None:
    """The user message is not stored twice; the missing reply is produced now."""
    down = LLMError(LLMErrorKind.SERVER_ERROR, "down")
    harness = Harness(ScriptedProvider([down, "second try"]))
    conversation_id = await harness.conversation()
    assert _kinds(await harness.turn(conversation_id, "hi", idempotency_key="k"))[-1] == "Failed"
    again = await harness.turn(conversation_id, "hi", idempotency_key="k")
    assert _kinds(again)[-1] == "Done"
    assert [m.content for m in harness.stored(conversation_id)] == ["hi", "second try"]


@pytest.mark.parametrize("streaming", [True, False])
async def test_a_keyed_retry_after_the_conversation_closed_is_refused_as_closed(
    streaming: bool,
) -> None:
    """The turn failed, the conversation was closed, the client retries with its key: the
    same conflict as any message to a closed conversation, before any turn starts."""
    down = LLMError(LLMErrorKind.SERVER_ERROR, "down")
    harness = Harness(ScriptedProvider([down, "never asked"]))
    conversation_id = await harness.conversation()
    turn = await harness.turn(conversation_id, "hi", streaming=streaming, idempotency_key="k")
    assert _kinds(turn)[-1] == "Failed"
    await harness.conversations.close(conversation_id)
    with pytest.raises(ConversationClosedError):
        await harness.turn(conversation_id, "hi", streaming=streaming, idempotency_key="k")
    assert len(harness.llm.calls) == 1  # type: ignore[attr-defined]


async def test_a_keyed_retry_after_the_conversation_escalated_is_refused_as_escalated() -> None:
    down = LLMError(LLMErrorKind.SERVER_ERROR, "down")
    harness = Harness(ScriptedProvider([down]))
    conversation_id = await harness.conversation()
    assert _kinds(await harness.turn(conversation_id, "hi", idempotency_key="k"))[-1] == "Failed"
    await harness.conversations.escalate(conversation_id, EscalationReason.MANUAL)
    with pytest.raises(ConversationEscalatedError):
        await harness.turn(conversation_id, "hi", idempotency_key="k")


async def test_a_keyed_retry_of_the_message_that_escalated_tells_the_escalation_again() -> None:
    harness = Harness()
    conversation_id = await harness.conversation()
    first = await harness.turn(conversation_id, "a human please", idempotency_key="k")
    again = await harness.turn(conversation_id, "a human please", idempotency_key="k")
    assert _kinds(first) == _kinds(again) == ["Accepted", "Escalated"]
    assert isinstance(again[-1], Escalated)
    assert isinstance(first[-1], Escalated)
    assert again[-1].reason is first[-1].reason is EscalationReason.TRIGGER_PHRASE
    assert len(harness.stored(conversation_id)) == 1


async def test_a_domain_error_while_a_turn_plays_is_a_failed_event_not_a_crash() -> None:
    """A typed error raised inside the turn's task (here: storing the reply) reaches the
    client as itself; only a bug is a crash."""
    harness = Harness(ScriptedProvider(["reply"]))
    conversation_id = await harness.conversation()
    harness.store.fail_next_write = ConversationClosedError()
    with capture_logs() as logs:
        events = await harness.turn(conversation_id, "hi")
    failed = events[-1]
    assert isinstance(failed, Failed)
    assert isinstance(failed.error, ConversationClosedError)
    assert not [log for log in logs if log["event"] == "turn_crashed"]


async def test_a_client_leaving_mid_stream_stops_the_llm_and_stores_an_interrupted_reply() -> None:
    llm = HeldStream(before=2)
    harness = Harness(llm)
    conversation_id = await harness.left_while_held(llm)
    assert llm.stopped
    reply = harness.stored(conversation_id)[-1]
    assert (reply.content, reply.status) == ("t0 t1 ", MessageStatus.INTERRUPTED)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 2
    assert reply.usage.prompt_tokens > 0


async def test_a_client_leaving_before_the_first_token_stores_no_reply() -> None:
    llm = HeldStream(before=0)
    harness = Harness(llm)
    conversation_id = await harness.left_while_held(llm)
    assert [m.role.value for m in harness.stored(conversation_id)] == ["user"]


async def test_a_client_leaving_after_the_llm_finished_still_stores_the_whole_reply() -> None:
    """Leaving can stop the LLM call, never the write that follows it."""
    harness = Harness(ScriptedProvider(["all of it"]))
    conversation_id = await harness.conversation()
    turn = await harness.chat.start_turn(conversation_id, "hi", streaming=True)
    events = turn.events()
    assert isinstance(await anext(events), Accepted)
    assert isinstance(await anext(events), Token)
    turn.abandon()
    await asyncio.wait_for(turn.wait(), 10)
    reply = harness.stored(conversation_id)[-1]
    assert (reply.content, reply.status) == ("all of it", MessageStatus.COMPLETE)


async def test_shutdown_lets_turns_finish_within_the_grace_then_cuts_them_with_an_error() -> None:
    llm = HeldStream(before=1)
    harness = Harness(llm)
    conversation_id = await harness.conversation()
    turn = await harness.chat.start_turn(conversation_id, "hi", streaming=True)
    await asyncio.wait_for(llm.holding.wait(), 10)
    await harness.chat.in_flight.drain(grace_seconds=0.05)
    events = [event async for event in turn.events()]
    assert _kinds(events) == ["Accepted", "Token", "Failed"]
    assert isinstance(events[-1], Failed)
    assert isinstance(events[-1].error, TurnInterruptedError)
    assert harness.stored(conversation_id)[-1].status is MessageStatus.INTERRUPTED
    with pytest.raises(ShuttingDownError):
        await harness.chat.start_turn(conversation_id, "more", streaming=True)


async def test_shutdown_waits_for_a_turn_that_finishes_within_the_grace() -> None:
    llm = HeldStream(before=1)
    harness = Harness(llm)
    conversation_id = await harness.conversation()
    turn = await harness.chat.start_turn(conversation_id, "hi", streaming=False)
    await asyncio.wait_for(llm.holding.wait(), 10)
    streamed = Harness(HeldStream())  # a second, unrelated service is not affected
    assert not streamed.chat.in_flight.closing
    llm.release.set()
    harness_turn = await harness.chat.start_turn(conversation_id, "two", streaming=True)
    await harness.chat.in_flight.drain(grace_seconds=10)
    assert turn.done
    assert harness_turn.done
    assert harness.stored(conversation_id)[-1].status is MessageStatus.COMPLETE


async def test_content_over_the_limit_is_refused_before_anything_is_stored() -> None:
    harness = Harness()
    conversation_id = await harness.conversation()
    with pytest.raises(ContentTooLargeError):
        await harness.chat.start_turn(conversation_id, "x" * 101, streaming=True)
    assert harness.stored(conversation_id) == []


async def test_a_crash_while_storing_the_reply_ends_the_turn_with_an_error_event() -> None:
    """A bug (not a domain error) is the one thing logged as a crash, with its traceback."""
    harness = Harness(ScriptedProvider(["fine"]))
    conversation_id = await harness.conversation()
    harness.store.fail_next_write = RuntimeError("disk on fire")
    with capture_logs() as logs:
        events = await harness.turn(conversation_id, "hi")
    assert [log["event"] for log in logs] == ["turn_crashed"]
    assert isinstance(events[-1], Failed)
    assert isinstance(events[-1].error, TurnCrashedError)


async def test_concurrent_retries_of_one_keyed_turn_make_one_llm_call() -> None:
    """Ten requests with one Idempotency-Key at once stored one turn but asked the LLM ten
    times: a retry that finds its turn in flight waits for it and tells its reply."""
    llm = HeldStream(before=1, after=1)
    harness = Harness(llm)
    conversation_id = await harness.conversation()
    first = await harness.chat.start_turn(
        conversation_id, "hi", streaming=True, idempotency_key="k"
    )
    await asyncio.wait_for(llm.holding.wait(), 10)
    retries = [
        asyncio.ensure_future(harness.turn(conversation_id, "hi", idempotency_key="k"))
        for _ in range(9)
    ]
    await asyncio.sleep(0)  # every retry is opened, and waits on the first
    llm.release.set()
    told = await asyncio.gather(_all(first), *retries)
    replies = {events[-1].message.id for events in told if isinstance(events[-1], Done)}
    assert len(replies) == 1
    assert all(_kinds(events)[-1] == "Done" for events in told)
    assert llm.streams == 1
    assert len(harness.stored(conversation_id)) == 2


async def _all(turn: RunningTurn) -> list[TurnEvent]:
    async with asyncio.timeout(10):
        return [event async for event in turn.events()]


def _read_three_times(harness: Harness) -> asyncio.Event:
    """Set once the store has opened a turn three times more."""
    reads = 0
    read_again = asyncio.Event()
    open_turn = harness.store.open_turn

    async def counted(*args: Any, **kwargs: Any) -> OpenedTurn:
        nonlocal reads
        reads += 1
        if reads >= 3:
            read_again.set()
        return await open_turn(*args, **kwargs)

    harness.store.open_turn = counted  # type: ignore[method-assign]
    return read_again


def _replica(harness: Harness, llm: object) -> ChatService:
    """Another replica: its own ChatService and LLM, on the same store."""
    return ChatService(harness.store, llm, EventFanout(), ChatLimits(max_message_chars=100))  # type: ignore[arg-type]


async def test_a_retry_on_another_replica_waits_for_the_reply_instead_of_asking_again() -> None:
    """Concurrent retries with one key made one LLM call per replica: a retry that finds its
    turn being answered on another replica (the answer lease) waits for that reply."""
    llm = HeldStream(before=1, after=1)
    harness = Harness(llm)
    other_llm = ScriptedProvider(["a second answer"])
    other = _replica(harness, other_llm)
    conversation_id = await harness.conversation()
    first = await harness.chat.start_turn(
        conversation_id, "hi", streaming=True, idempotency_key="k"
    )
    await asyncio.wait_for(llm.holding.wait(), 10)
    read_again = _read_three_times(harness)  # a waiting retry reads the store again
    retry = asyncio.ensure_future(
        other.start_turn(conversation_id, "hi", streaming=True, idempotency_key="k")
    )
    await asyncio.wait_for(read_again.wait(), 10)
    assert not retry.done()
    llm.release.set()
    told = await asyncio.gather(_all(first), _all(await retry))
    assert _kinds(told[1])[-1] == "Done"
    assert isinstance(told[0][-1], Done)
    assert isinstance(told[1][-1], Done)
    assert told[1][-1].message.id == told[0][-1].message.id
    assert other_llm.calls == []
    assert llm.streams == 1


async def test_a_turn_renews_its_answer_lease_while_the_llm_answers() -> None:
    """An LLM call that outlasts the lease: the turn renews it, so a retry on another
    replica still waits for that reply instead of asking the LLM a second time."""
    llm = HeldStream(before=1, after=1)
    harness = Harness(llm, answer_lease_seconds=0.3)
    other_llm = ScriptedProvider(["a second answer"])
    other = _replica(harness, other_llm)
    conversation_id = await harness.conversation()
    first = await harness.chat.start_turn(
        conversation_id, "hi", streaming=True, idempotency_key="k"
    )
    await asyncio.wait_for(llm.holding.wait(), 10)
    (taken,) = harness.store.leases.values()
    # The condition is the time itself: past the lease as first taken.
    await asyncio.sleep((taken - datetime.now(UTC)).total_seconds() + 0.2)
    read_again = _read_three_times(harness)  # a waiting retry reads the store again
    retry = asyncio.ensure_future(
        other.start_turn(conversation_id, "hi", streaming=True, idempotency_key="k")
    )
    await asyncio.wait_for(read_again.wait(), 10)
    llm.release.set()
    told = await asyncio.gather(_all(first), _all(await retry))
    assert isinstance(told[1][-1], Done)
    assert isinstance(told[0][-1], Done)
    assert told[1][-1].message.id == told[0][-1].message.id
    assert other_llm.calls == []


async def test_a_retry_answers_once_the_lease_of_a_replica_that_died_runs_out() -> None:
    """A replica killed mid-answer renews nothing: its retry waits one lease at most (with
    a 90 s lease and no renewal, retries after kill -9 hung for 90 s)."""
    harness = Harness(ScriptedProvider(["at last"]), answer_lease_seconds=0.3)
    conversation_id = await harness.conversation()
    await harness.store.open_turn(  # the dead replica stored the message, then died
        conversation_id,
        "hi",
        escalate_when=lambda goal, turns: None,
        history_limit=10,
        idempotency_key="k",
    )
    async with asyncio.timeout(10):
        retried = await harness.turn(conversation_id, "hi", idempotency_key="k")
    assert isinstance(retried[-1], Done)
    assert retried[-1].message.content == "at last"


async def test_a_retry_on_another_replica_asks_at_once_when_the_first_attempt_failed() -> None:
    """The failed turn ends its lease: the retry does not wait for it to run out."""
    harness = Harness(ScriptedProvider([LLMError(LLMErrorKind.SERVER_ERROR, "down")]))
    other_llm = ScriptedProvider(["better now"])
    other = _replica(harness, other_llm)
    conversation_id = await harness.conversation()
    failed = await harness.turn(conversation_id, "hi", idempotency_key="k")
    assert isinstance(failed[-1], Failed)
    async with asyncio.timeout(5):  # far below the lease: it was released
        retried = await _all(
            await other.start_turn(conversation_id, "hi", streaming=True, idempotency_key="k")
        )
    assert isinstance(retried[-1], Done)
    assert retried[-1].message.content == "better now"
    assert len(other_llm.calls) == 1


async def test_a_retry_whose_first_attempt_was_left_with_nothing_asks_at_once() -> None:
    """A client that left before the first token: nothing stored, the lease released."""
    llm = HeldStream(before=0, after=1)
    harness = Harness(llm)
    other_llm = ScriptedProvider(["here"])
    other = _replica(harness, other_llm)
    conversation_id = await harness.conversation()
    first = await harness.chat.start_turn(
        conversation_id, "hi", streaming=True, idempotency_key="k"
    )
    await asyncio.wait_for(llm.holding.wait(), 10)
    first.abandon()
    await _all(first)
    async with asyncio.timeout(5):
        retried = await _all(
            await other.start_turn(conversation_id, "hi", streaming=True, idempotency_key="k")
        )
    assert isinstance(retried[-1], Done)
    assert len(other_llm.calls) == 1
