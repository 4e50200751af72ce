"""Connects Parley's seams to ``parley.observability``: the one module that knows both.

- LLM calls: a gateway observer feeding ``LLMInstrumentation``.
- Business events: conversations created and escalated, by goal and reason.
- ``conversations_active``: read from the store at scrape time, so it is right after a
  restart and across worker processes.
- Database statements: SQLAlchemy engine events.
- Turns: each channel's stream of turn events, as it goes out, by channel and outcome.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from parley.bus import Hub
from parley.domain.errors import (
    DATABASE_ERROR_KINDS,
    DatabaseUnavailableError,
    DomainError,
    ReplyFailedError,
    TurnCrashedError,
    TurnInterruptedError,
)
from parley.domain.events import DeletionReason
from parley.domain.keys import KeyService
from parley.domain.models import (
    Conversation,
    ConversationStatus,
    EscalationReason,
    HandoffState,
    HandoffStep,
)
from parley.domain.turns import (
    Accepted,
    Done,
    Escalated,
    Failed,
    HeldForAgent,
    Token,
    TurnEvent,
    TurnTimings,
)
from parley.llm import ChatMessage, LLMCallInfo, LLMError, LLMErrorKind, RateLimit, Role, Usage
from parley.llm.prices import estimate_cost
from parley.observability import (
    OTHER,
    BusinessMetrics,
    CappedLabel,
    DatabaseMetrics,
    HandoffMetrics,
    Instrumentation,
    LiveMetrics,
    LLMCall,
    LLMInstrumentation,
    LLMMetrics,
    OutcomeMetrics,
    TurnMetrics,
    WebhookMetrics,
)
from parley.observability.catalogue import WEBHOOK_OUTCOMES
from parley.observability.sqlalchemy import instrument_engine
from parley.observability.tracing import span_link, unsampled_parent
from parley.store import Store
from parley.webhooks import WEBHOOK_TYPES

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

LLM_ERROR_TYPES = tuple(kind.value for kind in LLMErrorKind)
_db_log = structlog.get_logger("parley.store")


class LLMTelemetry:
    """A gateway observer: every provider call is measured and logged here, and, with
    tracing on, is a GenAI client span (the semantic conventions of SEMCONV_VERSION). With
    ``capture_content`` (PARLEY_LOG_CONTENT, the conventions' opt-in) the span also holds
    the messages sent and the reply."""

    def __init__(
        self,
        instrumentation: LLMInstrumentation,
        tracer: Tracer | None = None,
        *,
        capture_content: bool = False,
    ) -> None:
        self.instrumentation = instrumentation
        self.tracer = tracer
        self.capture_content = capture_content

    def call_started(self, call: LLMCallInfo) -> _CallRecorder:
        span = None if self.tracer is None or unsampled_parent() else _llm_span(self.tracer, call)
        if span is not None and self.capture_content:
            span.set_attributes(input_messages(call.messages))
        return _CallRecorder(
            self.instrumentation.start(
                call.model,
                streaming=call.streaming,
                provider=call.provider,
                operation=call.operation.value,
            ),
            call,
            span,
            wants_content=span is not None and self.capture_content,
        )


def input_messages(messages: tuple[ChatMessage, ...]) -> dict[str, str]:
    """``gen_ai.system_instructions`` and ``gen_ai.input.messages``, as the conventions
    give them: JSON, each message a role and its parts."""
    system = [_text(m.content) for m in messages if m.role is Role.SYSTEM]
    sent = [
        {"role": m.role.value, "parts": [_text(m.content)]}
        for m in messages
        if m.role is not Role.SYSTEM
    ]
    attributes = {"gen_ai.input.messages": json.dumps(sent, ensure_ascii=False)}
    if system:
        attributes["gen_ai.system_instructions"] = json.dumps(system, ensure_ascii=False)
    return attributes


def output_messages(content: str, finish_reason: str | None) -> str:
    """``gen_ai.output.messages``: the reply, as the conventions give it."""
    reply = {"role": "assistant", "parts": [_text(content)], "finish_reason": finish_reason}
    return json.dumps([reply], ensure_ascii=False)


def _text(content: str) -> dict[str, str]:
    return {"type": "text", "content": content}


def _llm_span(tracer: Tracer, call: LLMCallInfo) -> Span:
    """The GenAI client span of one logical call (its retries are events on it)."""
    from opentelemetry.trace import SpanKind

    attributes: dict[str, str | int] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": call.provider,
        "gen_ai.request.model": call.model,
        "parley.llm.operation": call.operation.value,  # chat, or the judge's
    }
    if call.conversation_id is not None:
        attributes["gen_ai.conversation.id"] = call.conversation_id
    if call.max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = call.max_tokens
    return tracer.start_span(f"chat {call.model}", kind=SpanKind.CLIENT, attributes=attributes)


class _CallRecorder:
    def __init__(
        self, call: LLMCall, info: LLMCallInfo, span: Span | None, *, wants_content: bool
    ) -> None:
        self._call = call
        self._info = info
        self._span = span
        self.wants_content = wants_content

    def propagation_headers(self) -> Mapping[str, str]:
        if self._span is None:
            return {}
        from opentelemetry import propagate, trace

        headers: dict[str, str] = {}
        propagate.inject(headers, context=trace.set_span_in_context(self._span))
        return headers

    def retrying(self, error: LLMError, attempt: int, wait_seconds: float) -> None:
        self._headroom(error.rate_limit)
        self._call.retry(error.kind, attempt, wait_seconds)
        if self._span is not None:
            self._span.add_event(
                "gen_ai.client.retry",
                {"error.type": error.kind.value, "attempt": attempt, "wait_seconds": wait_seconds},
            )

    def _headroom(self, rate_limit: RateLimit | None) -> None:
        if rate_limit is not None:
            self._call.headroom(rate_limit.remaining_requests, rate_limit.remaining_tokens)

    def first_token(self) -> None:
        self._call.first_token()

    def succeeded(
        self,
        usage: Usage | None,
        rate_limit: RateLimit | None,
        *,
        response_model: str | None = None,
        finish_reason: str | None = None,
        content: str | None = None,
    ) -> None:
        self._call.succeeded(
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
            cached_prompt_tokens=usage.cached_prompt_tokens if usage else None,
            remaining_requests=rate_limit.remaining_requests if rate_limit else None,
            remaining_tokens=rate_limit.remaining_tokens if rate_limit else None,
            cost_usd=estimate_cost(self._info.model, usage, self._info.provider),
            response_model=response_model,
        )
        if self._span is not None:
            span = self._span
            span.set_attribute("gen_ai.response.model", response_model or self._info.model)
            if finish_reason is not None:
                span.set_attribute("gen_ai.response.finish_reasons", (finish_reason,))
            if usage is not None:
                span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
            if content is not None and self.wants_content:
                span.set_attribute(
                    "gen_ai.output.messages", output_messages(content, finish_reason)
                )
            span.end()

    def failed(self, error: LLMError, usage: Usage | None = None) -> None:
        self._headroom(error.rate_limit)
        self._call.failed(
            error.kind,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
            cached_prompt_tokens=usage.cached_prompt_tokens if usage else None,
            cost_usd=estimate_cost(self._info.model, usage, self._info.provider),
        )
        if self._span is not None:
            from opentelemetry.trace import StatusCode

            self._span.set_attribute("error.type", error.kind.value)
            self._span.set_status(StatusCode.ERROR, error.kind.value)
            self._span.end()


class ConversationMetrics:
    """Business events as metrics. Goal ids are capped: goals are created over the API."""

    def __init__(
        self,
        metrics: BusinessMetrics,
        goal_label: CappedLabel,
        key_label: CappedLabel,
        handoff: HandoffMetrics,
        outcomes: OutcomeMetrics,
    ) -> None:
        self.metrics = metrics
        self.goal_label = goal_label
        self.key_label = key_label
        self.handoff = handoff
        self.outcomes = outcomes
        for reason in EscalationReason:
            metrics.escalations.labels(reason.value)
        for deletion in DeletionReason:
            outcomes.deleted.labels(deletion.value)

    def label_goals(self, goal_ids: list[str]) -> None:
        """The goals that get a label of their own: the oldest ones, the same on every
        replica (read from the goals table), so the bound holds per cluster."""
        for goal_id in self.goal_label.replace(goal_ids):
            self.metrics.conversations_created.labels(goal_id)

    def label_keys(self, names: list[str]) -> None:
        """The keys that get a key_name label of their own: the oldest ones (bootstrap
        keys first), the same on every replica."""
        self.key_label.replace(names)

    def conversation_created(self, conversation: Conversation) -> None:
        self.metrics.conversations_created.labels(self.goal_label(conversation.goal_id)).inc()

    def conversation_escalated(self, conversation: Conversation, reason: EscalationReason) -> None:
        self.metrics.escalations.labels(reason.value).inc()
        self.handoff.handoffs.labels(self.goal_label(conversation.goal_id), reason.value).inc()

    def conversation_closed(self, conversation: Conversation, previous: ConversationStatus) -> None:
        # conversations_active is read from the store at scrape time
        self._ended(conversation)

    def _ended(self, conversation: Conversation) -> None:
        """Counted once, with its final outcome: at its end, or (judged) at the verdict."""
        ending = conversation.ending
        if ending is None or ending.source is None or conversation.judging:
            return
        escalated = "true" if conversation.escalation is not None else "false"
        goal, outcome = self.goal_label(conversation.goal_id), ending.outcome.value
        self.metrics.conversations_ended.labels(goal, outcome, ending.source.value, escalated).inc()
        self.outcomes.turns.labels(goal, outcome).observe(ending.turns)
        lived = _seconds(conversation.created_at, ending.ended_at)
        self.outcomes.duration.labels(goal, outcome).observe(lived)

    def conversation_judged(self, conversation: Conversation) -> None:
        evaluation = conversation.evaluation
        if evaluation is None:
            return
        label = evaluation.label.value if evaluation.label is not None else "error"
        self.outcomes.evaluations.labels(self.goal_label(conversation.goal_id), label).inc()
        self._ended(conversation)

    def conversations_deleted(self, count: int, reason: DeletionReason) -> None:
        self.outcomes.deleted.labels(reason.value).inc(count)

    def handoff_changed(self, conversation: Conversation, step: HandoffStep) -> None:
        handoff, m = conversation.handoff, self.handoff
        if handoff is None:
            return
        goal = self.goal_label(conversation.goal_id)
        match step:
            case HandoffStep.ASSIGNED if handoff.assigned_at is not None:
                m.wait.labels(goal).observe(_seconds(handoff.escalated_at, handoff.assigned_at))
            case HandoffStep.FIRST_REPLY if handoff.first_agent_reply_at is not None:
                since = _seconds(handoff.escalated_at, handoff.first_agent_reply_at)
                m.first_response.labels(goal).observe(since)
            case HandoffStep.RETURNED_TO_BOT | HandoffStep.COMPLETED:
                m.resolved.labels(goal, step.value).inc()
                if step is HandoffStep.COMPLETED:  # the agent ended it
                    self._ended(conversation)
                if handoff.resolved_at is not None:
                    since = _seconds(handoff.escalated_at, handoff.resolved_at)
                    m.resolution.labels(goal).observe(since)
            case HandoffStep.ABANDONED:
                m.abandoned.labels(goal).inc()
            case _:
                pass


class ConversationTraces:
    """With tracing on: each step of a handoff as an event on the span of the request
    that took it, and each conversation's final outcome as the GenAI conventions'
    ``gen_ai.evaluation.result`` event, on a span of its own: under the request that ended
    it (a close, an agent's resolve), or its own trace (the judge, the idle sweep); the
    conversation's id is an attribute either way."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def conversation_created(self, conversation: Conversation) -> None: ...

    def conversation_escalated(
        self, conversation: Conversation, reason: EscalationReason
    ) -> None: ...

    def conversation_closed(self, conversation: Conversation, previous: ConversationStatus) -> None:
        self._evaluated(conversation)

    def handoff_changed(self, conversation: Conversation, step: HandoffStep) -> None:
        from opentelemetry import trace

        handoff = conversation.handoff
        trace.get_current_span().add_event(
            f"parley.handoff.{step.value}",
            {
                "gen_ai.conversation.id": str(conversation.id),
                "parley.goal.id": conversation.goal_id,
                "parley.handoff.agent": (handoff.agent if handoff else None) or "",
            },
        )
        if step is HandoffStep.COMPLETED:
            self._evaluated(conversation)

    def conversation_judged(self, conversation: Conversation) -> None:
        self._evaluated(conversation)

    def conversations_deleted(self, count: int, reason: DeletionReason) -> None: ...

    def _evaluated(self, conversation: Conversation) -> None:
        ending = conversation.ending
        if ending is None or conversation.judging:
            return  # the judge's verdict tells it
        result: dict[str, str | float] = {
            "gen_ai.evaluation.name": "goal_success",
            "gen_ai.evaluation.score.label": ending.outcome.value,
            "parley.outcome.source": ending.source.value if ending.source else "unknown",
        }
        evaluation = conversation.evaluation
        if evaluation is not None and evaluation.score is not None:
            result["gen_ai.evaluation.score.value"] = evaluation.score
        if evaluation is not None and evaluation.explanation:
            result["gen_ai.evaluation.explanation"] = evaluation.explanation
        if evaluation is not None and evaluation.last_error:
            result["error.type"] = evaluation.last_error.split(":", 1)[0]
        # The judge's verdict comes in a trace of its own, linked to the request's that
        # ended the conversation (when that one was sampled).
        origin = evaluation.origin_trace if evaluation is not None else None
        link = span_link(origin) if origin is not None else None
        span = self.tracer.start_span(
            "evaluate goal_success",
            attributes={
                "gen_ai.conversation.id": str(conversation.id),
                "parley.goal.id": conversation.goal_id,
            },
            links=[link] if link is not None else None,
        )
        span.add_event("gen_ai.evaluation.result", result)
        span.end()


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


def handoff_queue_hook(
    store: Store, metrics: HandoffMetrics, goal_label: CappedLabel
) -> Callable[[], Awaitable[None]]:
    """The queue's depth and oldest wait, read from the store at scrape time (one indexed
    query), so they are true across replicas and workers."""

    # A goal's depth once seen stays a series (0 when its queue empties), so a panel and
    # an alert read 0, not a gap; goals are capped, so these are bounded too.
    seen: set[tuple[str, str]] = set()

    async def refresh_handoff_queue() -> None:
        rows = await store.handoffs.queue_stats()
        now = datetime.now(UTC)
        depth: dict[tuple[str, str], int] = {}
        oldest: dict[str, float] = {}
        for goal_id, state, count, first in rows:
            goal = goal_label(goal_id)
            depth[goal, state.value] = depth.get((goal, state.value), 0) + count
            if state is HandoffState.WAITING:
                oldest[goal] = max(oldest.get(goal, 0.0), _seconds(first, now))
        metrics.oldest_waiting.clear()
        seen.update(depth)
        for goal, state_name in seen:
            metrics.queue_depth.labels(goal, state_name).set(depth.get((goal, state_name), 0))
        for goal, seconds in oldest.items():
            metrics.oldest_waiting.labels(goal).set(seconds)

    return refresh_handoff_queue


def judge_queue_hook(store: Store, metrics: OutcomeMetrics) -> Callable[[], Awaitable[None]]:
    """The judge's backlog, from the store: the same on every replica."""

    async def refresh_judge_queue() -> None:
        metrics.evaluations_pending.set(await store.evaluations.pending())

    return refresh_judge_queue


def webhook_outbox_hook(store: Store, metrics: WebhookMetrics) -> Callable[[], Awaitable[None]]:
    """The outbox's backlog, from the store: the same on every replica."""

    async def refresh_webhook_outbox() -> None:
        pending, oldest = await store.outbox.stats()
        metrics.pending.set(pending)
        age = 0.0 if oldest is None else _seconds(oldest, datetime.now(UTC))
        metrics.oldest_pending.set(age)

    return refresh_webhook_outbox


def label_webhooks(metrics: WebhookMetrics) -> None:
    """Every delivery series from the start, webhooks configured or not: a rate of 0
    (and an alert that can evaluate), not a gap."""
    for event in WEBHOOK_TYPES:
        for outcome in WEBHOOK_OUTCOMES:
            metrics.deliveries.labels(event, outcome)


def webhook_attempts(metrics: WebhookMetrics) -> Callable[[str, str, float], None]:
    def observe(event: str, outcome: str, seconds: float) -> None:
        metrics.deliveries.labels(event, outcome).inc()
        metrics.duration.observe(seconds)

    return observe


def live_streams_hook(hub: Hub, metrics: LiveMetrics) -> Callable[[], Awaitable[None]]:
    async def refresh_live_streams() -> None:
        for stream, count in hub.counts().items():
            metrics.streams_open.labels(stream).set(count)

    return refresh_live_streams


def active_conversations_hook(
    store: Store, metrics: BusinessMetrics
) -> Callable[[], Awaitable[None]]:
    async def refresh_conversations_active() -> None:
        metrics.conversations_active.set(await store.conversations.count_active())

    return refresh_conversations_active


def key_budgets_hook(
    keys: KeyService, metrics: BusinessMetrics, key_label: CappedLabel
) -> Callable[[], Awaitable[None]]:
    """The budget gauges, read from the store at scrape time (one read of the keys, one of
    the spend): the same on every replica, right after a restart."""

    async def refresh_key_budgets() -> None:
        budgeted = [
            key
            for key in await keys.all()
            if key.limits.budget_usd is not None and key.revoked_at is None
        ]
        spends = await keys.spends(budgeted)
        metrics.key_budget.clear()
        metrics.key_budget_remaining.clear()
        for key in budgeted:
            name = key_label(key.name)
            if name == OTHER:  # a gauge per key or none: "other" would mix budgets
                continue
            spend = spends[key.name]
            metrics.key_budget.labels(name).set(spend.budget_usd or 0.0)
            metrics.key_budget_remaining.labels(name).set(spend.remaining_usd or 0.0)

    return refresh_key_budgets


def instrument_store(
    store: Store, instrumentation: Instrumentation, tracer: Tracer | None = None
) -> DatabaseMetrics:
    metrics = DatabaseMetrics.register(instrumentation.registry)
    for engine in store.database.engines:
        instrument_engine(engine, metrics, tracer)
    store.database.on_unavailable = DatabaseErrors(metrics).unavailable
    return metrics


class DatabaseErrors:
    """The database found unavailable: counted every time, logged once per kind and
    ``quiet_seconds`` (with how many since), never a traceback per request."""

    def __init__(
        self,
        metrics: DatabaseMetrics,
        quiet_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.quiet_seconds = quiet_seconds
        self.clock = clock
        self._logged: dict[str, float] = {}
        self._since: dict[str, int] = dict.fromkeys(DATABASE_ERROR_KINDS, 0)
        for kind in DATABASE_ERROR_KINDS:
            metrics.errors.labels(kind)

    def unavailable(self, kind: str, error: BaseException) -> None:
        self.metrics.errors.labels(kind).inc()
        self._since[kind] += 1
        now = self.clock()
        if now - self._logged.get(kind, -self.quiet_seconds) < self.quiet_seconds:
            return
        self._logged[kind] = now
        _db_log.warning(
            "database_unavailable",
            kind=kind,
            error_type=type(error).__name__,
            cause=type(getattr(error, "orig", None) or error.__cause__ or error).__name__,
            times=self._since[kind],
        )
        self._since[kind] = 0


def instrument_llm(
    instrumentation: Instrumentation,
    models: tuple[str, ...],
    key_label: CappedLabel,
    tracer: Tracer | None = None,
    *,
    capture_content: bool = False,
) -> LLMTelemetry:
    metrics = LLMMetrics.register(instrumentation.registry)
    return LLMTelemetry(
        LLMInstrumentation(
            metrics, models=models, error_types=LLM_ERROR_TYPES, key_names=key_label
        ),
        tracer,
        capture_content=capture_content,
    )


def failed_outcome(error: DomainError) -> str:
    """What failed a turn, as its outcome: a bug must never read as a shutdown."""
    match error:
        case ReplyFailedError():
            return "llm_error"
        case TurnCrashedError():
            return "crashed"
        case TurnInterruptedError():
            return "interrupted"
        case DatabaseUnavailableError():
            return "db_error"
        case _:  # refused once it had started (the conversation changed meanwhile)
            return "rejected"


class TurnTelemetry:
    """A turn's events, as a channel sends them, become the turn metrics: the outcome, the
    time to the first token sent and to the last event sent."""

    def __init__(
        self,
        metrics: TurnMetrics,
        clock: Callable[[], float] = time.perf_counter,
        tracer: Tracer | None = None,
    ):
        self.metrics = metrics
        self.clock = clock
        self.tracer = tracer

    def begin(self, channel: str, conversation_id: object) -> TurnTrace | None:
        """With tracing on: the turn's span, current until ``detach`` (call it once the
        turn has started: its task, created by then, runs under the span); None when off."""
        if self.tracer is None or unsampled_parent():
            return None
        return TurnTrace(self.tracer, channel, str(conversation_id))

    def rejected(self, channel: str, trace: TurnTrace | None = None) -> None:
        """The turn was refused as the client's error before its message was stored (409,
        413, 422, 429)."""
        self.metrics.turns.labels(channel, "rejected").inc()
        if trace is not None:
            trace.end("rejected")

    def refused(self, channel: str, error: DomainError, trace: TurnTrace | None = None) -> None:
        """The turn was refused before its message was stored: by the client's error
        (``rejected``), or because the database failed (``db_error``, a failed turn: a 503
        on the messages route is an outage, not the client's doing)."""
        outcome = "db_error" if isinstance(error, DatabaseUnavailableError) else "rejected"
        self.metrics.turns.labels(channel, outcome).inc()
        if trace is not None:
            trace.end(outcome, error.code)

    async def observe(
        self,
        channel: str,
        events: AsyncIterator[TurnEvent],
        timings: TurnTimings | None = None,
        trace: TurnTrace | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        started: float | None = None
        first_token_sent = False
        self.metrics.in_flight.inc()
        outcome = "cancelled"  # unless an end is seen: the client left, or the request ended
        error_code: str | None = None
        try:
            async for event in events:
                match event:
                    case Accepted(conversation):
                        started = self.clock()
                        if trace is not None:
                            trace.span.set_attribute("parley.goal.id", conversation.goal_id)
                    case Done():
                        outcome = "ok"
                    case Escalated() if outcome == "cancelled":
                        outcome = "escalated"
                    case HeldForAgent():
                        outcome = "handoff"
                    case Failed(error):
                        outcome = failed_outcome(error)
                        error_code = error.code
                yield event  # resumed once the channel has sent it
                if isinstance(event, Token) and not first_token_sent and started is not None:
                    first_token_sent = True
                    self.metrics.ttft.labels(channel).observe(self.clock() - started)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.turns.labels(channel, outcome).inc()
            if started is not None:
                self.metrics.duration.labels(channel).observe(self.clock() - started)
            if timings is not None:
                self.metrics.overhead.labels(channel).observe(timings.overhead())
            if trace is not None:
                trace.end(outcome, error_code)


# Turn outcomes that are Parley's failure (the span's status is an error).
_FAILED_OUTCOMES = frozenset({"llm_error", "interrupted", "crashed", "db_error"})


class TurnTrace:
    """A turn's span (tracing on): current from its start until ``detach``, ended with its
    outcome. The conversation and goal are attributes, never metric labels."""

    __slots__ = ("_token", "span")

    def __init__(self, tracer: Tracer, channel: str, conversation_id: str) -> None:
        from opentelemetry import context, trace

        self.span = tracer.start_span(
            "turn",
            attributes={"parley.turn.channel": channel, "gen_ai.conversation.id": conversation_id},
        )
        self._token: object | None = context.attach(trace.set_span_in_context(self.span))

    def detach(self) -> None:
        from opentelemetry import context

        if self._token is not None:
            context.detach(self._token)  # type: ignore[arg-type]
            self._token = None

    def end(self, outcome: str, error_code: str | None = None) -> None:
        self.detach()
        self.span.set_attribute("parley.turn.outcome", outcome)
        if outcome in _FAILED_OUTCOMES:
            from opentelemetry.trace import StatusCode

            self.span.set_attribute("error.type", error_code or outcome)
            self.span.set_status(StatusCode.ERROR, outcome)
        self.span.end()
