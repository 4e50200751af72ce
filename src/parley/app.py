"""``create_app(settings)``: wiring only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from parley import __version__, api
from parley.api.body_limit import BodySizeLimitMiddleware
from parley.api.errors import install_error_handlers
from parley.api.openapi import use_docstrings_as_summaries
from parley.config import Settings
from parley.domain.conversations import ChatLimits, ConversationService
from parley.domain.events import EventFanout, LoggingEvents
from parley.domain.goals import GoalService
from parley.llm.call_log import LoggingObserver
from parley.llm.factory import build_gateway
from parley.llm.provider import LLMProvider
from parley.observability import RequestIdMiddleware, configure_logging
from parley.services import Services
from parley.store import Database, Store, upgrade_to_head


def build_services(settings: Settings, provider: LLMProvider | None = None) -> Services:
    store = Store(Database(settings.database_url))
    gateway = build_gateway(settings, provider)
    gateway.add_observer(LoggingObserver(structlog.get_logger("parley.llm")))
    events = EventFanout([LoggingEvents(structlog.get_logger("parley.events"))])
    goals = GoalService(store)
    limits = ChatLimits(
        max_message_chars=settings.max_message_chars,
        history_messages=settings.llm_history_messages,
        max_reply_tokens=settings.llm_max_tokens,
        default_model=settings.default_model,
    )
    conversations = ConversationService(store, goals, gateway, events, limits)
    return Services(store, gateway, events, goals, conversations)


def create_app(settings: Settings | None = None, *, provider: LLMProvider | None = None) -> FastAPI:
    """The Parley ASGI app. ``provider`` replaces the configured LLM provider (tests, embedding)."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format.value)
    services = build_services(settings, provider)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.auto_migrate:
            await upgrade_to_head(services.store.database.engine)
        structlog.get_logger("parley").info(
            "parley_started", llm_provider=services.gateway.provider.name
        )
        try:
            yield
        finally:
            await services.gateway.aclose()
            await services.store.database.dispose()

    app = FastAPI(
        title="Parley",
        version=__version__,
        summary="Goal-driven LLM conversations, instrumented for production.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.services = services
    install_error_handlers(app)
    app.include_router(api.health.router)
    app.include_router(api.v1)
    use_docstrings_as_summaries(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app
