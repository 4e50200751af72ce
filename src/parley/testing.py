"""In-memory fakes of the store's ports, for tests of code built on Parley's domain: typed
and public, as structlog ships ``structlog.testing``.

``MemoryStore`` keeps the contract the database store keeps (goals that exist once and
stay while a conversation uses them, one reply per message, idempotency keys, counted
failures, keyset paging newest first) without a database. The contract suite in
tests/store/test_contract.py runs the same cases on it, SQLite and PostgreSQL, so the
fake cannot drift from the real thing.

    from parley.testing import MemoryStore

    store = MemoryStore()
    service = ConversationService(store.conversations, GoalService(store.goals), events)
"""

from __future__ import annotations

import dataclasses
import statistics
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from parley import defaults
from parley.domain.errors import (
    ConversationClosedError,
    ConversationEscalatedError,
    ConversationNotFoundError,
    GoalExistsError,
    GoalInUseError,
    GoalNotFoundError,
    IdempotencyKeyReusedError,
)
from parley.domain.keys import ApiKey, KeyLimits
from parley.domain.models import (
    OPEN_HANDOFF,
    Closing,
    Conversation,
    ConversationStatus,
    Ending,
    Escalation,
    EscalationReason,
    Evaluation,
    EvaluationState,
    Goal,
    Handoff,
    HandoffState,
    HandoffStep,
    JudgeJob,
    LiveEvent,
    LiveEventKind,
    Message,
    Outcome,
    OutcomeSource,
    Page,
    Verdict,
)
from parley.domain.outcomes import GoalResults, OutcomeStats
from parley.domain.paging import decode_cursor, encode_cursor
from parley.domain.ports import (
    EscalationRule,
    OpenedTurn,
    ReplyDraft,
    SpendCap,
    escalated_by,
    held_for_agent,
)
from parley.llm import ChatMessage, Role

__all__ = ["MemoryConversations", "MemoryEvaluations", "MemoryGoals", "MemoryStore"]


def _spent_since(spend: dict[str, dict[date, int]], name: str, since: date) -> int:
    """What ``name`` spent since ``since`` (the key_spend table's sum, in memory)."""
    return sum(cost for day, cost in spend.get(name, {}).items() if day >= since)


def _now() -> datetime:
    return datetime.now(UTC)


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


@dataclasses.dataclass(slots=True)
class _Judgement:
    """A row of the evaluations table: the verdict (or its place in the queue)."""

    goal_id: str
    evaluation: Evaluation
    next_attempt_at: datetime


class MemoryGoals:
    """A ``GoalStore``."""

    def __init__(self, *goals: Goal) -> None:
        self.goals = {goal.id: goal for goal in goals}
        self.in_use: set[str] = set()  # goals with conversations: kept by MemoryConversations

    async def add(self, goal: Goal) -> Goal:
        if goal.id in self.goals:
            raise GoalExistsError(goal.id)
        self.goals[goal.id] = goal
        return goal

    async def get(self, goal_id: str) -> Goal | None:
        return self.goals.get(goal_id)

    async def all(self) -> list[Goal]:
        return sorted(self.goals.values(), key=lambda goal: goal.id)

    async def oldest_ids(self, limit: int) -> list[str]:
        oldest = sorted(self.goals.values(), key=lambda goal: (goal.created_at, goal.id))
        return [goal.id for goal in oldest[:limit]]

    async def replace(self, goal: Goal) -> Goal | None:
        if goal.id not in self.goals:
            return None
        self.goals[goal.id] = goal
        return goal

    async def delete(self, goal_id: str) -> bool:
        if goal_id in self.in_use:
            raise GoalInUseError(goal_id)
        return self.goals.pop(goal_id, None) is not None


