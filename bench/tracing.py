"""What tracing costs a turn: whole turns on the simulated LLM at zero latency (SQLite,
one worker), with tracing off, on with every turn sampled, and on at a 10 % ratio, the
spans exported over OTLP/HTTP to a sink in another process. Each round runs the three
side by side; the servers' CPU per turn is read from /proc."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from bench import inprocess
from bench.stats import median
from bench.turns import Server, _ensure_goal, _spawn, _whole_turns, _zero_latency_parley
from bench.variants import bare, parley

OFF, ALL, TENTH = "off", "on, all sampled", "on, 10 % sampled"


@dataclass(frozen=True)
class TracingResult:
    variant: str
    cpu_per_turn: list[float]  # per round, seconds
    turns_per_second: list[float]


def _env(sink: str, variant: str) -> dict[str, str]:
    if variant == OFF:
        return {}
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
        "OTEL_SERVICE_NAME": "parley-bench",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.0" if variant == ALL else "0.1",
    }


def run(*, rounds: int = 5, seconds: float = 5.0, clients: int = 10) -> list[TracingResult]:
    """Each round runs the three servers side by side, each with its own clients: they
    share the machine's state of the moment (this one drifts by more than the difference
    between them when the variants take turns)."""
    sink = _spawn("sink", [sys.executable, "-m", "bench.otlp_sink", "{port}"], "/")
    cpu: dict[str, list[float]] = {OFF: [], ALL: [], TENTH: []}
    rate: dict[str, list[float]] = {OFF: [], ALL: [], TENTH: []}
    try:
        for _ in range(rounds):
            for variant, (done, spent) in _side_by_side(list(cpu), sink, clients, seconds):
                cpu[variant].append(spent / done if done else float("nan"))
                rate[variant].append(done / seconds)
    finally:
        sink.process.terminate()
        sink.process.wait(timeout=30)
    return [TracingResult(v, cpu[v], rate[v]) for v in cpu]


def _side_by_side(
    variants: list[str], sink: Server, clients: int, seconds: float
) -> list[tuple[str, tuple[int, float]]]:
    servers: dict[str, Server] = {}
    try:
        for variant in variants:
            url = f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/tracing.db"
            servers[variant] = _zero_latency_parley(variant, url, _env(sink.url, variant))
            asyncio.run(_ensure_goal(servers[variant].url))

        async def together() -> list[tuple[int, float]]:
            runs = (_whole_turns(server, clients, seconds) for server in servers.values())
            return await asyncio.gather(*runs)

        return list(zip(servers, asyncio.run(together()), strict=True))
    finally:
        for server in servers.values():
            server.process.terminate()
            server.process.wait(timeout=30)


def added_share(results: list[TracingResult], variant: str) -> float:
    """The variant's CPU per turn over tracing off's, as a share of off's: the median of
    the rounds' ratios (paired: this machine drifts by more than the difference)."""
    by = {r.variant: r.cpu_per_turn for r in results}
    return median([on / off for on, off in zip(by[variant], by[OFF], strict=True)]) - 1


def report(results: list[TracingResult]) -> list[str]:
    lines = [
        "Tracing: whole turns, simulated LLM at zero latency, SQLite, one worker"
        " (spans over OTLP/HTTP to a sink in another process)"
    ]
    for r in results:
        share = "" if r.variant == OFF else f"  {added_share(results, r.variant):+.1%} CPU"
        lines.append(
            f"    {r.variant:<18} {median(r.turns_per_second):>7.1f} turns/s  "
            f"{median(r.cpu_per_turn) * 1000:>5.2f} ms CPU/turn{share}"
        )
    return lines


def _discarding_tracing(ratio: float = 1.0) -> Any:
    """A tracer provider that batches spans and drops them: the middleware's own cost."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(ratio))
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    return provider


def _ours(ratio: float = 1.0) -> FastAPI:
    from parley.observability.tracing import Tracing, TracingMiddleware

    app = parley()
    app.add_middleware(TracingMiddleware, tracing=Tracing(_discarding_tracing(ratio)))
    return app


def _ours_at_a_tenth() -> FastAPI:
    return _ours(0.1)


def _maintained() -> FastAPI:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app = parley()
    app.add_middleware(OpenTelemetryMiddleware, tracer_provider=_discarding_tracing())
    return app


MIDDLEWARES = {
    "bare": bare,
    "parley": parley,
    "+ ours": _ours,
    "+ ours, 10 %": _ours_at_a_tenth,
    "+ otel asgi": _maintained,
}


def compare_middlewares(rounds: int, requests: int) -> list[inprocess.Result]:
    """The server span's cost per request, Parley's middleware against the maintained
    OpenTelemetry ASGI one (both over Parley's metrics, every request sampled)."""
    return asyncio.run(
        inprocess.run(rounds, requests, ("matched", "streaming"), variants=MIDDLEWARES)
    )


def report_middlewares(results: list[inprocess.Result]) -> list[str]:
    lines = ["Server spans in process, per request (µs): median, overhead vs bare [IQR]"]
    for r in results:
        low, high = r.overhead_spread
        lines.append(
            f"    {r.kind:<10} {r.variant:<12} {r.per_request_us:8.1f}"
            f"  +{r.overhead_us:6.1f} [{low:6.1f}, {high:6.1f}]"
        )
    return lines
