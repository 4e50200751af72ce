"""The API's public shapes. Domain entities convert into them via ``from_attributes``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from parley import defaults
from parley.domain.bounds import check_text
from parley.domain.errors import InvalidInputError
from parley.domain.goals import GOAL_ID_PATTERN
from parley.domain.keys import NAME_PATTERN, BudgetPeriod
from parley.domain.keys import Role as KeyRole
from parley.domain.models import (
    DEFAULT_ESCALATION,
    ConversationStatus,
    EscalationReason,
    EvaluationState,
    HandoffState,
    HandoffStep,
    LiveEventKind,
    MessageStatus,
    Outcome,
    OutcomeSource,
)
from parley.llm import Role


def _storable(value: str) -> str:
    """``check_text`` as a validator: its refusal names the field, as pydantic's do."""
    try:
        return check_text(value, "value")
    except InvalidInputError as refused:
        raise ValueError(refused.message) from None


# Text that a database can store (no NUL, no lone surrogate); see parley.domain.bounds.
StorableText = Annotated[str, AfterValidator(_storable)]
TriggerPhrase = Annotated[
    StorableText, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)
]
ModelName = Annotated[
    StorableText, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
]
GoalId = Annotated[str, StringConstraints(pattern=GOAL_ID_PATTERN)]
KeyName = Annotated[str, StringConstraints(pattern=f"^{NAME_PATTERN.pattern}$")]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class _In(BaseModel):
    # A field the API does not know is a mistake to report, not to drop: {"role": "agent"}
    # on a message was stored as a user's message without a word.
    model_config = ConfigDict(extra="forbid")


# What an INTEGER column holds (PostgreSQL refuses more; SQLite would store it).
MAX_INT32 = 2**31 - 1


class EscalationPolicyIn(_In):
    max_turns: int = Field(default=DEFAULT_ESCALATION.max_turns, ge=1, le=10_000)
    trigger_phrases: list[TriggerPhrase] = Field(
        default=list(DEFAULT_ESCALATION.trigger_phrases), max_length=100
    )
    on_llm_failure: bool = DEFAULT_ESCALATION.on_llm_failure
    max_llm_failures: int = Field(default=DEFAULT_ESCALATION.max_llm_failures, ge=1, le=100)
    budget_tokens: int | None = Field(
        default=None,
        ge=1,
        le=MAX_INT32,
        description="Once a conversation's replies used this many tokens, its next message"
        " escalates (reason budget) instead of being answered",
    )
    budget_usd: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="The same in US dollars of estimated cost",
    )


def _not_null(value: object) -> object:
    # In a partial update a field may be left out; an explicit null would blank it.
    if value is None:
        raise ValueError("may be left out, but not set to null")
    return value


class EscalationPolicyPatch(_In):
    max_turns: int | None = Field(default=None, ge=1, le=10_000)
    trigger_phrases: list[TriggerPhrase] | None = Field(default=None, max_length=100)
    on_llm_failure: bool | None = None
    max_llm_failures: int | None = Field(default=None, ge=1, le=100)
    # null removes the budget
    budget_tokens: int | None = Field(default=None, ge=1, le=MAX_INT32)
    budget_usd: float | None = Field(default=None, gt=0, le=1_000_000)

    reject_null = field_validator(
        "max_turns", "trigger_phrases", "on_llm_failure", "max_llm_failures"
    )(_not_null)


class JudgeIn(_In):
    enabled: bool = Field(
        default=False,
        description="An LLM grades this goal's ended conversations against its "
        "success_criteria (needs them) when no client or agent reported an outcome",
    )
    sample_rate: float = Field(
        default=defaults.JUDGE_SAMPLE_RATE,
        ge=0,
        le=1,
        description="The share of ended conversations judged (the same ones on every replica)",
    )


class JudgePatch(_In):
    enabled: bool | None = None
    sample_rate: float | None = Field(default=None, ge=0, le=1)

    reject_null = field_validator("enabled", "sample_rate")(_not_null)


class JudgeOut(_Out):
    enabled: bool
    sample_rate: float


_CRITERIA = "What must be true at the end for the goal to be achieved (the judge's brief)"


class GoalCreate(_In):
    id: GoalId | None = None
    name: StorableText = Field(min_length=1, max_length=200)
    instructions: StorableText = Field(min_length=1, max_length=20_000)
    model: ModelName | None = None
    escalation: EscalationPolicyIn = Field(default_factory=EscalationPolicyIn)
    idle_timeout_seconds: int = Field(
        default=defaults.IDLE_TIMEOUT_SECONDS,
        ge=1,
        le=365 * 86400,
        description="Its conversations idle this long (no message, no step by anyone) end;"
        " one waiting for an agent is abandoned",
    )
    success_criteria: StorableText | None = Field(
        default=None, min_length=1, max_length=5000, description=_CRITERIA
    )
    judge: JudgeIn = Field(default_factory=JudgeIn)