class MemoryEventLog:
    """An ``EventLog``, appended to by the other fakes as the store's statements do;
    ``on_published`` is told each conversation with a new event, as the database's is."""

    def __init__(self) -> None:
        self.events: list[LiveEvent] = []
        self.on_published: Callable[[set[uuid.UUID]], None] | None = None
        self._last_id = 0  # ids are never reused, as the table's sequence

    def forget(self, conversation_id: uuid.UUID) -> None:
        """A deleted conversation's events go with it; its streams are woken to see it."""
        self.events = [e for e in self.events if e.conversation_id != conversation_id]
        if self.on_published is not None:
            self.on_published({conversation_id})

    def append_handoff(self, conversation: Conversation, step: HandoffStep) -> None:
        self._append(
            conversation.id,
            conversation.goal_id,
            LiveEventKind.HANDOFF,
            conversation.updated_at,
            step=step,
            status=conversation.status,
            handoff=conversation.handoff,
        )

    def append_message(self, goal_id: str, message: Message) -> None:
        self._append(
            message.conversation_id,
            goal_id,
            LiveEventKind.MESSAGE,
            message.created_at,
            message=message,
        )

    def _append(
        self,
        conversation_id: uuid.UUID,
        goal_id: str,
        kind: LiveEventKind,
        at: datetime,
        **values: Any,
    ) -> None:
        seq = 1 + sum(1 for e in self.events if e.conversation_id == conversation_id)
        self._last_id += 1
        event = LiveEvent(self._last_id, seq, conversation_id, goal_id, kind, at, **values)
        self.events.append(event)
        if self.on_published is not None:
            self.on_published({conversation_id})

    async def conversation_events(
        self, conversation_id: uuid.UUID, after_seq: int, limit: int
    ) -> list[LiveEvent]:
        mine = [e for e in self.events if e.conversation_id == conversation_id]
        return [e for e in mine if e.seq > after_seq][:limit]

    async def queue_events(self, after_id: int, limit: int) -> list[LiveEvent]:
        return [e for e in self.events if e.id > after_id][:limit]

    async def last_seq(self, conversation_id: uuid.UUID) -> int:
        return max((e.seq for e in self.events if e.conversation_id == conversation_id), default=0)

    async def last_id(self) -> int:
        return self.events[-1].id if self.events else 0


