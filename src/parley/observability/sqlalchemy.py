"""Database statement metrics from SQLAlchemy engine events (sync or async engines), and,
with tracing on, a client span per statement: its text, never its parameters."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.observability.catalogue import DatabaseMetrics
from parley.observability.tracing import unsampled_parent

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

OPERATIONS = ("select", "insert", "update", "delete", "other")
_KNOWN = frozenset(OPERATIONS) - {"other"}
_STACK = "observability.query_started"


def operation_of(statement: str) -> str:
    """The statement's verb, from a fixed set; never the SQL text itself."""
    head = statement.lstrip(" \t\r\n(").split(None, 1)
    verb = head[0].lower() if head else ""
    if verb == "with":  # a CTE: the verb that follows the WITH clause decides
        lowered = statement.lower()
        for candidate in ("insert", "update", "delete", "select"):
            if f" {candidate} " in lowered:
                return candidate
    return verb if verb in _KNOWN else "other"


def instrument_engine(
    engine: Engine | AsyncEngine, metrics: DatabaseMetrics, tracer: Tracer | None = None
) -> None:
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    for operation in OPERATIONS:
        metrics.queries.labels(operation)
        metrics.duration.labels(operation)
    system = sync_engine.dialect.name  # db.system.name: sqlite, postgresql

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault(_STACK, []).append(time.perf_counter())
        if tracer is not None:
            # None: no span (an unsampled trace's statements): the stack stays paired.
            span = None if unsampled_parent() else _span(tracer, system, statement)
            conn.info.setdefault(_SPANS, []).append(span)

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        _record(conn, statement, metrics)
        if tracer is not None:
            _end_span(conn, None)

    @event.listens_for(sync_engine, "checkout")
    def _checkout(*_: Any) -> None:
        metrics.connections_in_use.inc()

    @event.listens_for(sync_engine, "checkin")
    def _checkin(*_: Any) -> None:
        metrics.connections_in_use.dec()

    @event.listens_for(sync_engine, "handle_error")
    def _error(context: Any) -> None:
        if context.connection is not None and context.statement is not None:
            _record(context.connection, context.statement, metrics)
            if tracer is not None:
                _end_span(context.connection, type(context.original_exception).__qualname__)


_SPANS = "observability.query_spans"


def _span(tracer: Tracer, system: str, statement: str) -> Any:
    """A statement's client span: the SQL with its placeholders, never the values."""
    from opentelemetry.trace import SpanKind

    operation = operation_of(statement).upper()
    return tracer.start_span(
        operation,
        kind=SpanKind.CLIENT,
        attributes={
            "db.system.name": system,
            "db.operation.name": operation,
            "db.query.text": statement,
        },
    )


def _end_span(conn: Any, error_type: str | None) -> None:
    spans = conn.info.get(_SPANS)
    if not spans:
        return
    span = spans.pop()
    if span is None:
        return
    if error_type is not None:
        from opentelemetry.trace import StatusCode

        span.set_attribute("error.type", error_type)
        span.set_status(StatusCode.ERROR)
    span.end()


def _record(conn: Any, statement: str, metrics: DatabaseMetrics) -> None:
    stack = conn.info.get(_STACK)
    if not stack:
        return
    duration = time.perf_counter() - stack.pop()
    operation = operation_of(statement)
    metrics.queries.labels(operation).inc()
    metrics.duration.labels(operation).observe(duration)