class GoalUpdate(_In):
    name: StorableText | None = Field(default=None, min_length=1, max_length=200)
    instructions: StorableText | None = Field(default=None, min_length=1, max_length=20_000)
    model: ModelName | None = None
    escalation: EscalationPolicyPatch | None = None
    idle_timeout_seconds: int | None = Field(default=None, ge=1, le=365 * 86400)
    # null removes the criteria (refused while the goal judges)
    success_criteria: StorableText | None = Field(default=None, min_length=1, max_length=5000)
    judge: JudgePatch | None = None

    reject_null = field_validator(
        "name", "instructions", "escalation", "idle_timeout_seconds", "judge"
    )(_not_null)


class EscalationPolicyOut(_Out):
    max_turns: int
    trigger_phrases: list[str]
    on_llm_failure: bool
    max_llm_failures: int
    budget_tokens: int | None = None
    budget_usd: float | None = None


class GoalOut(_Out):
    id: str
    name: str
    instructions: str
    model: str | None
    escalation: EscalationPolicyOut
    idle_timeout_seconds: int
    success_criteria: str | None = None
    judge: JudgeOut
    created_at: datetime
    updated_at: datetime


class GoalList(BaseModel):
    items: list[GoalOut]


class ConversationCreate(_In):
    goal_id: StorableText = Field(min_length=1, max_length=64)
    metadata: dict[str, Any] = Field(default_factory=dict, max_length=50)


class UsageOut(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_prompt_tokens: int = Field(
        default=0,
        description="Of prompt_tokens, those the provider served from its prompt cache"
        " (Groq bills them at half the input price)",
    )


class MessageOut(_Out):
    id: uuid.UUID
    seq: int
    role: Role
    content: str
    created_at: datetime
    status: MessageStatus = MessageStatus.COMPLETE
    reply_to: uuid.UUID | None = None
    model: str | None = None
    usage: UsageOut | None = None
    author: str | None = Field(default=None, description="An agent's message: the agent")


class HandoffOut(_Out):
    state: HandoffState
    agent: str | None = Field(description="The agent's key name; null while waiting")
    reason: EscalationReason
    escalated_at: datetime
    assigned_at: datetime | None
    first_agent_reply_at: datetime | None
    resolved_at: datetime | None
    note: str | None = None


class LiveEventOut(_Out):
    """One event of a live stream (``GET /v1/conversations/{id}/events``,
    ``GET /v1/handoffs/events``, the conversation's WebSocket)."""

    id: int = Field(
        description="Its place among every conversation's events (the queue stream's id)"
    )
    seq: int = Field(
        description="Its place in its conversation, from 1 (the conversation stream's id)"
    )
    event: LiveEventKind = Field(
        validation_alias=AliasChoices(
            "event", "kind"
        ),  # the wire's name (the schema's), the domain's
        description="message: a message written while the conversation is in a handoff "
        "(the customer's or the agent's); handoff: a step of its handoff",
    )
    conversation_id: uuid.UUID
    goal_id: str
    created_at: datetime
    message: MessageOut | None = Field(default=None, description="A message event's message")
    step: HandoffStep | None = Field(
        default=None,
        description="A handoff event's step: escalated, assigned, transferred, unassigned, "
        "first_reply, returned_to_bot, completed, abandoned or ended (the customer closed it "
        "while an agent held it)",
    )
    status: ConversationStatus | None = Field(
        default=None, description="A handoff event: the conversation's status after it"
    )
    handoff: HandoffOut | None = Field(
        default=None, description="A handoff event: the handoff after it"
    )


class EvaluationOut(_Out):
    state: EvaluationState = Field(
        description="pending: in the judge's queue; done: graded; failed: the judge gave up"
        " (the outcome stays as the end left it)"
    )
    label: Outcome | None = Field(default=None, description="achieved or not_achieved")
    score: float | None = Field(default=None, description="0..1: how well the criteria were met")
    explanation: str | None = None
    model: str | None = Field(default=None, description="The judge's model")
    attempts: int
    created_at: datetime
    evaluated_at: datetime | None = None


class EscalationOut(_Out):
    reason: EscalationReason
    note: str | None
    created_at: datetime


class ConversationOut(_Out):
    id: uuid.UUID
    goal_id: str
    status: ConversationStatus
    metadata: dict[str, Any]
    turns: int
    created_at: datetime
    updated_at: datetime
    escalation: EscalationOut | None = None
    owner: str | None = Field(
        default=None, description="The name of the API key that created it (null: no keys)"
    )
    tokens_used: int = Field(default=0, description="By its replies, against its goal's budget")
    cost_usd: float = Field(default=0.0, description="Its replies' estimated cost")
    handoff: HandoffOut | None = Field(
        default=None, description="Its current (or last) handoff to a human agent"
    )
    ended_at: datetime | None = Field(default=None, description="When it ended; null: open")
    outcome: Outcome | None = Field(
        default=None,
        description="How it ended for its goal: achieved, not_achieved, abandoned (the "
        "customer left) or unknown; while the judge grades it, the outcome it ended with",
    )
    outcome_source: OutcomeSource | None = Field(
        default=None, description="Who gave the outcome: client, agent, judge or timeout"
    )
    evaluation: EvaluationOut | None = Field(
        default=None, description="The judge's verdict, when its goal judges"
    )


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]
    # The seq to pass as messages_before for the page before these; null: no more.
    messages_next_before: int | None = None