class MemoryConversations:
    """A ``ConversationStore``. ``fail_next_write`` makes the next ``store_reply`` raise
    that exception (a database failing, or a bug), for tests of what a turn does then."""

    def __init__(
        self,
        goals: MemoryGoals,
        *,
        answer_lease_seconds: float = defaults.ANSWER_LEASE_SECONDS,
        spend: dict[str, dict[date, int]] | None = None,
    ) -> None:
        self._goals = goals
        # Each key's spend per UTC day, shared with MemoryKeys (as the key_spend table).
        self.spend: dict[str, dict[date, int]] = spend if spend is not None else {}
        self._answer_lease = timedelta(seconds=answer_lease_seconds)
        self.leases: dict[uuid.UUID, datetime] = {}  # question id -> answering until
        self.conversations: dict[uuid.UUID, Conversation] = {}
        self.messages: dict[uuid.UUID, list[Message]] = {}
        self.keys: dict[tuple[uuid.UUID, str], Message] = {}
        self.failures: dict[uuid.UUID, int] = {}
        self.fail_next_write: Exception | None = None
        self.events = MemoryEventLog()
        self.evaluations: dict[uuid.UUID, _Judgement] = {}  # the evaluations table

    async def create(
        self, goal_id: str, metadata: dict[str, Any], owner: str | None = None
    ) -> Conversation:
        if goal_id not in self._goals.goals:
            raise GoalNotFoundError(goal_id)
        now = _now()
        conversation = Conversation(
            uuid.uuid4(),
            goal_id,
            ConversationStatus.ACTIVE,
            dict(metadata),
            0,
            now,
            now,
            owner=owner,
        )
        self.conversations[conversation.id] = conversation
        self.messages[conversation.id] = []
        self._goals.in_use.add(goal_id)
        return conversation

    async def get(
        self,
        conversation_id: uuid.UUID,
        *,
        with_messages: bool = False,
        messages_limit: int | None = None,
        messages_before: int | None = None,
    ) -> Conversation | None:
        conversation = self.conversations.get(conversation_id)
        if conversation is None:
            return None
        judgement = self.evaluations.get(conversation_id)
        if judgement is not None:
            conversation = dataclasses.replace(conversation, evaluation=judgement.evaluation)
        if not with_messages:
            return conversation
        messages = [
            m
            for m in self.messages[conversation_id]
            if messages_before is None or m.seq < messages_before
        ]
        if messages_limit is not None:
            messages = messages[-messages_limit:] if messages_limit else []
        return dataclasses.replace(conversation, messages=tuple(messages))

    async def page(
        self,
        *,
        goal_id: str | None = None,
        status: ConversationStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> Page:
        after = decode_cursor(cursor) if cursor is not None else None
        items = sorted(
            (
                c
                for c in self.conversations.values()
                if goal_id in (None, c.goal_id)
                and status in (None, c.status)
                and owner in (None, c.owner)
                and (after is None or (c.created_at, c.id) < after)
            ),
            key=lambda c: (c.created_at, c.id),
            reverse=True,
        )
        page = tuple(items[:limit])
        more = len(items) > limit
        return Page(page, encode_cursor(page[-1].created_at, page[-1].id) if more else None)

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
        conversation = self.conversations.get(conversation_id)
        if conversation is None or conversation.status not in allowed_from:
            return None
        if idle_before is not None and conversation.updated_at >= idle_before:
            return None
        now = max(_now(), conversation.updated_at)
        escalation = Escalation(reason, note, now) if reason else conversation.escalation
        handoff = Handoff(HandoffState.WAITING, reason, now) if reason else conversation.handoff
        if to is ConversationStatus.COMPLETED:
            if closing is None:
                raise ValueError("a conversation ends with a closing")
            conversation = self.ended(conversation, closing, now)
            if handoff is not None:
                handoff = handoff.customer_left(now)
        changed = dataclasses.replace(
            conversation, status=to, escalation=escalation, handoff=handoff, updated_at=now
        )
        self.conversations[conversation_id] = changed
        if reason is not None:
            self.events.append_handoff(changed, HandoffStep.ESCALATED)
        elif handoff is not None and handoff != conversation.handoff:  # the customer left
            left = handoff.state is HandoffState.ABANDONED
            self.events.append_handoff(
                changed, HandoffStep.ABANDONED if left else HandoffStep.ENDED
            )
        return changed

    def ended(self, conversation: Conversation, closing: Closing, now: datetime) -> Conversation:
        """``conversation`` with the end ``closing`` asks for (as parley.store.endings)."""
        outcome = closing.outcome
        if outcome is None:
            waiting = conversation.handoff and conversation.handoff.state is HandoffState.WAITING
            outcome = Outcome.ABANDONED if waiting else Outcome.UNKNOWN
        turns = sum(m.role is Role.USER for m in self.messages[conversation.id])
        evaluation = None
        if closing.judged:
            evaluation = Evaluation(EvaluationState.PENDING, attempts=0, created_at=now)
            self.evaluations[conversation.id] = _Judgement(conversation.goal_id, evaluation, now)
        return dataclasses.replace(
            conversation,
            ending=Ending(now, outcome, closing.source, turns),
            evaluation=evaluation,
        )

    async def delete(self, conversation_id: uuid.UUID) -> bool:
        conversation = self.conversations.get(conversation_id)
        if conversation is None or conversation.status is not ConversationStatus.COMPLETED:
            return False
        del self.conversations[conversation_id]
        del self.messages[conversation_id]
        if all(c.goal_id != conversation.goal_id for c in self.conversations.values()):
            self._goals.in_use.discard(conversation.goal_id)
        self.evaluations.pop(conversation_id, None)
        self.keys = {k: m for k, m in self.keys.items() if k[0] != conversation_id}
        self.events.forget(conversation_id)
        return True

    async def delete_ended_before(self, before: datetime, limit: int) -> int:
        expired = sorted(
            (c.ending.ended_at, c.id)
            for c in self.conversations.values()
            if c.ending is not None and c.ending.ended_at < before
        )
        for _, conversation_id in expired[:limit]:
            await self.delete(conversation_id)
        return len(expired[:limit])

    async def results(self, goal_id: str, since: datetime) -> GoalResults:
        ended = [
            c
            for c in self.conversations.values()
            if c.goal_id == goal_id and c.ending is not None and c.ending.ended_at >= since
        ]
        final = [c for c in ended if not self._judging(c.id)]
        by_outcome = {}
        for outcome in Outcome:
            mine = [c for c in final if c.ending is not None and c.ending.outcome is outcome]
            by_outcome[outcome] = OutcomeStats(
                count=len(mine),
                median_turns=_median([c.ending.turns for c in mine if c.ending]),
                median_duration_seconds=_median(
                    [(c.ending.ended_at - c.created_at).total_seconds() for c in mine if c.ending]
                ),
            )
        return GoalResults(
            goal_id=goal_id,
            since=since,
            ended=len(final),
            contained=sum(c.escalation is None for c in final),
            judging=len(ended) - len(final),
            by_outcome=by_outcome,
        )

    def _judging(self, conversation_id: uuid.UUID) -> bool:
        judgement = self.evaluations.get(conversation_id)
        return judgement is not None and judgement.evaluation.state is EvaluationState.PENDING

    async def idle(
        self, goal_id: str, idle_before: datetime, limit: int
    ) -> list[tuple[uuid.UUID, ConversationStatus]]:
        open_ = (ConversationStatus.ACTIVE, ConversationStatus.ESCALATED)
        found = sorted(
            (c.updated_at, c.id, c.status)
            for c in self.conversations.values()
            if c.goal_id == goal_id and c.status in open_ and c.updated_at < idle_before
        )
        return [(ident, status) for _, ident, status in found[:limit]]

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
        conversation = self.conversations.get(conversation_id)
        if conversation is None or owner not in (None, conversation.owner):
            raise ConversationNotFoundError(conversation_id)
        goal = self._goals.goals[conversation.goal_id]
        if idempotency_key is not None and (conversation_id, idempotency_key) in self.keys:
            question = self.keys[conversation_id, idempotency_key]
            if question.content != content:
                raise IdempotencyKeyReusedError()
            reply = self._reply_to(question)
            lease = self.leases.get(question.id)
            if reply is None and held_for_agent(conversation, question.created_at):
                return OpenedTurn(conversation, goal, question, (), repeated=True, held=True)
            return OpenedTurn(
                conversation,
                goal,
                question,
                self._history(question, history_limit),
                escalation=escalated_by(conversation, question.created_at),
                reply=reply,
                repeated=True,
                answering_until=lease if reply is None and lease and lease > _now() else None,
            )
        handoff = conversation.handoff
        if conversation.status is ConversationStatus.ESCALATED and (
            handoff is not None and handoff.state in OPEN_HANDOFF
        ):  # stored for the human agent, never the LLM
            question = self._append(conversation_id, Role.USER, content)
            conversation = dataclasses.replace(conversation, updated_at=question.created_at)
            self.conversations[conversation_id] = conversation
            if idempotency_key is not None:
                self.keys[conversation_id, idempotency_key] = question
            self.events.append_message(conversation.goal_id, question)
            return OpenedTurn(conversation, goal, question, (), held=True)
        if conversation.status is ConversationStatus.ESCALATED:
            raise ConversationEscalatedError()
        if conversation.status is ConversationStatus.COMPLETED:
            raise ConversationClosedError()
        if spend_cap is not None:
            spent = _spent_since(self.spend, spend_cap.key_name, spend_cap.since)
            spend_cap.check(spent, _now())
        question = self._append(conversation_id, Role.USER, content)
        conversation = dataclasses.replace(
            conversation, turns=conversation.turns + 1, updated_at=question.created_at
        )
        reason = escalate_when(goal, conversation)
        if reason is not None:  # at the message's time, as the database store does
            conversation = dataclasses.replace(
                conversation,
                status=ConversationStatus.ESCALATED,
                escalation=Escalation(reason, None, question.created_at),
                handoff=Handoff(HandoffState.WAITING, reason, question.created_at),
            )
            self.events.append_handoff(conversation, HandoffStep.ESCALATED)
        self.conversations[conversation_id] = conversation
        answering_until = None
        if idempotency_key is not None:
            self.keys[conversation_id, idempotency_key] = question
            if reason is None:  # an escalated message gets no reply: no lease
                answering_until = question.created_at + self._answer_lease
                self.leases[question.id] = answering_until
        return OpenedTurn(
            conversation,
            goal,
            question,
            self._history(question, history_limit),
            reason,
            answering_until=answering_until,
        )

    async def store_reply(
        self, question: Message, reply: ReplyDraft
    ) -> tuple[Message, Conversation]:
        if self.fail_next_write is not None:
            error, self.fail_next_write = self.fail_next_write, None
            raise error
        existing = self._reply_to(question)
        if existing is not None:  # a second reply stores nothing: the first stands
            return existing, self.conversations[question.conversation_id]
        stored = self._append(
            question.conversation_id,
            Role.ASSISTANT,
            reply.content,
            model=reply.model,
            usage=reply.usage,
            reply_to=question.id,
            status=reply.status,
        )
        self.failures[question.conversation_id] = 0
        conversation = self.conversations[question.conversation_id]
        conversation = dataclasses.replace(
            conversation,
            tokens_used=conversation.tokens_used + (reply.usage.total_tokens if reply.usage else 0),
            cost_nanos=conversation.cost_nanos + reply.cost_nanos,
            updated_at=max(conversation.updated_at, stored.created_at),
        )
        self.conversations[question.conversation_id] = conversation
        if reply.payer is not None and reply.cost_nanos:
            days = self.spend.setdefault(reply.payer, {})
            today = stored.created_at.date()
            days[today] = days.get(today, 0) + reply.cost_nanos
        return stored, conversation

    async def record_llm_failure(
        self, conversation_id: uuid.UUID, *, escalate_at: int | None
    ) -> Conversation | None:
        if conversation_id not in self.conversations:
            raise ConversationNotFoundError(conversation_id)
        failures = self.failures.get(conversation_id, 0) + 1
        self.failures[conversation_id] = failures
        if escalate_at is None or failures < escalate_at:
            return None
        return await self.transition(
            conversation_id,
            allowed_from=[ConversationStatus.ACTIVE],
            to=ConversationStatus.ESCALATED,
            reason=EscalationReason.LLM_FAILURE,
        )

    async def release_answer(self, question: Message) -> None:
        self.leases.pop(question.id, None)

    async def renew_answer(self, question: Message) -> None:
        if question.id in self.leases:
            self.leases[question.id] = _now() + self._answer_lease

    async def count_active(self) -> int:
        return sum(c.status is ConversationStatus.ACTIVE for c in self.conversations.values())

    def _append(
        self, conversation_id: uuid.UUID, role: Role, content: str, **fields: Any
    ) -> Message:
        messages = self.messages[conversation_id]
        # Times follow seq even if the clock steps back, as in the database store.
        created_at = max(_now(), self.conversations[conversation_id].updated_at)
        message = Message(
            uuid.uuid4(), conversation_id, len(messages) + 1, role, content, created_at, **fields
        )
        messages.append(message)
        return message

    def _reply_to(self, question: Message) -> Message | None:
        return next(
            (m for m in self.messages[question.conversation_id] if m.reply_to == question.id),
            None,
        )

    def _history(self, question: Message, limit: int) -> tuple[ChatMessage, ...]:
        earlier = [m for m in self.messages[question.conversation_id] if m.seq <= question.seq]
        return tuple(ChatMessage(_sent_as(m.role), m.content) for m in earlier[-limit:])


def _sent_as(role: Role) -> Role:
    """An agent's message reaches the LLM as the assistant's side, as in the database."""
    return Role.ASSISTANT if role is Role.AGENT else role


class MemoryHandoffs:
    """A ``HandoffStore`` over ``MemoryConversations``."""

    def __init__(self, conversations: MemoryConversations) -> None:
        self._store = conversations

    async def queue(
        self,
        *,
        state: HandoffState,
        goal_id: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        after = decode_cursor(cursor) if cursor is not None else None
        matching = sorted(
            (
                c
                for c in self._store.conversations.values()
                if c.handoff is not None
                and c.handoff.state is state
                and goal_id in (None, c.goal_id)
                and agent in (None, c.handoff.agent)
                and (after is None or (c.handoff.escalated_at, c.id) > after)
            ),
            key=lambda c: (c.handoff.escalated_at if c.handoff else _now(), c.id),
        )
        items = tuple(matching[:limit])
        more = len(matching) > limit
        last = items[-1] if items else None
        next_cursor = (
            encode_cursor(last.handoff.escalated_at, last.id)
            if more and last is not None and last.handoff is not None
            else None
        )
        return Page(items, next_cursor)

    async def queue_stats(self) -> list[tuple[str, HandoffState, int, datetime]]:
        stats: dict[tuple[str, HandoffState], tuple[int, datetime]] = {}
        for c in self._store.conversations.values():
            if c.handoff is None or c.handoff.state not in OPEN_HANDOFF:
                continue
            count, first = stats.get((c.goal_id, c.handoff.state), (0, c.handoff.escalated_at))
            stats[c.goal_id, c.handoff.state] = (count + 1, min(first, c.handoff.escalated_at))
        return [(goal, state, count, first) for (goal, state), (count, first) in stats.items()]

    def _held(self, conversation_id: uuid.UUID, holder: str | None) -> Conversation | None:
        conversation = self._store.conversations.get(conversation_id)
        handoff = conversation.handoff if conversation else None
        if handoff is None or handoff.state is not HandoffState.ASSIGNED:
            return None
        return conversation if holder in (None, handoff.agent) else None

    def _put(self, conversation: Conversation, **handoff: Any) -> Conversation:
        assert conversation.handoff is not None
        now = max(_now(), conversation.updated_at)
        changed = dataclasses.replace(
            conversation,
            handoff=dataclasses.replace(conversation.handoff, **handoff),
            updated_at=now,
        )
        self._store.conversations[conversation.id] = changed
        return changed

    async def assign(
        self, conversation_id: uuid.UUID, agent: str, *, holder: str | None, transfer: bool
    ) -> Conversation | None:
        if transfer:
            conversation = self._held(conversation_id, holder)
        else:
            conversation = self._store.conversations.get(conversation_id)
            waiting = (
                conversation is not None
                and conversation.status is ConversationStatus.ESCALATED
                and conversation.handoff is not None
                and conversation.handoff.state is HandoffState.WAITING
            )
            conversation = conversation if waiting else None
        if conversation is None:
            return None
        assigned = self._put(
            conversation, state=HandoffState.ASSIGNED, agent=agent, assigned_at=_now()
        )
        step = HandoffStep.TRANSFERRED if transfer else HandoffStep.ASSIGNED
        return self._recorded(assigned, step)

    def _recorded(self, conversation: Conversation, step: HandoffStep) -> Conversation:
        self._store.events.append_handoff(conversation, step)
        return conversation

    async def unassign(
        self, conversation_id: uuid.UUID, *, holder: str | None
    ) -> Conversation | None:
        conversation = self._held(conversation_id, holder)
        if conversation is None:
            return None
        waiting = self._put(conversation, state=HandoffState.WAITING, agent=None, assigned_at=None)
        return self._recorded(waiting, HandoffStep.UNASSIGNED)

    async def resolve(
        self,
        conversation_id: uuid.UUID,
        *,
        holder: str | None,
        closing: Closing | None,
        note: str | None = None,
    ) -> Conversation | None:
        conversation = self._held(conversation_id, holder)
        if conversation is None:
            return None
        return_to_bot = closing is None
        status = ConversationStatus.ACTIVE if return_to_bot else ConversationStatus.COMPLETED
        if closing is None:
            self._store.failures[conversation_id] = 0
        else:
            conversation = self._store.ended(conversation, closing, _now())
        conversation = dataclasses.replace(
            conversation, status=status, turns=0 if return_to_bot else conversation.turns
        )
        resolved = self._put(
            conversation, state=HandoffState.RESOLVED, resolved_at=_now(), note=note
        )
        step = HandoffStep.RETURNED_TO_BOT if return_to_bot else HandoffStep.COMPLETED
        return self._recorded(resolved, step)

    async def agent_message(
        self, conversation_id: uuid.UUID, agent: str, content: str
    ) -> tuple[Message, Conversation] | None:
        conversation = self._held(conversation_id, agent)
        if conversation is None:
            return None
        message = self._store._append(conversation_id, Role.AGENT, content, author=agent)
        handoff = conversation.handoff
        assert handoff is not None
        first = handoff.first_agent_reply_at or message.created_at
        conversation = dataclasses.replace(conversation, updated_at=message.created_at)
        self._store.events.append_message(conversation.goal_id, message)
        return message, self._put(conversation, first_agent_reply_at=first)


class MemoryEvaluations:
    """An ``EvaluationStore`` over ``MemoryConversations``' evaluations."""

    def __init__(self, conversations: MemoryConversations) -> None:
        self._store = conversations

    async def claim(self, now: datetime, lease_seconds: float, limit: int) -> list[JudgeJob]:
        due = sorted(
            (row.next_attempt_at, conversation_id)
            for conversation_id, row in self._store.evaluations.items()
            if row.evaluation.state is EvaluationState.PENDING and row.next_attempt_at <= now
        )
        jobs = []
        for _, conversation_id in due[:limit]:
            row = self._store.evaluations[conversation_id]
            attempts = row.evaluation.attempts + 1
            row.evaluation = dataclasses.replace(row.evaluation, attempts=attempts)
            row.next_attempt_at = now + timedelta(seconds=lease_seconds)
            jobs.append(JudgeJob(conversation_id, row.goal_id, attempts, row.evaluation.created_at))
        return jobs

    def _pending(self, conversation_id: uuid.UUID) -> _Judgement | None:
        row = self._store.evaluations.get(conversation_id)
        if row is None or row.evaluation.state is not EvaluationState.PENDING:
            return None
        return row

    async def judged(
        self, conversation_id: uuid.UUID, verdict: Verdict, model: str, now: datetime
    ) -> Conversation | None:
        row = self._pending(conversation_id)
        if row is None:
            return None
        row.evaluation = dataclasses.replace(
            row.evaluation,
            state=EvaluationState.DONE,
            label=verdict.label,
            score=verdict.score,
            explanation=verdict.explanation,
            model=model,
            evaluated_at=now,
            last_error=None,
        )
        conversation = self._store.conversations[conversation_id]
        assert conversation.ending is not None
        ending = dataclasses.replace(
            conversation.ending, outcome=verdict.label, source=OutcomeSource.JUDGE
        )
        judged = dataclasses.replace(conversation, ending=ending, evaluation=row.evaluation)
        self._store.conversations[conversation_id] = judged
        return judged

    async def retry(self, conversation_id: uuid.UUID, at: datetime, error: str) -> None:
        row = self._pending(conversation_id)
        if row is not None:
            row.next_attempt_at = at
            row.evaluation = dataclasses.replace(row.evaluation, last_error=error[:200])

    async def give_up(
        self, conversation_id: uuid.UUID, error: str, now: datetime
    ) -> Conversation | None:
        row = self._pending(conversation_id)
        if row is None:
            return None
        row.evaluation = dataclasses.replace(
            row.evaluation, state=EvaluationState.FAILED, last_error=error[:200], evaluated_at=now
        )
        conversation = self._store.conversations[conversation_id]
        return dataclasses.replace(conversation, evaluation=row.evaluation)

    async def pending(self) -> int:
        return sum(
            row.evaluation.state is EvaluationState.PENDING
            for row in self._store.evaluations.values()
        )


class MemoryKeys:
    """A ``KeyStore``."""

    def __init__(self, spend: dict[str, dict[date, int]] | None = None) -> None:
        self.keys: dict[str, ApiKey] = {}
        self.spend: dict[str, dict[date, int]] = spend if spend is not None else {}

    async def add(self, key: ApiKey) -> bool:
        if key.name in self.keys or any(k.digest == key.digest for k in self.keys.values()):
            return False
        self.keys[key.name] = key
        return True

    async def get(self, name: str) -> ApiKey | None:
        return self.keys.get(name)

    async def by_digest(self, digest: str) -> ApiKey | None:
        return next((k for k in self.keys.values() if k.digest == digest), None)

    async def all(self) -> list[ApiKey]:
        return [self.keys[name] for name in sorted(self.keys)]

    async def revoke(self, name: str, when: datetime) -> ApiKey | None:
        key = self.keys.get(name)
        if key is not None and key.revoked_at is None:
            key = self.keys[name] = dataclasses.replace(key, revoked_at=when)
        return key

    async def set_limits(self, name: str, limits: KeyLimits) -> ApiKey | None:
        key = self.keys.get(name)
        if key is not None:
            key = self.keys[name] = dataclasses.replace(key, limits=limits)
        return key

    async def touch(self, name: str, when: datetime) -> None:
        if name in self.keys:
            self.keys[name] = dataclasses.replace(self.keys[name], last_used_at=when)

    async def any_exist(self) -> bool:
        return bool(self.keys)

    async def spent(self, name: str, since: date) -> int:
        return _spent_since(self.spend, name, since)

    async def spent_daily(self, since: date) -> dict[str, dict[date, int]]:
        daily = {
            name: {day: cost for day, cost in days.items() if day >= since}
            for name, days in self.spend.items()
        }
        return {name: days for name, days in daily.items() if days}


class MemoryStore:
    """The fakes, wired to each other as the tables are (a goal in use stays)."""

    def __init__(self, *goals: Goal) -> None:
        self.goals = MemoryGoals(*goals)
        spend: dict[str, dict[date, int]] = {}
        self.conversations = MemoryConversations(self.goals, spend=spend)
        self.keys = MemoryKeys(spend)
        self.handoffs = MemoryHandoffs(self.conversations)
        self.events = self.conversations.events
        self.evaluations = MemoryEvaluations(self.conversations)
