"""Rows to domain values: one builder per entity, for every repository and the turn's
statements alike."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Row

from parley.domain.keys import ApiKey, BudgetPeriod, KeyLimits, to_nanos, to_usd
from parley.domain.keys import Role as KeyRole
from parley.domain.models import (
    Conversation,
    ConversationStatus,
    Ending,
    Escalation,
    EscalationPolicy,
    EscalationReason,
    Evaluation,
    EvaluationState,
    Goal,
    Handoff,
    HandoffState,
    HandoffStep,
    JudgePolicy,
    LiveEvent,
    LiveEventKind,
    Message,
    MessageStatus,
    Outcome,
    OutcomeSource,
)
from parley.llm.types import Role, Usage
from parley.store.tables import CONVERSATIONS, MESSAGES

# A conversation's columns, "metadata" read as "meta" (a Row's own attribute names are
# kept clear of it).
CONVERSATION_COLUMNS = tuple(
    c.label("meta") if c.name == "metadata" else c for c in CONVERSATIONS.c
)


def to_goal(row: Row[Any]) -> Goal:
    return Goal(
        id=row.id,
        name=row.name,
        instructions=row.instructions,
        model=row.model,
        escalation=EscalationPolicy(
            max_turns=row.max_turns,
            trigger_phrases=tuple(row.trigger_phrases),
            on_llm_failure=row.escalate_on_llm_failure,
            max_llm_failures=row.max_llm_failures,
            budget_tokens=row.budget_tokens,
            budget_usd=None if row.budget_nanos is None else to_usd(row.budget_nanos),
        ),
        created_at=row.created_at,
        updated_at=row.updated_at,
        idle_timeout_seconds=row.idle_timeout_seconds,
        success_criteria=row.success_criteria,
        judge=JudgePolicy(enabled=row.judge_enabled, sample_rate=row.judge_sample_rate),
    )


def goal_values(goal: Goal) -> dict[str, Any]:
    """A goal as the goals table's columns."""
    return {
        "id": goal.id,
        "name": goal.name,
        "instructions": goal.instructions,
        "model": goal.model,
        "max_turns": goal.escalation.max_turns,
        "trigger_phrases": list(goal.escalation.trigger_phrases),
        "escalate_on_llm_failure": goal.escalation.on_llm_failure,
        "max_llm_failures": goal.escalation.max_llm_failures,
        "budget_tokens": goal.escalation.budget_tokens,
        "budget_nanos": (
            None if goal.escalation.budget_usd is None else to_nanos(goal.escalation.budget_usd)
        ),
        "created_at": goal.created_at,
        "updated_at": goal.updated_at,
        "idle_timeout_seconds": goal.idle_timeout_seconds,
        "success_criteria": goal.success_criteria,
        "judge_enabled": goal.judge.enabled,
        "judge_sample_rate": goal.judge.sample_rate,
    }


def to_conversation(
    row: Row[Any], messages: tuple[Message, ...] = (), evaluation: Evaluation | None = None
) -> Conversation:
    escalation = handoff = ending = None
    if row.escalation_reason is not None and row.escalated_at is not None:
        reason = EscalationReason(row.escalation_reason)
        escalation = Escalation(reason, row.escalation_note, row.escalated_at)
        if row.handoff_state is not None:
            handoff = Handoff(
                state=HandoffState(row.handoff_state),
                reason=reason,
                escalated_at=row.escalated_at,
                agent=row.handoff_agent,
                assigned_at=row.handoff_assigned_at,
                first_agent_reply_at=row.handoff_first_agent_reply_at,
                resolved_at=row.handoff_resolved_at,
                note=row.handoff_note,
            )
    if row.ended_at is not None:
        ending = Ending(
            ended_at=row.ended_at,
            outcome=Outcome(row.outcome),
            source=None if row.outcome_source is None else OutcomeSource(row.outcome_source),
            turns=row.ended_turns or 0,
        )
    return Conversation(
        id=row.id,
        goal_id=row.goal_id,
        status=ConversationStatus(row.status),
        metadata=dict(row.meta),
        turns=row.turns,
        created_at=row.created_at,
        updated_at=row.updated_at,
        escalation=escalation,
        owner=row.owner,
        tokens_used=row.tokens_used,
        cost_nanos=row.cost_nanos,
        handoff=handoff,
        ending=ending,
        evaluation=evaluation,
        messages=messages,
    )


def to_evaluation(row: Row[Any]) -> Evaluation:
    return Evaluation(
        state=EvaluationState(row.state),
        attempts=row.attempts,
        created_at=row.created_at,
        evaluated_at=row.evaluated_at,
        label=None if row.label is None else Outcome(row.label),
        score=row.score,
        explanation=row.explanation,
        model=row.model,
        last_error=row.last_error,
        origin_trace=row.origin_trace,
    )


def to_message(row: Any) -> Message:
    """From a messages row, or anything with its columns as attributes."""
    usage = None
    if row.total_tokens is not None:
        usage = Usage(
            row.prompt_tokens or 0,
            row.completion_tokens or 0,
            row.total_tokens,
            row.cached_prompt_tokens or 0,
        )
    return Message(
        id=row.id,
        conversation_id=row.conversation_id,
        seq=row.seq,
        role=Role(row.role),
        content=row.content,
        created_at=row.created_at,
        model=row.model,
        usage=usage,
        reply_to=row.reply_to,
        status=MessageStatus(row.status),
        author=row.author,
    )


def to_live_event(row: Row[Any]) -> LiveEvent:
    """An event row joined with its message (columns ``m_*``), if it has one."""
    message = None
    if row.message_id is not None:
        fields = {c.name: getattr(row, f"m_{c.name}") for c in MESSAGES.c}
        message = to_message(SimpleNamespace(**fields))
    status = handoff = None
    if row.state is not None:
        status = ConversationStatus(row.state["status"])
        handoff = _handoff_of(row.state.get("handoff"))
    return LiveEvent(
        id=row.id,
        seq=row.seq,
        conversation_id=row.conversation_id,
        goal_id=row.goal_id,
        kind=LiveEventKind(row.kind),
        created_at=row.created_at,
        message=message,
        step=None if row.step is None else HandoffStep(row.step),
        status=status,
        handoff=handoff,
    )


def _handoff_of(state: dict[str, Any] | None) -> Handoff | None:
    if state is None:
        return None
    return Handoff(
        state=HandoffState(state["state"]),
        reason=EscalationReason(state["reason"]),
        escalated_at=_moment(state["escalated_at"]),
        agent=state["agent"],
        assigned_at=_moment(state["assigned_at"]),
        first_agent_reply_at=_moment(state["first_agent_reply_at"]),
        resolved_at=_moment(state["resolved_at"]),
        note=state["note"],
    )


def _moment(iso: str | None) -> Any:
    return None if iso is None else datetime.fromisoformat(iso)


def to_key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        name=row.name,
        role=KeyRole(row.role),
        digest=row.digest,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        limits=KeyLimits(
            budget_usd=None if row.budget_nanos is None else to_usd(row.budget_nanos),
            budget_period=BudgetPeriod(row.budget_period),
            rpm=row.rpm,
            tpm=row.tpm,
        ),
    )


def aggregated_utc(moment: datetime | str) -> datetime:
    """A time out of ``func.min()``/``max()``, which loses the column's type (and SQLite
    its zone): read as UTC again."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
