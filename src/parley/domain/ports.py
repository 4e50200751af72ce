"""What the domain needs from the outside, as small protocols: ``parley.store`` and the
LLM gateway implement them, ``app.py`` wires them, and unit tests use in-memory fakes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Protocol

from parley.domain.errors import BudgetExceededError
from parley.domain.models import (
    NANOS_PER_USD,
    OPEN_HANDOFF,
    Closing,
    Conversation,
    ConversationStatus,
    EscalationReason,
    Goal,
    HandoffState,
    JudgeJob,
    LiveEvent,
    Message,
    MessageStatus,
    Page,
    Verdict,
)
from parley.llm.types import ChatMessage, ChatRequest, Completion, StreamChunk, Usage

if TYPE_CHECKING:
    from parley.domain.keys import ApiKey, KeyLimits
    from parley.domain.outcomes import GoalResults

# Decides, inside the transaction that stores a user message, whether the conversation
# escalates instead of replying: (goal, the conversation with that message) -> reason.
EscalationRule = Callable[[Goal, Conversation], EscalationReason | None]


@dataclass(frozen=True, slots=True)
class OpenedTurn:
    """A stored user message (or the one its idempotency key names) and what answering needs."""

    conversation: Conversation  # as it is after the message
    goal: Goal
    question: Message
    # The latest messages up to and including ``question``, as the LLM is sent them.
    history: tuple[ChatMessage, ...]
    # The policy escalated on this message (a repeated turn: on the message its key names).
    escalation: EscalationReason | None = None
    reply: Message | None = None  # a repeated turn whose reply is already stored
    repeated: bool = False
    # A keyed turn: until when it is taken as being answered (by this call, or, for a
    # repeated turn with no reply yet, by whoever opened it); None once that has ended.
    answering_until: datetime | None = None
    # The conversation is in a handoff: the message waits for the human agent.
    held: bool = False


@dataclass(frozen=True, slots=True)
class SpendCap:
    """A key's budget for its current period, checked inside the transaction that opens
    the key's turn: what the key spent is read there, with no round trip of its own."""

    key_name: str
    since: date  # the period's first UTC day
    limit_nanos: int
    resets_at: datetime

    def check(self, spent_nanos: int, now: datetime) -> None:
        """Raise ``BudgetExceededError`` (rolling the transaction back) once it is spent."""
        if spent_nanos >= self.limit_nanos:
            raise BudgetExceededError(self.limit_nanos / NANOS_PER_USD, self.resets_at, now)


def held_for_agent(conversation: Conversation, message_at: datetime) -> bool:
    """Whether a user message stored at ``message_at`` went to the human agent: the
    conversation's handoff is open and began before it."""
    handoff = conversation.handoff
    return (
        handoff is not None
        and handoff.state in OPEN_HANDOFF
        and conversation.status is ConversationStatus.ESCALATED
        and message_at > handoff.escalated_at
    )


def escalated_by(conversation: Conversation, message_at: datetime) -> EscalationReason | None:
    """The escalation that the user message stored at ``message_at`` caused, if any: the
    policy escalates in the transaction that stores the message, at the message's time."""
    escalation = conversation.escalation
    if escalation is not None and escalation.created_at == message_at:
        return escalation.reason
    return None


@dataclass(frozen=True, slots=True)
class ReplyDraft:
    content: str
    model: str
    usage: Usage | None
    status: MessageStatus = MessageStatus.COMPLETE
    # What the reply cost (nano-dollars), and the key it is charged to: stored in the
    # reply's transaction, on the conversation and the key's spend of the day.
    cost_nanos: int = 0
    payer: str | None = None


class GoalStore(Protocol):
    async def add(self, goal: Goal) -> Goal: ...

    async def get(self, goal_id: str) -> Goal | None: ...

    async def all(self) -> list[Goal]: ...

    async def oldest_ids(self, limit: int) -> list[str]:
        """The ids of the first ``limit`` goals created (the same list on every replica)."""
        ...

    async def replace(self, goal: Goal) -> Goal | None: ...

    async def delete(self, goal_id: str) -> bool: ...


