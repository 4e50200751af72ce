"""``create_app(settings)``: wiring only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from parley import __version__, api
from parley.api.body_limit import BodySizeLimitMiddleware
from parley.api.console import serve_console
from parley.api.docs_pages import serve_docs
from parley.api.errors import install_error_handlers
from parley.api.openapi import customise_openapi
from parley.api.path_guard import ControlCharacterPathMiddleware
from parley.api.rate_limits import REQUESTS, RateLimits
from parley.api.state import AppState, state_of
from parley.bus import Hub, PostgresListener
from parley.config import Environment, LimiterFailureMode, Settings, load_settings
from parley.domain.chat import ChatLimits, ChatService
from parley.domain.conversations import DELETE_BATCH, ConversationService
from parley.domain.events import EventFanout, LoggingEvents
from parley.domain.goals import GoalService
from parley.domain.handoff import HandoffService
from parley.domain.judge import JudgeService, JudgeSettings
from parley.domain.keys import KeyService
from parley.domain.live import LiveService
from parley.lifecycle import drain_before_exit
from parley.limiter import Limiter, LocalLimiter, RedisLimiter
from parley.llm.factory import build_gateway
from parley.llm.prices import PRICES, estimate_cost
from parley.llm.provider import LLMProvider
from parley.observability import (
    BusinessMetrics,
    CappedLabel,
    HandoffMetrics,
    Instrumentation,
    LimiterMetrics,
    LiveMetrics,
    OutcomeMetrics,
    RequestIdMiddleware,
    TurnMetrics,
    WebhookMetrics,
    configure_logging,
    instrument_app,
)
from parley.observability.loop_lag import event_loop_lag_watched
from parley.observability.request_id import exemplars_from_traces
from parley.observability.tracing import (
    TracingMiddleware,
    add_trace_ids,
    current_traceparent,
    start_tracing,
    trace_exemplar,
)
from parley.services import Services

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer
from parley.store import Database, Store, upgrade_to_head
from parley.store.database import EngineOptions
from parley.telemetry import (
    ConversationMetrics,
    ConversationTraces,
    TurnTelemetry,
    active_conversations_hook,
    handoff_queue_hook,
    instrument_llm,
    instrument_store,
    judge_queue_hook,
    key_budgets_hook,
    label_webhooks,
    live_streams_hook,
    webhook_attempts,
    webhook_outbox_hook,
)
from parley.webhooks.dispatcher import Dispatcher, Endpoint

OPEN_MODE = "off: no API key exists (development mode; `parley keys create` or PARLEY_API_KEYS)"


class OpenInProductionError(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            "PARLEY_ENV is production and no API key exists: make one with"
            " `parley keys create --name NAME --role admin`, or set PARLEY_API_KEYS"
        )


def engine_options(settings: Settings) -> EngineOptions:
    return EngineOptions(
        hide_parameters=not settings.log_content,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        sqlite_synchronous=settings.sqlite_synchronous.value,
        connect_timeout=settings.db_connect_timeout_seconds,
        statement_timeout=settings.db_statement_timeout_seconds,
        pool_timeout=settings.db_pool_timeout_seconds,
    )


def build_limiter(settings: Settings) -> Limiter:
    """Redis when PARLEY_REDIS_URL is set (once for every replica), else this process."""
    if settings.redis_url is not None:
        return RedisLimiter(
            settings.redis_url.get_secret_value(),
            key_prefix=settings.redis_key_prefix,
            fail_open=settings.rate_limit_failure_mode is LimiterFailureMode.OPEN,
        )

    def burst(name: str, per_minute: int) -> int:
        default = name == REQUESTS and per_minute == settings.rate_limit_per_minute
        return settings.rate_limit_burst if default else per_minute

    return LocalLimiter(burst=burst)


def build_services(settings: Settings, provider: LLMProvider | None = None) -> Services:
    store = Store(
        Database(settings.database_url, engine_options(settings)),
        goal_cache_seconds=settings.goal_cache_seconds,
    )
    gateway = build_gateway(settings, provider)
    events = EventFanout([LoggingEvents(structlog.get_logger("parley.events"))])
    goals = GoalService(store.goals)
    limits = ChatLimits(
        max_message_chars=settings.max_message_chars,
        history_messages=settings.llm_history_messages,
        max_reply_tokens=settings.llm_max_tokens,
        default_model=settings.default_model,
    )
    conversations = ConversationService(store.conversations, goals, events)
    keys = KeyService(
        store.keys,
        lambda: datetime.now(UTC),
        bootstrap_secrets=tuple(key.get_secret_value() for key in settings.api_keys),
        open_allowed=settings.env is not Environment.PRODUCTION,
    )
    provider_name = gateway.provider.name
    limiter = build_limiter(settings)
    chat = ChatService(
        store.conversations,
        gateway,
        events,
        limits,
        pricing=lambda model, usage: estimate_cost(model, usage, provider_name),
        budgets=keys,
        rate_limiter=limiter,
    )
    handoffs = HandoffService(
        store.handoffs, store.conversations, goals, events, settings.max_message_chars
    )
    hub = Hub(settings.live_max_streams)
    store.database.on_published = hub.publish  # a commit with events wakes their streams
    live = LiveService(
        store.events, store.conversations, hub, heartbeat_seconds=settings.live_heartbeat_seconds
    )
    judge = JudgeService(
        store.evaluations,
        store.conversations,
        goals,
        gateway,
        events,
        JudgeSettings(
            model=settings.judge_model or settings.default_model,
            concurrency=settings.judge_concurrency,
            max_attempts=settings.judge_max_attempts,
            backoff_seconds=settings.judge_backoff_seconds,
        ),
    )
    return Services(
        store,
        gateway,
        events,
        goals,
        conversations,
        chat,
        keys,
        limiter,
        handoffs,
        hub,
        live,
        judge,
    )


def instrument_services(
    services: Services,
    instrumentation: Instrumentation,
    settings: Settings,
    live: LiveMetrics,
    tracer: Tracer | None = None,
) -> ConversationMetrics:
    """Hook metrics into the seams: LLM gateway, business events, store."""
    models = tuple(settings.llm_models) or (settings.default_model, *PRICES)
    key_label = CappedLabel(
        metric="llm_cost_usd_total",
        label="key_name",
        limit=settings.metrics_key_label_limit,
        overflow=instrumentation.guard.overflow,
    )
    services.gateway.add_observer(
        instrument_llm(
            instrumentation, models, key_label, tracer, capture_content=settings.log_content
        )
    )
    business = BusinessMetrics.register(instrumentation.registry)
    conversation_metrics = ConversationMetrics(
        business,
        CappedLabel(
            metric="conversations_created_total",
            label="goal_id",
            limit=settings.metrics_goal_label_limit,
            overflow=instrumentation.guard.overflow,
        ),
        key_label,
        HandoffMetrics.register(instrumentation.registry),
        OutcomeMetrics.register(instrumentation.registry),
    )
    services.events.add(conversation_metrics)
    if tracer is not None:
        services.events.add(ConversationTraces(tracer))
        # A judged end keeps its request's trace: the verdict's span links to it.
        services.store.database.trace_context = current_traceparent
    instrumentation.endpoint.add_hook(
        handoff_queue_hook(
            services.store, conversation_metrics.handoff, conversation_metrics.goal_label
        )
    )
    instrumentation.endpoint.add_hook(active_conversations_hook(services.store, business))
    instrumentation.endpoint.add_hook(live_streams_hook(services.hub, live))
    instrumentation.endpoint.add_hook(key_budgets_hook(services.keys, business, key_label))
    outcomes = conversation_metrics.outcomes
    services.judge.on_attempt = outcomes.judge_duration.observe
    instrumentation.endpoint.add_hook(judge_queue_hook(services.store, outcomes))
    instrument_store(services.store, instrumentation, tracer)
    return conversation_metrics


async def _label_goals(
    services: Services, metrics: ConversationMetrics, settings: Settings
) -> None:
    metrics.label_goals(await services.goals.oldest_ids(settings.metrics_goal_label_limit))
    metrics.label_keys(await services.keys.oldest_names(settings.metrics_key_label_limit))


async def _relabel_goals(
    services: Services, metrics: ConversationMetrics, settings: Settings
) -> None:
    """Goals made on other replicas get their label within a refresh."""
    while True:
        await asyncio.sleep(settings.metrics_goal_refresh_seconds)
        try:
            await _label_goals(services, metrics, settings)
        except Exception:  # the database away: keep the labels as they are, try again
            structlog.get_logger("parley").warning("goal_labels_not_refreshed", exc_info=True)


def _event_listener(services: Services, on_error: Callable[[], None]) -> PostgresListener | None:
    """On PostgreSQL, events committed on other replicas wake this one's streams, and key
    changes drop the keys it keeps."""
    database = services.store.database
    if database.engine.dialect.name != "postgresql":
        return None  # SQLite: one process, woken in process
    listener = PostgresListener(database.url, services.hub, on_error=on_error)
    listener.start()
    return listener


def _webhooks(services: Services, settings: Settings, metrics: WebhookMetrics) -> Dispatcher | None:
    """With endpoints configured, this replica delivers webhooks too (one replica each)."""
    if not settings.webhooks:
        return None
    endpoints = [
        Endpoint(endpoint.key, endpoint.url, endpoint.secret.get_secret_value())
        for endpoint in settings.webhooks
    ]
    dispatcher = Dispatcher(
        services.store.outbox,
        endpoints,
        timeout_seconds=settings.webhook_timeout_seconds,
        retry_window=timedelta(hours=settings.webhook_retry_hours),
        backoff_base_seconds=settings.webhook_backoff_seconds,
        on_attempt=webhook_attempts(metrics),
    )
    dispatcher.start()
    return dispatcher


# Retention's batches per sweep: a backlog (retention just turned on) drains over a few
# sweeps instead of holding the database for one long run.
RETENTION_BATCHES_PER_SWEEP = 10


async def _end_idle_conversations(services: Services, settings: Settings) -> None:
    """On every replica: conversations idle past their goal's timeout end (each once);
    with retention on, those ended past it are deleted."""
    while True:
        await asyncio.sleep(settings.idle_sweep_seconds)
        try:
            await services.conversations.end_idle(datetime.now(UTC))
            if settings.retention_days is not None:
                await _delete_expired(services, settings.retention_days)
        except Exception:  # the database away: the next sweep ends them
            structlog.get_logger("parley").warning("idle_sweep_failed", exc_info=True)


async def _judge_ended_conversations(services: Services, settings: Settings) -> None:
    """On every replica: the judge grades what waits in its queue, a few at a time."""
    while True:
        try:
            # A full round: more may be due at once (a backlog after an outage).
            if await services.judge.run_once() == settings.judge_concurrency:
                continue
        except Exception:  # the database away: the queue keeps them for the next round
            structlog.get_logger("parley").warning("judge_round_failed", exc_info=True)
        await asyncio.sleep(settings.judge_poll_seconds)


async def _delete_expired(services: Services, days: int) -> None:
    for _ in range(RETENTION_BATCHES_PER_SWEEP):
        batch = DELETE_BATCH
        if await services.conversations.delete_expired(datetime.now(UTC), days, batch) < batch:
            return


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = state_of(app)
    services, settings, metrics = state.services, state.settings, state.conversation_metrics
    if settings.auto_migrate:
        await upgrade_to_head(services.store.database.engine)
    reachable = await services.store.database.ping()
    if reachable:
        if settings.env is Environment.PRODUCTION and not await services.keys.any_exist():
            raise OpenInProductionError()
        # Series for the goals that exist, so the first scrape shows them at zero.
        await _label_goals(services, metrics, settings)
    open_api = reachable and await services.keys.is_open()
    structlog.get_logger("parley").info(
        "parley_started",
        llm_provider=services.gateway.provider.name,
        # Open is a development mode: say so where the operator looks first.
        authentication=OPEN_MODE if open_api else "API keys",
    )
    in_flight = services.chat.in_flight

    async def drain() -> None:
        services.hub.close()  # live streams end: their clients resume on another replica
        await in_flight.drain(settings.shutdown_grace_seconds)

    undo_signals = drain_before_exit(drain)
    relabel = asyncio.create_task(_relabel_goals(services, metrics, settings))
    sweep = asyncio.create_task(_end_idle_conversations(services, settings))
    judging = asyncio.create_task(_judge_ended_conversations(services, settings))
    listener = _event_listener(services, state.live_metrics.listener_errors.inc)
    # Keys read once are kept while a key change would be seen: told by the listener
    # (PostgreSQL), or read in the key epoch's row on each request (SQLite).
    key_epoch = services.store.keys.epoch_reader()
    services.keys.follow(listener if listener is not None else key_epoch)
    webhooks = _webhooks(services, settings, state.webhook_metrics)
    try:
        async with event_loop_lag_watched(app.state.instrumentation.http.event_loop_lag):
            yield
    finally:
        relabel.cancel()
        sweep.cancel()
        judging.cancel()
        undo_signals()
        # Without a signal (a server stopped from code) the drain happens here.
        await drain()
        services.keys.follow(None)
        if key_epoch is not None:
            key_epoch.close()
        if listener is not None:
            await listener.stop()
        if webhooks is not None:
            await webhooks.stop()
        await services.gateway.aclose()
        await services.store.database.dispose()
        await services.limiter.aclose()
        if state.tracing is not None:
            state.tracing.shutdown()  # what is buffered is exported


def create_app(settings: Settings | None = None, *, provider: LLMProvider | None = None) -> FastAPI:
    """The Parley ASGI app. ``provider`` replaces the configured LLM provider (tests, embedding)."""
    settings = settings or load_settings()
    tracing = start_tracing(__version__)  # None unless the OTEL_* variables ask for traces
    exemplars_from_traces(trace_exemplar if tracing else None)
    configure_logging(
        settings.log_level,
        settings.log_format.value,
        log_content=settings.log_content,
        trace_ids=add_trace_ids if tracing else None,
    )
    services = build_services(settings, provider)
    tracer = tracing.tracer if tracing else None
    app = FastAPI(
        title="Parley",
        version=__version__,
        summary="Goal-driven LLM conversations, instrumented for production.",
        lifespan=_lifespan,
        docs_url=None,  # served by serve_docs, from local assets
        redoc_url=None,
    )
    serve_docs(app)
    serve_console(app)
    install_error_handlers(app)
    app.include_router(api.health.router)
    app.include_router(api.v1)
    customise_openapi(app)
    _add_request_guards(app, settings)
    instrumentation = instrument_app(
        app,
        token=settings.metrics_token.get_secret_value() if settings.metrics_token else None,
        cache_seconds=settings.metrics_cache_seconds,
        metrics_port=settings.metrics_port,
    )
    live = LiveMetrics.register(instrumentation.registry)
    webhooks = WebhookMetrics.register(instrumentation.registry)
    label_webhooks(webhooks)
    instrumentation.endpoint.add_hook(webhook_outbox_hook(services.store, webhooks))
    app.state.parley = AppState(
        # The keys live only as digests (services.keys), not in the settings served on.
        settings=settings.model_copy(update={"api_keys": []}),
        services=services,
        rate_limits=_rate_limits(settings, services, instrumentation),
        turn_telemetry=TurnTelemetry(TurnMetrics.register(instrumentation.registry), tracer=tracer),
        conversation_metrics=instrument_services(services, instrumentation, settings, live, tracer),
        live_metrics=live,
        webhook_metrics=webhooks,
        tracing=tracing,
    )
    if tracing is not None:  # outside the metrics: their exemplars name its trace
        app.add_middleware(TracingMiddleware, tracing=tracing)
    app.add_middleware(RequestIdMiddleware)  # added last, so it runs first
    return app


def _rate_limits(
    settings: Settings, services: Services, instrumentation: Instrumentation
) -> RateLimits:
    limiter = services.limiter
    errors = LimiterMetrics.register(instrumentation.registry).errors
    if isinstance(limiter, RedisLimiter):
        limiter.on_error = errors.inc
    return RateLimits(limiter, settings.rate_limit_per_minute, settings.auth_failures_per_minute)


def _add_request_guards(app: FastAPI, settings: Settings) -> None:
    """Middleware added last runs first: CORS, the path guard, then the body limit."""
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_seconds=settings.body_timeout_seconds,
    )
    app.add_middleware(ControlCharacterPathMiddleware)
    if settings.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=[
                "authorization",
                "content-type",
                "idempotency-key",
                "x-api-key",
                "x-request-id",
            ],
            expose_headers=["x-request-id", "retry-after"],
            max_age=600,
        )
