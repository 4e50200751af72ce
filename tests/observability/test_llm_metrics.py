"""LLM metrics through the gateway: one place every provider call goes through."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from parley.llm import (
    ChatMessage,
    ChatRequest,
    Completion,
    LLMError,
    LLMErrorKind,
    LLMGateway,
    RateLimit,
    RetryPolicy,
    Role,
    StreamChunk,
    Usage,
)
from parley.llm.prices import PRICES, estimate_cost
from parley.observability import LLMInstrumentation, LLMMetrics, new_registry
from parley.telemetry import LLM_ERROR_TYPES, LLMTelemetry
from tests.api.helpers import make_conversation, make_goal
from tests.conftest import app_client, make_settings
from tests.support.groq_server import GroqTestServer, Reply
from tests.support.live_server import LiveServer
from tests.support.metrics import FakeClock, total, value
from tests.support.providers import ScriptedProvider, collect

MODEL = "llama-3.1-8b-instant"
REQUEST = ChatRequest(MODEL, (ChatMessage(Role.USER, "hi"),))


class TimedProvider:
    """Streams on a fake clock: role chunk, content after ``ttft``, tokens ``gap`` apart."""

    name = "timed"

    def __init__(
        self,
        clock: FakeClock,
        *,
        ttft: float,
        gap: float,
        words: int,
        cut_after: int | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.clock, self.ttft, self.gap, self.words = clock, ttft, gap, words
        self.cut_after = cut_after
        self.rate_limit = rate_limit

    async def complete(self, request: ChatRequest) -> Completion:
        self.clock.advance(self.ttft)
        return Completion(
            "x " * self.words,
            request.model,
            Usage(10, self.words, 10 + self.words),
            rate_limit=self.rate_limit,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        yield StreamChunk(rate_limit=self.rate_limit)  # role-only: not the first token
        self.clock.advance(self.ttft)
        for index in range(self.words):
            if index:
                self.clock.advance(self.gap)
            if self.cut_after is not None and index == self.cut_after:
                raise LLMError(LLMErrorKind.STREAM_INTERRUPTED, "cut")
            yield StreamChunk(content=f" w{index}")
        yield StreamChunk(usage=Usage(10, self.words, 10 + self.words), finish_reason="stop")

    async def aclose(self) -> None:
        return None


def _gateway(
    provider: object,
    clock: FakeClock | None = None,
    retries: int = 2,
    models: tuple[str, ...] = (MODEL,),
) -> tuple[LLMGateway, CollectorRegistry]:
    registry = new_registry()
    instrumentation = LLMInstrumentation(
        LLMMetrics.register(registry),
        models=models,
        error_types=LLM_ERROR_TYPES,
        clock=clock or time.perf_counter,
    )
    gateway = LLMGateway(
        provider,  # type: ignore[arg-type]
        retry=RetryPolicy(max_retries=retries, backoff_seconds=0),
        observers=[LLMTelemetry(instrumentation)],
    )
    return gateway, registry


async def test_stream_records_latency_ttft_time_per_token_and_tokens_once() -> None:
    clock = FakeClock()
    gateway, registry = _gateway(TimedProvider(clock, ttft=0.4, gap=0.05, words=5), clock)
    received: list[str] = []
    await collect(gateway.stream(REQUEST), received)

    assert (
        value(
            registry,
            "llm_requests_total",
            model=MODEL,
            stream_mode="streaming",
            status="success",
            operation="chat",
        )
        == 1
    )
    # TTFT counts from the call to the first chunk with content, not the role-only one.
    assert value(registry, "llm_ttft_seconds_sum", model=MODEL) == pytest.approx(0.4)
    assert value(registry, "llm_ttft_seconds_bucket", model=MODEL, le="0.25") == 0
    assert value(registry, "llm_ttft_seconds_bucket", model=MODEL, le="0.5") == 1
    assert value(
        registry, "llm_latency_seconds_sum", model=MODEL, stream_mode="streaming"
    ) == pytest.approx(0.6)
    # One observation per stream: (0.6 - 0.4) / (5 - 1) tokens.
    assert value(registry, "llm_time_per_output_token_seconds_count", model=MODEL) == 1
    assert value(registry, "llm_time_per_output_token_seconds_sum", model=MODEL) == pytest.approx(
        0.05
    )
    assert value(registry, "llm_tokens_used_total", model=MODEL, type="prompt") == 10
    assert value(registry, "llm_tokens_used_total", model=MODEL, type="completion") == 5
    assert value(registry, "llm_tokens_used_total", model=MODEL, type="total") == 15
    assert value(
        registry, "llm_cost_usd_total", model=MODEL, key_name="", operation="chat"
    ) == pytest.approx(estimate_cost(MODEL, Usage(10, 5, 15)))


async def test_non_streaming_call_has_latency_but_no_ttft() -> None:
    clock = FakeClock()
    gateway, registry = _gateway(TimedProvider(clock, ttft=1.5, gap=0, words=3), clock)
    await gateway.complete(REQUEST)
    assert value(
        registry, "llm_latency_seconds_sum", model=MODEL, stream_mode="non_streaming"
    ) == pytest.approx(1.5)
    assert (
        value(
            registry,
            "llm_latency_seconds_bucket",
            model=MODEL,
            stream_mode="non_streaming",
            le="1.0",
        )
        == 0
    )
    assert (
        value(
            registry,
            "llm_latency_seconds_bucket",
            model=MODEL,
            stream_mode="non_streaming",
            le="2.0",
        )
        == 1
    )
    assert value(registry, "llm_ttft_seconds_count", model=MODEL) == 0
    assert value(registry, "llm_tokens_used_total", model=MODEL, type="completion") == 3


async def test_errors_and_retries_are_counted_by_type() -> None:
    provider = ScriptedProvider(
        [
            LLMError(LLMErrorKind.RATE_LIMITED, "slow down"),
            LLMError(LLMErrorKind.SERVER_ERROR, "oops"),
            "fine",
            LLMError(LLMErrorKind.AUTH, "bad key"),
        ]
    )
    gateway, registry = _gateway(provider)
    await gateway.complete(REQUEST)
    with pytest.raises(LLMError):
        await gateway.complete(REQUEST)
    assert value(registry, "llm_retries_total", model=MODEL, error_type="rate_limited") == 1
    assert value(registry, "llm_retries_total", model=MODEL, error_type="server_error") == 1
    assert (
        value(
            registry,
            "llm_requests_total",
            model=MODEL,
            stream_mode="non_streaming",
            status="success",
            operation="chat",
        )
        == 1
    )
    assert (
        value(
            registry,
            "llm_requests_total",
            model=MODEL,
            stream_mode="non_streaming",
            status="error",
            operation="chat",
        )
        == 1
    )
    assert value(registry, "llm_errors_total", model=MODEL, error_type="auth") == 1
    assert value(registry, "llm_errors_total", model=MODEL, error_type="rate_limited") == 0


async def test_stream_cut_midway_is_its_own_error_and_keeps_what_it_measured() -> None:
    clock = FakeClock()
    provider = TimedProvider(clock, ttft=0.3, gap=0.1, words=10, cut_after=3)
    gateway, registry = _gateway(provider, clock)
    with pytest.raises(LLMError):
        await collect(gateway.stream(REQUEST), [])
    assert value(registry, "llm_errors_total", model=MODEL, error_type="stream_interrupted") == 1
    assert (
        value(
            registry,
            "llm_requests_total",
            model=MODEL,
            stream_mode="streaming",
            status="error",
            operation="chat",
        )
        == 1
    )
    assert value(registry, "llm_ttft_seconds_sum", model=MODEL) == pytest.approx(0.3)
    assert value(
        registry, "llm_latency_seconds_sum", model=MODEL, stream_mode="streaming"
    ) == pytest.approx(0.6)
    assert value(registry, "llm_tokens_used_total", model=MODEL, type="total") == 0


async def test_rate_limit_headroom_is_set_when_reported_and_left_unset_otherwise() -> None:
    clock = FakeClock()
    reported = TimedProvider(
        clock,
        ttft=0,
        gap=0,
        words=1,
        rate_limit=RateLimit(remaining_requests=99, remaining_tokens=5000),
    )
    gateway, registry = _gateway(reported, clock)
    await collect(gateway.stream(REQUEST), [])
    assert value(registry, "llm_rate_limit_remaining_requests", model=MODEL) == 99
    assert value(registry, "llm_rate_limit_remaining_tokens", model=MODEL) == 5000

    silent_gateway, silent_registry = _gateway(TimedProvider(clock, ttft=0, gap=0, words=1), clock)
    await silent_gateway.complete(REQUEST)
    assert (
        silent_registry.get_sample_value("llm_rate_limit_remaining_requests", {"model": MODEL})
        is None
    )


async def test_unconfigured_models_are_labelled_other() -> None:
    gateway, registry = _gateway(ScriptedProvider(["a", "b"]))
    await gateway.complete(ChatRequest("someone/else-model", REQUEST.messages))
    await gateway.complete(ChatRequest("x" * 300, REQUEST.messages))
    assert (
        value(
            registry,
            "llm_requests_total",
            model="other",
            stream_mode="non_streaming",
            status="success",
            operation="chat",
        )
        == 2
    )


async def test_log_events_carry_the_same_model_latency_and_error_type() -> None:
    clock = FakeClock()
    provider = TimedProvider(clock, ttft=0.25, gap=0.0, words=2)
    gateway, registry = _gateway(provider, clock)
    with capture_logs() as logs:
        await gateway.complete(REQUEST)
    started, completed = [e for e in logs if e["event"].startswith("llm_request")]
    assert started["event"] == "llm_request_started"
    assert started["model"] == MODEL
    assert completed["event"] == "llm_request_completed"
    assert completed["latency_seconds"] == pytest.approx(
        value(registry, "llm_latency_seconds_sum", model=MODEL, stream_mode="non_streaming")
    )

    failing, _ = _gateway(ScriptedProvider([LLMError(LLMErrorKind.AUTH, "no")]))
    with capture_logs() as logs, pytest.raises(LLMError):
        await failing.complete(REQUEST)
    failed = next(e for e in logs if e["event"] == "llm_request_failed")
    assert failed["error_type"] == "auth"
    assert failed["log_level"] == "error"


def test_price_table_covers_the_default_model() -> None:
    assert MODEL in PRICES
    assert estimate_cost("unknown", Usage(1, 1, 2)) is None
    assert estimate_cost(MODEL, Usage(1_000_000, 0, 1_000_000)) == PRICES[MODEL].input_per_million


async def test_a_rate_limited_answer_updates_the_headroom_gauges() -> None:
    """A 429 carries the provider's remaining quota (zero, typically): the gauges showed the
    last success's headroom instead, hiding an exhausted quota."""
    limited = LLMError(
        LLMErrorKind.RATE_LIMITED, "slow down", rate_limit=RateLimit(remaining_requests=0)
    )
    gateway, registry = _gateway(ScriptedProvider([limited]), retries=0)
    with pytest.raises(LLMError):
        await gateway.complete(REQUEST)
    assert value(registry, "llm_rate_limit_remaining_requests", model=MODEL) == 0


