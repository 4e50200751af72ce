"""Every metric Parley exposes, defined once: name, help, type, labels and buckets.

Metrics come in groups so that an app can register only what it uses
(``instrument_app`` registers the HTTP and WebSocket groups). Names and label sets
follow the metrics guideline; see docs/metrics.md, which a test keeps in step.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    disable_created_metrics,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

HTTP_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0)
# To the guideline's slow buckets: real models (reasoning ones above all) run to minutes.
LLM_LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
# Time to first token sits well under a whole call: finer at the low end.
LLM_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
# The GenAI semantic conventions' recommended boundaries (gen_ai.client.operation.duration
# and gen_ai.client.token.usage), as they state them.
GENAI_DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
GENAI_TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
# gen_ai.provider.name: the providers Parley has (any other reads "other").
LLM_PROVIDERS = ("groq", "simulated")
GENAI_TOKEN_TYPES = ("input", "output")
LLM_TPOT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
FAST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)

# cached_prompt: the part of prompt the provider served from its cache (billed lower).
TOKEN_TYPES = ("prompt", "cached_prompt", "completion", "total")
STREAM_MODES = ("streaming", "non_streaming")
LLM_STATUSES = ("success", "error")
# What an LLM call was for: a turn's reply, or the judge grading an ended conversation.
LLM_OPERATIONS = ("chat", "judge")
WS_DIRECTIONS = ("inbound", "outbound")
TURN_CHANNELS = ("http", "sse", "ws")
TURN_OUTCOMES = (
    "ok",
    "escalated",
    "handoff",  # the message went to the human agent who has the conversation
    "llm_error",
    "rejected",
    "cancelled",
    "interrupted",
    "crashed",
    "db_error",
)
TURN_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
TURN_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# Parley's own share of a turn: milliseconds when healthy, so the buckets start there.
TURN_OVERHEAD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

__all__ = [
    "BusinessMetrics",
    "DatabaseMetrics",
    "HttpMetrics",
    "LLMMetrics",
    "LabelGuardMetrics",
    "WebSocketMetrics",
    "new_registry",
]


def new_registry(*, process_collectors: bool = True) -> CollectorRegistry:
    """A fresh registry with the process, platform and GC collectors that the
    default registry would have had (a fresh one per app keeps tests independent)."""
    # The *_created series double the exposition for no query anyone writes here.
    disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client is untyped here
    registry = CollectorRegistry(auto_describe=True)
    if process_collectors:
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


@dataclass(frozen=True, slots=True)
class HttpMetrics:
    requests: Counter
    duration: Histogram
    errors: Counter
    in_flight: Gauge
    event_loop_lag: Gauge

    @classmethod
    def register(cls, registry: CollectorRegistry) -> HttpMetrics:
        return cls(
            requests=Counter(
                "http_requests_total",
                "HTTP requests, counted once each after the response, by route template, "
                "method and final status.",
                ["path", "method", "status"],
                registry=registry,
            ),
            duration=Histogram(
                "http_request_duration_seconds",
                "Time from request to the last byte of the response, by route template and method.",
                ["path", "method"],
                buckets=HTTP_DURATION_BUCKETS,
                registry=registry,
            ),
            errors=Counter(
                "api_errors_total",
                "Error responses by error type, error code and route template.",
                ["error_type", "error_code", "path"],
                registry=registry,
            ),
            in_flight=Gauge(
                "http_requests_in_flight",
                "HTTP requests being served now (saturation).",
                registry=registry,
                multiprocess_mode="livesum",
            ),
            event_loop_lag=Gauge(
                "event_loop_lag_seconds",
                "How late the event loop ran a timer at the last check: work that blocks it "
                "delays every request (saturation). The worst process under --workers.",
                registry=registry,
                multiprocess_mode="livemax",
            ),
        )


@dataclass(frozen=True, slots=True)
class WebSocketMetrics:
    connections: Gauge
    messages: Counter
    message_size: Summary

    @classmethod
    def register(cls, registry: CollectorRegistry) -> WebSocketMetrics:
        metrics = cls(
            connections=Gauge(
                "ws_connections_active",
                "WebSocket connections open now.",
                registry=registry,
                multiprocess_mode="livesum",
            ),
            messages=Counter(
                "ws_messages_total",
                "WebSocket messages by direction (inbound, outbound).",
                ["direction"],
                registry=registry,
            ),
            message_size=Summary(
                "ws_message_size_bytes",
                "Size of WebSocket messages by direction; count and sum only.",
                ["direction"],
                registry=registry,
            ),
        )
        for direction in WS_DIRECTIONS:
            metrics.messages.labels(direction)
            metrics.message_size.labels(direction)
        return metrics


@dataclass(frozen=True, slots=True)
class LLMMetrics:
    requests: Counter
    in_flight: Gauge
    latency: Histogram
    ttft: Histogram
    time_per_output_token: Histogram
    tokens: Counter
    errors: Counter
    retries: Counter
    rate_limit_remaining_requests: Gauge
    rate_limit_remaining_tokens: Gauge
    cost: Counter
    genai_duration: Histogram
    genai_tokens: Histogram

    @classmethod
    def register(cls, registry: CollectorRegistry) -> LLMMetrics:
        return cls(
            requests=Counter(
                "llm_requests_total",
                "LLM calls (all attempts of one call count once) by model, stream mode, "
                "outcome and operation (chat: a turn's reply; judge: grading an ended "
                "conversation).",
                ["model", "stream_mode", "status", "operation"],
                registry=registry,
            ),
            in_flight=Gauge(
                "llm_requests_in_flight",
                "LLM calls started and not yet ended: with no completions, a hung provider.",
                ["model"],
                registry=registry,
                multiprocess_mode="livesum",
            ),
            latency=Histogram(
                "llm_latency_seconds",
                "Duration of LLM calls, retries included; for streams, to the last chunk.",
                ["model", "stream_mode"],
                buckets=LLM_LATENCY_BUCKETS,
                registry=registry,
            ),
            ttft=Histogram(
                "llm_ttft_seconds",
                "Time to the first chunk that carries content, for streamed calls.",
                ["model"],
                buckets=LLM_TTFT_BUCKETS,
                registry=registry,
            ),
            time_per_output_token=Histogram(
                "llm_time_per_output_token_seconds",
                "Mean time between output tokens after the first, one observation per stream.",
                ["model"],
                buckets=LLM_TPOT_BUCKETS,
                registry=registry,
            ),
            tokens=Counter(
                "llm_tokens_used_total",
                "Tokens billed, by model and type (prompt, cached_prompt: the part of prompt "
                "served from the provider's cache, completion, total): as the provider "
                "reported them, or for a call stopped midway, the prompt and chunks received.",
                ["model", "type"],
                registry=registry,
            ),
            errors=Counter(
                "llm_errors_total",
                "Failed LLM calls by model and error type (after retries).",
                ["model", "error_type"],
                registry=registry,
            ),
            retries=Counter(
                "llm_retries_total",
                "Retried LLM attempts by model and the error that caused the retry.",
                ["model", "error_type"],
                registry=registry,
            ),
            rate_limit_remaining_requests=Gauge(
                "llm_rate_limit_remaining_requests",
                "Requests left in the provider's rate-limit window, as last reported.",
                ["model"],
                registry=registry,
                multiprocess_mode="mostrecent",
            ),
            rate_limit_remaining_tokens=Gauge(
                "llm_rate_limit_remaining_tokens",
                "Tokens left in the provider's rate-limit window, as last reported.",
                ["model"],
                registry=registry,
                multiprocess_mode="mostrecent",
            ),
            cost=Counter(
                "llm_cost_usd_total",
                "Estimated spend in US dollars, from token usage and the price table, by "
                "model, the API key that caused it (capped; overflow goes to 'other'; "
                "empty: no key, development mode, or the judge) and operation (chat, judge).",
                ["model", "key_name", "operation"],
                registry=registry,
            ),
            # The OpenTelemetry GenAI client metrics under their Prometheus names, the
            # conventions' attributes as labels (semconv 1.41; docs/metrics.md).
            genai_duration=Histogram(
                "gen_ai_client_operation_duration_seconds",
                "GenAI operation duration (OpenTelemetry gen_ai.client.operation.duration): "
                "the same calls as llm_latency_seconds, by operation, provider, requested and "
                "answering model, and error type (empty: none).",
                [
                    "gen_ai_operation_name",
                    "gen_ai_provider_name",
                    "gen_ai_request_model",
                    "gen_ai_response_model",
                    "error_type",
                ],
                buckets=GENAI_DURATION_BUCKETS,
                registry=registry,
            ),
            genai_tokens=Histogram(
                "gen_ai_client_token_usage",
                "Tokens per GenAI operation (OpenTelemetry gen_ai.client.token.usage), input "
                "and output, as the provider reported them.",
                [
                    "gen_ai_operation_name",
                    "gen_ai_provider_name",
                    "gen_ai_request_model",
                    "gen_ai_response_model",
                    "gen_ai_token_type",
                ],
                buckets=GENAI_TOKEN_BUCKETS,
                registry=registry,
            ),
        )

    def precreate(self, models: tuple[str, ...], error_types: tuple[str, ...]) -> None:
        """Create the series we know of, so rate() sees their first increment."""
        for model in models:
            for mode in STREAM_MODES:
                self.latency.labels(model, mode)
                for status in LLM_STATUSES:
                    self.requests.labels(model, mode, status, "chat")
            for status in LLM_STATUSES:  # the judge's calls are whole, never streamed
                self.requests.labels(model, "non_streaming", status, "judge")
            self.ttft.labels(model)
            self.in_flight.labels(model)
            self.time_per_output_token.labels(model)
            for operation in LLM_OPERATIONS:
                self.cost.labels(model, "", operation)
            for token_type in TOKEN_TYPES:
                self.tokens.labels(model, token_type)
            for error_type in error_types:
                self.errors.labels(model, error_type)
                self.retries.labels(model, error_type)


@dataclass(frozen=True, slots=True)
class DatabaseMetrics:
    queries: Counter
    duration: Histogram
    connections_in_use: Gauge
    errors: Counter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> DatabaseMetrics:
        return cls(
            queries=Counter(
                "db_queries_total",
                "Database statements by operation (select, insert, update, delete, other).",
                ["operation"],
                registry=registry,
            ),
            duration=Histogram(
                "db_query_duration_seconds",
                "Database statement duration by operation.",
                ["operation"],
                buckets=FAST_BUCKETS,
                registry=registry,
            ),
            connections_in_use=Gauge(
                "db_connections_in_use",
                "Pooled database connections checked out now (saturation: near the pool "
                "size, requests wait for a connection).",
                registry=registry,
                multiprocess_mode="livesum",
            ),
            errors=Counter(
                "db_errors_total",
                "Operations refused because the database was unavailable (answered 503), by "
                "kind: refused, reset, timeout, disk_full, read_only, other.",
                ["kind"],
                registry=registry,
            ),
        )


@dataclass(frozen=True, slots=True)
class LimiterMetrics:
    errors: Counter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> LimiterMetrics:
        return cls(
            errors=Counter(
                "rate_limiter_errors_total",
                "Rate-limit checks that could not reach the shared limiter (Redis): let "
                "through or refused as PARLEY_RATE_LIMIT_FAILURE_MODE says.",
                registry=registry,
            )
        )


WEBHOOK_OUTCOMES = ("delivered", "retry", "failed")
# A receiver answers in milliseconds, or times out (10 s by default).
WEBHOOK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True, slots=True)
class WebhookMetrics:
    deliveries: Counter
    duration: Histogram
    pending: Gauge
    oldest_pending: Gauge

    @classmethod
    def register(cls, registry: CollectorRegistry) -> WebhookMetrics:
        return cls(
            deliveries=Counter(
                "webhook_deliveries_total",
                "Webhook delivery attempts, by event type and outcome (delivered; retry: "
                "failed, tried again later; failed: given up, listed by parley webhooks failed).",
                ["event", "outcome"],
                registry=registry,
            ),
            duration=Histogram(
                "webhook_delivery_duration_seconds",
                "One delivery attempt, from the request sent to the receiver's answer (or "
                "the timeout).",
                buckets=WEBHOOK_BUCKETS,
                registry=registry,
            ),
            pending=Gauge(
                "webhook_outbox_pending",
                "Webhook deliveries not yet made (waiting or between retries), read from "
                "the store at scrape time.",
                registry=registry,
                multiprocess_mode="mostrecent",
            ),
            oldest_pending=Gauge(
                "webhook_outbox_oldest_pending_seconds",
                "How long the oldest pending webhook delivery has been queued (0: none), "
                "read from the store at scrape time.",
                registry=registry,
                multiprocess_mode="mostrecent",
            ),
        )


LIVE_STREAMS = ("conversation", "queue")


@dataclass(frozen=True, slots=True)
class LiveMetrics:
    """The live event streams (SSE and the conversation WebSocket's pushed events)."""

    streams_open: Gauge
    listener_errors: Counter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> LiveMetrics:
        streams_open = Gauge(
            "live_streams_open",
            "Live event streams this process serves now, by stream (conversation: one "
            "conversation's, on SSE or a WebSocket; queue: the handoff queue's).",
            ["stream"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        for stream in LIVE_STREAMS:
            streams_open.labels(stream)
        return cls(
            streams_open=streams_open,
            listener_errors=Counter(
                "live_listener_errors_total",
                "Times the PostgreSQL LISTEN connection that carries other replicas' events "
                "and key changes was lost or could not be opened (streams fall back to "
                "reading the event log at each heartbeat, and every request reads its key, "
                "until it is back).",
                registry=registry,
            ),
        )


# From seconds to a working day: a handoff is picked up in seconds when agents are free,
# in hours when they are not.
HANDOFF_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800)
HANDOFF_RESOLUTIONS = ("returned_to_bot", "completed")
HANDOFF_QUEUE_STATES = ("waiting", "assigned")


@dataclass(frozen=True, slots=True)
class HandoffMetrics:
    """The human handoff, the way contact centres measure it. Goal ids are capped."""

    handoffs: Counter
    resolved: Counter
    abandoned: Counter
    wait: Histogram
    first_response: Histogram
    resolution: Histogram
    queue_depth: Gauge
    oldest_waiting: Gauge

    @classmethod
    def register(cls, registry: CollectorRegistry) -> HandoffMetrics:
        return cls(
            handoffs=Counter(
                "handoffs_total",
                "Conversations handed to the human agents' queue, by goal and reason.",
                ["goal_id", "reason"],
                registry=registry,
            ),
            resolved=Counter(
                "handoffs_resolved_total",
                "Handoffs an agent resolved, by goal and resolution (returned_to_bot, completed).",
                ["goal_id", "resolution"],
                registry=registry,
            ),
            abandoned=Counter(
                "handoffs_abandoned_total",
                "Handoffs whose customer left while waiting for an agent, by goal.",
                ["goal_id"],
                registry=registry,
            ),
            wait=Histogram(
                "handoff_wait_seconds",
                "From the escalation to an agent claiming it from the queue, by goal (one "
                "put back and claimed again is observed again, still from its escalation).",
                ["goal_id"],
                buckets=HANDOFF_BUCKETS,
                registry=registry,
            ),
            first_response=Histogram(
                "handoff_first_response_seconds",
                "From the escalation to the agent's first message, by goal.",
                ["goal_id"],
                buckets=HANDOFF_BUCKETS,
                registry=registry,
            ),
            resolution=Histogram(
                "handoff_resolution_seconds",
                "From the escalation to the agent resolving it, by goal.",
                ["goal_id"],
                buckets=HANDOFF_BUCKETS,
                registry=registry,
            ),
            queue_depth=Gauge(
                "handoff_queue_depth",
                "Conversations waiting for an agent or held by one, by goal and state, "
                "read from the store at scrape time.",
                ["goal_id", "state"],
                registry=registry,
                multiprocess_mode="mostrecent",
            ),
            oldest_waiting=Gauge(
                "handoff_oldest_waiting_seconds",
                "How long the longest-waiting conversation has waited for an agent, by "
                "goal (no series: none waits), read from the store at scrape time.",
                ["goal_id"],
                registry=registry,
                multiprocess_mode="mostrecent",
            ),
        )


ENDED_ESCALATED = ("true", "false")
OUTCOMES = ("achieved", "not_achieved", "abandoned", "unknown")
OUTCOME_SOURCES = ("client", "agent", "judge", "timeout")
# The judge's verdicts; error: it gave up (malformed answers, timeouts, its provider down).
EVALUATION_LABELS = ("achieved", "not_achieved", "error")
DELETION_REASONS = ("request", "retention")
# A conversation's customer turns, and its life from start to end: minutes to a day.
CONVERSATION_TURN_BUCKETS = (1, 2, 3, 5, 8, 13, 21, 34, 55)
CONVERSATION_DURATION_BUCKETS = (30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 86400)
JUDGE_DURATION_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class OutcomeMetrics:
    """How conversations end, per goal: observed once each, when its outcome is final."""

    turns: Histogram
    duration: Histogram
    evaluations: Counter
    judge_duration: Histogram
    evaluations_pending: Gauge
    deleted: Counter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> OutcomeMetrics:
        return cls(
            # Not "conversation_turns": the counter conversation_turns_total owns that
            # family name (OpenMetrics, and prometheus_client, refuse a second).
            turns=Histogram(
                "conversation_ended_turns",
                "Customer messages in a conversation by its end, by goal and outcome.",
                ["goal_id", "outcome"],
                buckets=CONVERSATION_TURN_BUCKETS,
                registry=registry,
            ),
            duration=Histogram(
                "conversation_duration_seconds",
                "From a conversation's start to its end, by goal and outcome.",
                ["goal_id", "outcome"],
                buckets=CONVERSATION_DURATION_BUCKETS,
                registry=registry,
            ),
            evaluations=Counter(
                "goal_evaluations_total",
                "The LLM judge's verdicts on ended conversations, by goal and label "
                "(achieved, not_achieved; error: given up after retries).",
                ["goal_id", "label"],
                registry=registry,
            ),
            judge_duration=Histogram(
                "goal_judge_duration_seconds",
                "Duration of one judge attempt (its LLM call and parsing the verdict).",
                buckets=JUDGE_DURATION_BUCKETS,
                registry=registry,
            ),
            evaluations_pending=Gauge(
                "goal_evaluations_pending",
                "Ended conversations waiting for the judge, read from the store at scrape time.",
                registry=registry,
                multiprocess_mode="mostrecent",
            ),
            deleted=Counter(
                "conversations_deleted_total",
                "Conversations deleted, with their messages, by reason (request: "
                "DELETE /v1/conversations/{id}; retention: PARLEY_RETENTION_DAYS).",
                ["reason"],
                registry=registry,
            ),
        )


@dataclass(frozen=True, slots=True)
class BusinessMetrics:
    conversations_created: Counter
    conversations_ended: Counter
    conversations_active: Gauge
    escalations: Counter
    key_budget: Gauge
    key_budget_remaining: Gauge

    @classmethod
    def register(cls, registry: CollectorRegistry) -> BusinessMetrics:
        return cls(
            conversations_created=Counter(
                "conversations_created_total",
                "Conversations started, by goal (capped; overflow goes to 'other').",
                ["goal_id"],
                registry=registry,
            ),
            conversations_ended=Counter(
                "conversations_ended_total",
                "Conversations that ended (closed by their customer, completed by an agent, "
                "or idle past their goal's timeout), counted once their outcome is final "
                "(after the judge's verdict, when their goal judges), by goal, outcome, who "
                "gave it, and whether they were ever handed to a human (escalated: the bot "
                "did not contain them).",
                ["goal_id", "outcome", "source", "escalated"],
                registry=registry,
            ),
            conversations_active=Gauge(
                "conversations_active",
                "Conversations in status active, read from the store at scrape time.",
                registry=registry,
                multiprocess_mode="mostrecent",
            ),
            escalations=Counter(
                "escalations_total",
                "Conversations handed to a human, by reason.",
                ["reason"],
                registry=registry,
            ),
            key_budget=Gauge(
                "api_key_budget_usd",
                "Each API key's budget for its current period, for keys with one (key names "
                "capped), read from the store at scrape time.",
                ["key_name"],
                registry=registry,
                multiprocess_mode="mostrecent",
            ),
            key_budget_remaining=Gauge(
                "api_key_budget_remaining_usd",
                "What each API key with a budget may still spend this period, read from "
                "the store at scrape time.",
                ["key_name"],
                registry=registry,
                multiprocess_mode="mostrecent",
            ),
        )


@dataclass(frozen=True, slots=True)
class TurnMetrics:
    """One user message and its reply, whatever the channel: the unit the SLOs count."""

    turns: Counter
    ttft: Histogram
    duration: Histogram
    overhead: Histogram
    in_flight: Gauge

    @classmethod
    def register(cls, registry: CollectorRegistry) -> TurnMetrics:
        metrics = cls(
            turns=Counter(
                "conversation_turns_total",
                "Turns by channel (http, sse, ws) and outcome (ok, escalated, handoff: the "
                "message went to the human agent, llm_error, rejected, cancelled, "
                "interrupted, crashed, db_error).",
                ["channel", "outcome"],
                registry=registry,
            ),
            ttft=Histogram(
                "conversation_turn_ttft_seconds",
                "Streamed turns: from the user message accepted to the first token sent.",
                ["channel"],
                buckets=TURN_TTFT_BUCKETS,
                registry=registry,
            ),
            duration=Histogram(
                "conversation_turn_duration_seconds",
                "Turns: from the user message accepted to the last event sent.",
                ["channel"],
                buckets=TURN_DURATION_BUCKETS,
                registry=registry,
            ),
            overhead=Histogram(
                "parley_turn_overhead_seconds",
                "Turns: Parley's own time, the turn's (from the request to the last event "
                "sent) minus the LLM call's; the database, encoding and queues.",
                ["channel"],
                buckets=TURN_OVERHEAD_BUCKETS,
                registry=registry,
            ),
            in_flight=Gauge(
                "conversation_turns_in_flight",
                "Turns accepted and not yet ended, every channel (the autoscaling signal: "
                "each holds an LLM call or a stream).",
                registry=registry,
                multiprocess_mode="livesum",
            ),
        )
        for channel in TURN_CHANNELS:
            metrics.duration.labels(channel)
            metrics.overhead.labels(channel)
            if channel != "http":
                metrics.ttft.labels(channel)
            for outcome in TURN_OUTCOMES:
                metrics.turns.labels(channel, outcome)
        return metrics


@dataclass(frozen=True, slots=True)
class LabelGuardMetrics:
    overflow: Counter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> LabelGuardMetrics:
        return cls(
            overflow=Counter(
                "metric_label_overflow_total",
                "Label values folded into 'other' because a label reached its cap.",
                ["metric", "label"],
                registry=registry,
            )
        )
