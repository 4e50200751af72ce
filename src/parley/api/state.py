"""The typed application state: what the routers reach, built once by ``create_app`` and
read through ``state_of`` (no loose ``app.state`` attributes)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette

from parley.api.rate_limits import RateLimits
from parley.config import Settings
from parley.observability import LiveMetrics, WebhookMetrics
from parley.observability.tracing import Tracing
from parley.services import Services
from parley.telemetry import ConversationMetrics, TurnTelemetry


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings  # without the API keys: they live only as digests, in services.keys
    services: Services
    rate_limits: RateLimits
    turn_telemetry: TurnTelemetry
    conversation_metrics: ConversationMetrics  # the goals labelled, refreshed by the lifespan
    live_metrics: LiveMetrics
    webhook_metrics: WebhookMetrics
    tracing: Tracing | None = None  # None: traces off (the OTEL_* variables say so)


def state_of(app: Starlette) -> AppState:
    """The state ``create_app`` installed on ``app`` (a FastAPI app, or a request's)."""
    state: AppState = app.state.parley
    return state