class ConversationPage(BaseModel):
    items: list[ConversationOut]
    next_cursor: str | None


class MessageCreate(_In):
    content: str = Field(min_length=1)
    stream: bool = False


class TurnOut(_Out):
    conversation: ConversationOut
    user_message: MessageOut
    reply: MessageOut | None
    escalation_reason: EscalationReason | None = None
    held_for_agent: bool = Field(
        default=False,
        description="The conversation is with a human agent: the message is stored for them "
        "(answered 202), and the assistant does not reply",
    )


class EscalationCreate(_In):
    # Policy reasons (trigger_phrase, max_turns, llm_failure) are Parley's to give.
    reason: Literal[EscalationReason.MANUAL, EscalationReason.USER_REQUEST] = (
        EscalationReason.MANUAL
    )
    note: StorableText | None = Field(default=None, max_length=2000)


class HandoffItem(ConversationOut):
    wait_seconds: float = Field(
        description="From the escalation to its assignment, or to now while it waits"
    )


class HandoffPage(BaseModel):
    items: list[HandoffItem]
    next_cursor: str | None


class AssignBody(_In):
    agent: KeyName | None = Field(
        default=None, description="Hand it to this agent (its holder or an admin only)"
    )


class ResolveBody(_In):
    return_to_bot: bool = Field(
        description="true: the bot answers again (active); false: the conversation ends"
    )
    note: StorableText | None = Field(default=None, max_length=2000)
    outcome: Outcome | None = Field(
        default=None,
        description="Ending it: how it ended for its goal (none: unknown, or the judge's"
        " verdict when its goal judges); refused with return_to_bot",
    )


class CloseBody(_In):
    outcome: Outcome | None = Field(
        default=None,
        description="How it ended for its goal, as the client knows it (none: unknown, "
        "abandoned if it waited for an agent, or the judge's verdict when its goal judges)",
    )


class OutcomeStatsOut(_Out):
    count: int
    median_turns: float | None = Field(description="Customer messages by the end")
    median_duration_seconds: float | None = Field(description="From its start to its end")


class GoalOutcomesOut(BaseModel):
    goal_id: str
    since: datetime
    ended: int = Field(description="Conversations that ended since, their outcome final")
    judging: int = Field(description="Ended since, awaiting the judge (not counted yet)")
    success_ratio: float | None = Field(
        description="Achieved, of those achieved or not_achieved; null before any"
    )
    containment: float | None = Field(
        description="Ended without ever being handed to a human, of those ended"
    )
    outcomes: dict[Outcome, OutcomeStatsOut]


class AgentMessageOut(BaseModel):
    conversation: ConversationOut
    message: MessageOut


class KeyCreate(_In):
    name: KeyName
    role: KeyRole
    budget_usd: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="Spend allowed per budget period; past it, turns get 429 budget_exceeded",
    )
    budget_period: BudgetPeriod = Field(
        default=BudgetPeriod.MONTH, description="UTC day, ISO week or calendar month"
    )
    rpm: int | None = Field(default=None, ge=1, le=1_000_000, description="Requests a minute")
    tpm: int | None = Field(default=None, ge=1, le=100_000_000, description="LLM tokens a minute")


class KeyUpdate(_In):
    """Limits to change; those left out stay, null removes one."""

    budget_usd: float | None = Field(default=None, gt=0, le=1_000_000)
    budget_period: BudgetPeriod | None = None
    rpm: int | None = Field(default=None, ge=1, le=1_000_000)
    tpm: int | None = Field(default=None, ge=1, le=100_000_000)

    reject_null = field_validator("budget_period")(_not_null)


class SpendOut(BaseModel):
    usd: float = Field(description="Spent in the current budget period")
    period_start: datetime
    resets_at: datetime
    remaining_usd: float | None = Field(description="Of the budget; null: no budget")


class CallerOut(_Out):
    name: str | None = Field(
        description="The calling key's name (an agent's, in development mode, from the "
        "X-Parley-Agent header); null in development mode without one"
    )
    role: KeyRole


class KeyOut(_Out):
    name: str
    role: KeyRole
    created_at: datetime
    last_used_at: datetime | None = Field(description="To the minute")
    revoked_at: datetime | None
    budget_usd: float | None
    budget_period: BudgetPeriod
    rpm: int | None
    tpm: int | None
    spend: SpendOut


class KeyCreated(KeyOut):
    secret: str = Field(description="The key itself: shown this once, never stored")


class KeyList(BaseModel):
    items: list[KeyOut]


class ErrorDetail(BaseModel):
    type: str
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