def test_the_simulated_provider_costs_nothing(tmp_path: Path) -> None:
    """Its traffic answers as a Groq model, and was priced at Groq's rates: a bill for
    nothing on the dashboard."""
    assert estimate_cost(MODEL, Usage(1_000, 1_000, 2_000), provider="simulated") is None
    assert estimate_cost(MODEL, Usage(1_000, 1_000, 2_000), provider="groq")
    with app_client(make_settings(tmp_path)) as client:
        make_goal(client)
        conversation_id = make_conversation(client)
        client.post(f"/v1/conversations/{conversation_id}/messages", json={"content": "hi"})
        registry = client.app.state.instrumentation.registry  # type: ignore[attr-defined]
        model = client.app.state.parley.settings.default_model  # type: ignore[attr-defined]
        assert value(registry, "llm_tokens_used_total", model=model, type="total")
        assert not value(registry, "llm_cost_usd_total", model=model, key_name="", operation="chat")


def test_cached_prompt_tokens_are_priced_at_groqs_cached_rate() -> None:
    """Half the input price on models with prompt caching; the full price elsewhere."""
    cached = "openai/gpt-oss-20b"
    price = PRICES[cached]
    assert price.cached_input_per_million == price.input_per_million / 2
    usage = Usage(1_000_000, 1_000_000, 2_000_000, cached_prompt_tokens=600_000)
    assert estimate_cost(cached, usage) == pytest.approx(
        0.4 * price.input_per_million
        + 0.6 * price.cached_input_per_million
        + price.output_per_million
    )
    uncached = PRICES[MODEL]
    assert uncached.cached_input_per_million is None
    assert estimate_cost(MODEL, usage) == pytest.approx(
        uncached.input_per_million + uncached.output_per_million
    )


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True])
def test_stored_usage_metrics_and_cost_agree_with_what_groq_bills(
    tmp_path: Path, stream: bool
) -> None:
    """A Groq reply with cached prompt tokens: the stored usage keeps them, the token
    counter counts them as cached_prompt, and the cost counter is the stored usage priced
    at the cached rate (it was priced as if no token were cached)."""
    model = "openai/gpt-oss-20b"
    fake = GroqTestServer()
    fake.then(Reply("cached answer", prompt_tokens=3000, cached_tokens=2048))
    with LiveServer(fake.app) as groq:
        settings = make_settings(
            tmp_path,
            llm_provider="groq",
            groq_api_key="gsk_test",
            groq_base_url=groq.http_url,
            default_model=model,
        )
        with app_client(settings) as client:
            make_goal(client)
            conversation_id = make_conversation(client)
            turn = client.post(
                f"/v1/conversations/{conversation_id}/messages",
                json={"content": "hello", "stream": stream},
            )
            assert turn.status_code == 200, turn.text
            stored = client.get(f"/v1/conversations/{conversation_id}").json()
            registry = client.app.state.instrumentation.registry  # type: ignore[attr-defined]
    (reply,) = [m for m in stored["messages"] if m["role"] == "assistant"]
    assert reply["usage"] == {
        "prompt_tokens": 3000,
        "completion_tokens": 2,
        "total_tokens": 3002,
        "cached_prompt_tokens": 2048,
    }
    assert value(registry, "llm_tokens_used_total", model=model, type="prompt") == 3000
    assert value(registry, "llm_tokens_used_total", model=model, type="cached_prompt") == 2048
    price = PRICES[model]
    billed = (952 * 0.075 + 2048 * 0.0375 + 2 * 0.30) / 1_000_000
    assert (price.input_per_million, price.output_per_million) == (0.075, 0.30)
    assert value(
        registry, "llm_cost_usd_total", model=model, key_name="", operation="chat"
    ) == pytest.approx(billed)
    assert estimate_cost(model, Usage(**reply["usage"])) == pytest.approx(billed)


