"""The domain's entities: plain, immutable values that the store loads and the API shows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from parley import defaults
from parley.llm.types import Role, Usage

# Money is counted in whole nano-dollars (1e-9 USD): sums are exact, on every database.
NANOS_PER_USD = 1_000_000_000


class ConversationStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    ESCALATED = "escalated"


class MessageStatus(StrEnum):
    COMPLETE = "complete"
    # The reply was cut before the LLM finished (client gone, shutdown): what was
    # generated is kept, with the usage it cost.
    INTERRUPTED = "interrupted"


class EscalationReason(StrEnum):
    """Why a conversation went to a human. A closed set: never free text."""

    USER_REQUEST = "user_request"
    TRIGGER_PHRASE = "trigger_phrase"
    MAX_TURNS = "max_turns"
    LLM_FAILURE = "llm_failure"
    MANUAL = "manual"
    BUDGET = "budget"  # the conversation reached its goal's budget (tokens or dollars)


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    max_turns: int = defaults.MAX_TURNS
    trigger_phrases: tuple[str, ...] = defaults.TRIGGER_PHRASES
    on_llm_failure: bool = defaults.ESCALATE_ON_LLM_FAILURE
    # Escalate on this many consecutive failed LLM turns (with ``on_llm_failure``).
    max_llm_failures: int = defaults.MAX_LLM_FAILURES
    # A conversation's budget: once its replies used this many tokens, or cost this many
    # dollars, its next message escalates instead of being answered. None: no budget.
    budget_tokens: int | None = None
    budget_usd: float | None = None


# What a goal created without a policy gets (the API schemas' defaults).
DEFAULT_ESCALATION = EscalationPolicy()


class Outcome(StrEnum):
    """How a conversation ended, for its goal."""

    ACHIEVED = "achieved"
    NOT_ACHIEVED = "not_achieved"
    ABANDONED = "abandoned"  # the customer left
    UNKNOWN = "unknown"


class OutcomeSource(StrEnum):
    """Who gave a conversation its outcome."""

    CLIENT = "client"  # the client that closed it
    AGENT = "agent"  # the agent that resolved it
    JUDGE = "judge"  # the LLM judge, against the goal's success criteria
    TIMEOUT = "timeout"  # nobody: it was idle past its goal's timeout


@dataclass(frozen=True, slots=True)
class JudgePolicy:
    """Whether an LLM grades a goal's ended conversations against its success criteria:
    off by default; on, a share of them (the same ones on every replica)."""

    enabled: bool = False
    sample_rate: float = defaults.JUDGE_SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class Goal:
    id: str
    name: str
    instructions: str
    model: str | None
    escalation: EscalationPolicy
    created_at: datetime
    updated_at: datetime
    # Idle this long (no message, no step), its conversations end; waiting, abandoned.
    idle_timeout_seconds: int = defaults.IDLE_TIMEOUT_SECONDS
    # What must be true at the end for the goal to be achieved (the judge's brief).
    success_criteria: str | None = None
    judge: JudgePolicy = JudgePolicy()


@dataclass(frozen=True, slots=True)
class Message:
    id: uuid.UUID
    conversation_id: uuid.UUID
    seq: int
    role: Role
    content: str
    created_at: datetime
    model: str | None = None
    usage: Usage | None = None
    reply_to: uuid.UUID | None = None  # for a reply: the user message it answers
    status: MessageStatus = MessageStatus.COMPLETE
    author: str | None = None  # an agent's message: the agent's key name


class HandoffState(StrEnum):
    WAITING = "waiting"  # in the queue: no agent holds it
    ASSIGNED = "assigned"  # an agent holds it
    RESOLVED = "resolved"  # an agent finished it (back to the bot, or completed)
    ABANDONED = "abandoned"  # the customer left while it waited
    ENDED = "ended"  # the customer closed it while an agent held it


OPEN_HANDOFF = (HandoffState.WAITING, HandoffState.ASSIGNED)


class HandoffStep(StrEnum):
    """What just happened to a conversation's handoff (a business event)."""

    ESCALATED = "escalated"  # a new handoff: in the queue
    ASSIGNED = "assigned"  # claimed from the queue
    TRANSFERRED = "transferred"  # handed to another agent
    UNASSIGNED = "unassigned"  # put back in the queue
    FIRST_REPLY = "first_reply"  # the agent's first message
    RETURNED_TO_BOT = "returned_to_bot"  # resolved: the bot answers again
    COMPLETED = "completed"  # resolved: the conversation ended
    ABANDONED = "abandoned"  # the customer left while it waited
    ENDED = "ended"  # the customer closed it while an agent held it