class ConversationStore(Protocol):
    async def create(
        self, goal_id: str, metadata: dict[str, Any], owner: str | None = None
    ) -> Conversation: ...

    async def get(
        self,
        conversation_id: uuid.UUID,
        *,
        with_messages: bool = False,
        messages_limit: int | None = None,
        messages_before: int | None = None,
    ) -> Conversation | None:
        """With messages: all of them, or the latest ``messages_limit`` with a ``seq``
        below ``messages_before``; oldest first either way."""
        ...

    async def page(
        self,
        *,
        goal_id: str | None = None,
        status: ConversationStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> Page:
        """Newest first; with an ``owner``, only the conversations it created."""
        ...

    async def transition(
        self,
        conversation_id: uuid.UUID,
        *,
        allowed_from: Sequence[ConversationStatus],
        to: ConversationStatus,
        reason: EscalationReason | None = None,
        note: str | None = None,
        idle_before: datetime | None = None,
        closing: Closing | None = None,
    ) -> Conversation | None:
        """Move to ``to`` only from a status in ``allowed_from`` (and, with
        ``idle_before``, only if unchanged since then); ``None`` if not allowed. Ending
        it (completed) records its ``closing``, and queues it for the judge if asked."""
        ...

    async def delete(self, conversation_id: uuid.UUID) -> bool:
        """Delete an ended conversation with its messages, events and evaluation; False
        if it is not (or no longer) an ended one."""
        ...

    async def delete_ended_before(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` of the conversations that ended before ``before``, the
        oldest first; how many. Two callers at once never delete the same ones."""
        ...

    async def results(self, goal_id: str, since: datetime) -> GoalResults:
        """The goal's conversations that ended since ``since``."""
        ...

    async def idle(
        self, goal_id: str, idle_before: datetime, limit: int
    ) -> list[tuple[uuid.UUID, ConversationStatus]]:
        """A goal's open conversations (active or escalated) unchanged since
        ``idle_before``, with their status."""
        ...

    async def open_turn(
        self,
        conversation_id: uuid.UUID,
        content: str,
        *,
        escalate_when: EscalationRule,
        history_limit: int,
        idempotency_key: str | None = None,
        owner: str | None = None,
        spend_cap: SpendCap | None = None,
    ) -> OpenedTurn:
        """In one transaction: check the conversation is active (and, with an ``owner``,
        that owner's: another's is not found), store the user message, apply
        ``escalate_when`` and read the history. With a key already used, store nothing and
        return that turn (``repeated``). Raises the domain's not-found and conflict errors,
        and, for a message the LLM would answer, ``spend_cap``'s refusal (storing nothing).

        A keyed message is stored with an answer lease (``answering_until``): a repeated
        turn without a reply carries it while it lasts, so the caller can wait for the reply
        being made elsewhere."""
        ...

    async def store_reply(
        self, question: Message, reply: ReplyDraft
    ) -> tuple[Message, Conversation]:
        """Store the reply to ``question`` (at most one: a second returns the first) and reset
        the conversation's count of consecutive LLM failures."""
        ...

    async def record_llm_failure(
        self, conversation_id: uuid.UUID, *, escalate_at: int | None
    ) -> Conversation | None:
        """Count a failed turn; at ``escalate_at`` consecutive ones, escalate in the same
        transaction and return the escalated conversation."""
        ...

    async def release_answer(self, question: Message) -> None:
        """End ``question``'s answer lease: its turn ended without a reply (the LLM failed,
        the client left first), so a retry may ask again at once."""
        ...

    async def renew_answer(self, question: Message) -> None:
        """Extend ``question``'s answer lease by its length from now, if it still holds:
        the turn answering it is alive."""
        ...

    async def count_active(self) -> int: ...


class EvaluationStore(Protocol):
    """The judge's queue and its verdicts (the evaluations table)."""

    async def claim(self, now: datetime, lease_seconds: float, limit: int) -> list[JudgeJob]:
        """Up to ``limit`` due ones, each held until ``now`` + the lease (one holder at a
        time, across replicas), its attempt counted."""
        ...

    async def judged(
        self, conversation_id: uuid.UUID, verdict: Verdict, model: str, now: datetime
    ) -> Conversation | None:
        """Store the verdict and make it the conversation's outcome (source judge); None
        if it is no longer pending (deleted, or graded by another)."""
        ...

    async def retry(self, conversation_id: uuid.UUID, at: datetime, error: str) -> None: ...

    async def give_up(
        self, conversation_id: uuid.UUID, error: str, now: datetime
    ) -> Conversation | None:
        """Failed: the conversation keeps the outcome its end gave; None if no longer
        pending."""
        ...

    async def pending(self) -> int:
        """How many wait for the judge."""
        ...


class HandoffStore(Protocol):
    """Each step one atomic change of the conversation's handoff; None when the
    conversation is not in the state the step needs (the caller reads why)."""

    async def queue(
        self,
        *,
        state: HandoffState,
        goal_id: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Conversations whose handoff is in ``state``, the longest waiting first."""
        ...

    async def queue_stats(self) -> list[tuple[str, HandoffState, int, datetime]]:
        """Per goal and open state: how many, and the earliest escalation among them."""
        ...

    async def assign(
        self, conversation_id: uuid.UUID, agent: str, *, holder: str | None, transfer: bool
    ) -> Conversation | None:
        """Claim a waiting one for ``agent``; or (``transfer``) hand one held by ``holder``
        (None: by anyone) to ``agent``."""
        ...

    async def unassign(
        self, conversation_id: uuid.UUID, *, holder: str | None
    ) -> Conversation | None:
        """Put one held by ``holder`` (None: by anyone) back in the queue."""
        ...

    async def resolve(
        self,
        conversation_id: uuid.UUID,
        *,
        holder: str | None,
        closing: Closing | None,
        note: str | None = None,
    ) -> Conversation | None:
        """End one held by ``holder`` (None: by anyone): with no ``closing``, active again
        with its escalation counters at zero; with one, completed (as ``transition``)."""
        ...

    async def agent_message(
        self, conversation_id: uuid.UUID, agent: str, content: str
    ) -> tuple[Message, Conversation] | None:
        """Store ``agent``'s message in a conversation it holds."""
        ...


class EventLog(Protocol):
    """The live streams' events, as the changes that made them committed."""

    async def conversation_events(
        self, conversation_id: uuid.UUID, after_seq: int, limit: int
    ) -> list[LiveEvent]:
        """One conversation's events after ``after_seq``, in order."""
        ...

    async def queue_events(self, after_id: int, limit: int) -> list[LiveEvent]:
        """Every conversation's events after ``after_id``, in commit order."""
        ...

    async def last_seq(self, conversation_id: uuid.UUID) -> int: ...

    async def last_id(self) -> int: ...


class Subscription(Protocol):
    async def wait(self, heartbeat: float) -> bool | None:
        """Until something may be new (True) or ``heartbeat`` passed (False); None once
        the server is draining (the stream ends, its client reconnects elsewhere)."""
        ...


class Wakeups(Protocol):
    """Tells subscribers that a topic (a conversation's id, or ``QUEUE``) may have new
    events, on this replica and every other: the events themselves are read from the
    ``EventLog``, so a wake-up lost costs a delay, never an event."""

    def admit(self) -> None:
        """Raises if a new stream cannot be served now (too many, or draining): checked
        before a stream's response starts, so the refusal is a 503, not a broken stream."""
        ...

    def subscribe(self, topic: str) -> AbstractContextManager[Subscription]: ...


class KeyChanges(Protocol):
    """Tells a replica when any key may have changed on any replica."""

    def epoch(self) -> int | None:
        """A number that changes whenever a key may have changed (revoked, its limits
        changed, or the feed lost touch and came back); None while the feed cannot vouch
        for that (down, or its heartbeat late): keys are then read on every request."""
        ...


class KeyStore(Protocol):
    async def add(self, key: ApiKey) -> bool:
        """False if a key by that name exists or existed (names are never reused)."""
        ...

    async def get(self, name: str) -> ApiKey | None: ...

    async def by_digest(self, digest: str) -> ApiKey | None: ...

    async def all(self) -> list[ApiKey]:
        """Every key, revoked ones too, by name."""
        ...

    async def revoke(self, name: str, when: datetime) -> ApiKey | None:
        """Revoke (once: a revoked key keeps its first time); None if there is no such key."""
        ...

    async def set_limits(self, name: str, limits: KeyLimits) -> ApiKey | None:
        """Replace a key's budget and rate limits; None if there is no such key."""
        ...

    async def touch(self, name: str, when: datetime) -> None:
        """Record that the key was used at ``when``."""
        ...

    async def any_exist(self) -> bool:
        """Whether any key was ever made, revoked ones included."""
        ...

    async def spent(self, name: str, since: date) -> int:
        """Nano-dollars the key spent from ``since`` (a UTC day) on."""
        ...

    async def spent_daily(self, since: date) -> dict[str, dict[date, int]]:
        """Every key's spend per UTC day from ``since`` on."""
        ...


class RateLimiter(Protocol):
    """Counts against per-minute limits, once for every replica where configured (the
    LLM tokens a key may use a minute)."""

    async def wait(self, name: str, identity: str, per_minute: int) -> float:
        """Seconds until one more unit fits (0.0: now)."""
        ...

    async def charge(self, name: str, identity: str, per_minute: int, cost: int) -> bool:
        """Count ``cost`` units already spent; whether they fitted within the limit."""
        ...


class LLM(Protocol):
    """The LLM gateway, as the domain uses it."""

    async def complete(self, request: ChatRequest) -> Completion: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]: ...
