"""Observability for FastAPI and Starlette apps: metrics, logs, request ids.

Imports nothing from the rest of Parley, so it can be lifted into another app.
"""

from parley.observability.caller import current_caller, set_caller
from parley.observability.catalogue import (
    BusinessMetrics,
    DatabaseMetrics,
    HandoffMetrics,
    HttpMetrics,
    LabelGuardMetrics,
    LimiterMetrics,
    LiveMetrics,
    LLMMetrics,
    OutcomeMetrics,
    TurnMetrics,
    WebhookMetrics,
    WebSocketMetrics,
    new_registry,
)
from parley.observability.errors import mark_error
from parley.observability.exposition import MetricsEndpoint
from parley.observability.labels import OTHER, Allowlist, CappedLabel
from parley.observability.llm import LLMCall, LLMInstrumentation
from parley.observability.logging import configure_logging
from parley.observability.middleware import PrometheusMiddleware
from parley.observability.request_id import RequestIdMiddleware, current_request_id
from parley.observability.routes import UNMATCHED, RouteTemplates
from parley.observability.setup import Instrumentation, instrument_app

__all__ = [
    "OTHER",
    "UNMATCHED",
    "Allowlist",
    "BusinessMetrics",
    "CappedLabel",
    "DatabaseMetrics",
    "HandoffMetrics",
    "HttpMetrics",
    "Instrumentation",
    "LLMCall",
    "LLMInstrumentation",
    "LLMMetrics",
    "LabelGuardMetrics",
    "LimiterMetrics",
    "LiveMetrics",
    "MetricsEndpoint",
    "OutcomeMetrics",
    "PrometheusMiddleware",
    "RequestIdMiddleware",
    "RouteTemplates",
    "TurnMetrics",
    "WebSocketMetrics",
    "WebhookMetrics",
    "configure_logging",
    "current_caller",
    "current_request_id",
    "instrument_app",
    "mark_error",
    "new_registry",
    "set_caller",
]