@dataclass(frozen=True, slots=True)
class Handoff:
    """A conversation's current (or last) handoff to a human agent."""

    state: HandoffState
    reason: EscalationReason
    escalated_at: datetime
    agent: str | None = None
    assigned_at: datetime | None = None
    first_agent_reply_at: datetime | None = None
    resolved_at: datetime | None = None
    note: str | None = None  # the agent's, when resolving it

    def customer_left(self, at: datetime) -> Handoff:
        """The conversation was closed by its customer: waiting, it is abandoned; held
        by an agent, it ends."""
        if self.state is HandoffState.WAITING:
            return replace(self, state=HandoffState.ABANDONED, resolved_at=at)
        if self.state is HandoffState.ASSIGNED:
            return replace(self, state=HandoffState.RESOLVED, resolved_at=at)
        return self


class LiveEventKind(StrEnum):
    MESSAGE = "message"  # a message written while the conversation is in a handoff
    HANDOFF = "handoff"  # a step of its handoff


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """What happened in a conversation around its handoff, as subscribers are told it:
    stored in the same transaction as the change itself, so a subscriber that reconnects
    reads what it missed."""

    id: int  # among every conversation's events, in commit order (the queue's stream)
    seq: int  # within its conversation, from 1 (the conversation's stream)
    conversation_id: uuid.UUID
    goal_id: str
    kind: LiveEventKind
    created_at: datetime
    message: Message | None = None  # a message event's message
    step: HandoffStep | None = None  # a handoff event's step, and the state it left
    status: ConversationStatus | None = None
    handoff: Handoff | None = None


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event to send to one webhook endpoint, and how it went so far."""

    event: LiveEvent
    endpoint: str
    type: str  # conversation.escalated, handoff.assigned, ...
    attempts: int  # this one included, once claimed
    created_at: datetime
    state: str = "pending"  # pending, delivered, failed
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Escalation:
    reason: EscalationReason
    note: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Ending:
    """How a conversation ended."""

    ended_at: datetime
    outcome: Outcome
    source: OutcomeSource | None  # None: ended before outcomes were recorded
    turns: int  # its customer's messages by then


@dataclass(frozen=True, slots=True)
class Closing:
    """An end as asked for: the outcome it ends with (a waiting handoff's customer who
    left is ``abandoned`` unless one was given), from whom, and whether the judge grades
    it afterwards (its verdict then becomes the outcome)."""

    outcome: Outcome | None  # None: none given; unknown, or abandoned if it waited
    source: OutcomeSource
    judged: bool = False


class EvaluationState(StrEnum):
    PENDING = "pending"  # in the judge's queue
    DONE = "done"
    FAILED = "failed"  # retried, given up: the outcome stays as the end left it


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The judge's verdict on an ended conversation (or its place in the queue)."""

    state: EvaluationState
    attempts: int
    created_at: datetime
    evaluated_at: datetime | None = None
    label: Outcome | None = None  # achieved or not_achieved
    score: float | None = None  # 0..1, how well the criteria were met
    explanation: str | None = None
    model: str | None = None
    last_error: str | None = None
    # Opaque to the domain: the trace of the request that ended it, if one was recorded
    # (a W3C traceparent), for the verdict's span to link to.
    origin_trace: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judge's structured answer."""

    label: Outcome  # achieved or not_achieved
    score: float  # 0..1
    explanation: str


@dataclass(frozen=True, slots=True)
class JudgeJob:
    """An ended conversation the judge holds (by a lease) to grade."""

    conversation_id: uuid.UUID
    goal_id: str
    attempts: int  # this one included
    created_at: datetime  # when it entered the queue (its end)


@dataclass(frozen=True, slots=True)
class Conversation:
    id: uuid.UUID
    goal_id: str
    status: ConversationStatus
    metadata: dict[str, Any]
    turns: int
    created_at: datetime
    updated_at: datetime
    escalation: Escalation | None = None
    owner: str | None = None  # the name of the key that created it; None: made with no keys
    tokens_used: int = 0  # by its replies, prompt and completion
    cost_nanos: int = 0  # its replies' cost, in nano-dollars
    handoff: Handoff | None = None
    ending: Ending | None = None
    evaluation: Evaluation | None = None
    messages: tuple[Message, ...] = field(default=())

    # An ending's fields, as the API shows them on the conversation.
    @property
    def ended_at(self) -> datetime | None:
        return self.ending.ended_at if self.ending else None

    @property
    def outcome(self) -> Outcome | None:
        return self.ending.outcome if self.ending else None

    @property
    def outcome_source(self) -> OutcomeSource | None:
        return self.ending.source if self.ending else None

    @property
    def judging(self) -> bool:
        """Ended, and its outcome awaits the judge's verdict."""
        return self.evaluation is not None and self.evaluation.state is EvaluationState.PENDING

    @property
    def cost_usd(self) -> float:
        return self.cost_nanos / NANOS_PER_USD


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a keyset-paginated listing."""

    items: tuple[Conversation, ...]
    next_cursor: str | None