async def test_the_genai_metrics_move_with_the_llm_ones_call_for_call() -> None:
    """gen_ai_client_operation_duration_seconds and gen_ai_client_token_usage are the
    same observations as llm_latency_seconds and llm_tokens_used_total."""
    clock = FakeClock()
    provider = TimedProvider(clock, ttft=0.4, gap=0.05, words=5)
    gateway, registry = _gateway(provider, clock, retries=0)
    await collect(gateway.stream(REQUEST), [])
    await gateway.complete(REQUEST)
    provider.cut_after = 2
    with pytest.raises(LLMError):
        await collect(gateway.stream(REQUEST), [])

    calls = total(registry, "llm_requests_total")
    assert calls == 3
    assert total(registry, "gen_ai_client_operation_duration_seconds_count") == calls
    assert total(registry, "gen_ai_client_operation_duration_seconds_sum") == pytest.approx(
        total(registry, "llm_latency_seconds_sum")
    )
    failed = {"error_type": "stream_interrupted"}
    assert total(registry, "gen_ai_client_operation_duration_seconds_count", **failed) == 1
    labels = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "other",  # the test's provider: not one Parley has
        "gen_ai_request_model": MODEL,
        "gen_ai_response_model": MODEL,
    }
    for genai, ours in (("input", "prompt"), ("output", "completion")):
        used = total(registry, "gen_ai_client_token_usage_sum", **labels, gen_ai_token_type=genai)
        assert used == total(registry, "llm_tokens_used_total", model=MODEL, type=ours), genai
    # The conventions' boundaries, to 81.92 s.
    assert (
        value(
            registry,
            "gen_ai_client_operation_duration_seconds_bucket",
            **labels,
            error_type="",
            le="81.92",
        )
        == 2
    )
