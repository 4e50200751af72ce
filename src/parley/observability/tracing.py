"""OpenTelemetry traces, off unless the standard variables turn them on.

On when ``OTEL_TRACES_EXPORTER`` names ``otlp`` or an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and
``OTEL_SDK_DISABLED`` is not true; the SDK then reads the rest as it documents it
(``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and its
argument, the exporter's headers and timeouts, the batch processor's delays). Off, the
SDK is never imported and nothing here sits on a request's path: ``start_tracing`` returns
None and the app adds no middleware.

The GenAI attributes follow the semantic conventions of ``SEMCONV_VERSION`` (the last
released, as ``opentelemetry-util-genai`` does); docs/metrics.md lists them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley.observability.routes import UNMATCHED, RouteTemplates

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer


def get_current_span() -> Span:
    """The API's current span (imported on first use: never with tracing off)."""
    from opentelemetry import trace

    return trace.get_current_span()


SEMCONV_VERSION = "1.41.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
TRACER_NAME = "parley"


def tracing_requested(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip() for e in environ.get("OTEL_TRACES_EXPORTER", "").split(",")}
    if "none" in exporters:
        return False
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return "otlp" in exporters or bool(endpoint)


class Tracing:
    """The tracer Parley's spans come from, and its provider (flushed at shutdown)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer(TRACER_NAME, schema_url=SCHEMA_URL)

    def shutdown(self) -> None:
        """Export what is buffered, then stop (the app's shutdown)."""
        self.provider.shutdown()


def start_tracing(service_version: str, environ: Mapping[str, str] = os.environ) -> Tracing | None:
    """The SDK with an OTLP/HTTP exporter, when the variables ask for traces; else None."""
    if not tracing_requested(environ):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.version": service_version})
    if "OTEL_SERVICE_NAME" not in environ and "service.name=" not in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        resource = resource.merge(Resource.create({"service.name": "parley"}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(provider)


def current_trace_ids() -> tuple[str, str] | None:
    """The current span's trace and span ids (hex), if it is sampled: an id nobody
    exported leads nowhere."""
    context = get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def current_traceparent() -> str | None:
    """The current span as a W3C ``traceparent``, if it is sampled (else None)."""
    ids = current_trace_ids()
    return None if ids is None else f"00-{ids[0]}-{ids[1]}-01"


def span_link(traceparent: str) -> Any:
    """An OpenTelemetry link to the span a ``traceparent`` names (None if malformed)."""
    from opentelemetry.trace import Link, SpanContext, TraceFlags

    parts = traceparent.split("-")
    try:
        trace_id, span_id = int(parts[1], 16), int(parts[2], 16)
    except (IndexError, ValueError):
        return None
    context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(1))
    return Link(context) if context.is_valid else None


def unsampled_parent() -> bool:
    """Inside a span that is not recorded (its trace was not sampled): a child would not
    be either, so the caller skips making one (at a 10 % ratio, nine turns in ten)."""
    span = get_current_span()
    return span.get_span_context().is_valid and not span.is_recording()


def add_trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: the log line carries the trace and span it happened in."""
    ids = current_trace_ids()
    if ids is not None:
        event["trace_id"], event["span_id"] = ids
    return event


def trace_exemplar() -> dict[str, str] | None:
    """An exemplar naming the current trace (a Grafana panel links it to the trace)."""
    ids = current_trace_ids()
    return {"trace_id": ids[0]} if ids is not None else None


def _header_getter() -> Any:
    from opentelemetry.propagators.textmap import Getter

    class ScopeHeaders(Getter[Scope]):
        """An ASGI scope's headers, for the W3C trace-context propagator."""

        def get(self, carrier: Scope, key: str) -> list[str] | None:
            name = key.lower().encode("latin-1")
            values = [v.decode("latin-1") for k, v in carrier["headers"] if k == name]
            return values or None

        def keys(self, carrier: Scope) -> list[str]:
            return [k.decode("latin-1") for k, _ in carrier["headers"]]

    return ScopeHeaders()


class TracingMiddleware:
    """The server span of each HTTP request, named by its route template (as the metrics'
    ``path`` label), continuing the caller's ``traceparent``; current while the app runs,
    so the turn, LLM and database spans are its children. A WebSocket's turns are traces
    of their own (a socket lives for hours)."""

    def __init__(
        self, app: ASGIApp, tracing: Tracing, templates: RouteTemplates | None = None
    ) -> None:
        from opentelemetry import context, propagate, trace

        self.app = app
        self.tracer = tracing.tracer
        self.templates = templates or RouteTemplates(app)
        self._extract = propagate.extract
        self._in_context = trace.set_span_in_context
        self._attach, self._detach = context.attach, context.detach
        self._getter = _header_getter()
        self._server = trace.SpanKind.SERVER
        self._error = trace.StatusCode.ERROR

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        span = self.tracer.start_span(
            method,
            context=self._extract(scope, getter=self._getter),
            kind=self._server,
            attributes={"http.request.method": method, "url.path": scope["path"]},
            start_time=time.time_ns(),
        )
        # Current while the app runs, sampled or not: an unsampled span tells its children
        # not to record either (unsampled_parent), and nothing more is done with it.
        token = self._attach(self._in_context(span))
        try:
            if not span.is_recording():
                await self.app(scope, receive, send)
                return
            await self._traced(span, scope, receive, send)
        finally:
            self._detach(token)

    async def _traced(self, span: Span, scope: Scope, receive: Receive, send: Send) -> None:
        method, status = scope["method"], 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            raise
        finally:
            self._finish(span, scope, method, status)

    def _finish(self, span: Span, scope: Scope, method: str, status: int) -> None:
        route = self.templates.template(scope)
        if route != UNMATCHED:
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(self._error)
        span.end()
