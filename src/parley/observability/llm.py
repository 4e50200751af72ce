"""LLM call instrumentation: metrics and log events from one set of measurements.

Every call is one ``LLMCall``: the start, any retries, the first content chunk and
the end (success or a typed failure) each update the metrics and write a structured
log event with the same model, latency and error type.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from parley.observability.caller import current_caller
from parley.observability.catalogue import LLM_OPERATIONS, LLM_PROVIDERS, LLMMetrics
from parley.observability.labels import Allowlist
from parley.observability.request_id import request_exemplar


class LLMInstrumentation:
    def __init__(
        self,
        metrics: LLMMetrics,
        *,
        models: Iterable[str],
        error_types: Iterable[str],
        key_names: Callable[[str], str] = lambda name: name,
        logger: Any = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.metrics = metrics
        self.models = Allowlist(models)
        self.error_types = Allowlist(error_types)
        self.key_names = key_names  # bounds the key_name label (a CappedLabel)
        self.logger = logger or structlog.get_logger("parley.llm")
        self.clock = clock
        metrics.precreate(tuple(sorted(self.models.values)), tuple(sorted(self.error_types.values)))

    def start(
        self, model: str, *, streaming: bool, provider: str, operation: str = "chat"
    ) -> LLMCall:
        return LLMCall(self, model, streaming=streaming, provider=provider, operation=operation)


class LLMCall:
    def __init__(
        self,
        owner: LLMInstrumentation,
        model: str,
        *,
        streaming: bool,
        provider: str,
        operation: str = "chat",
    ) -> None:
        self._owner = owner
        self._metrics = owner.metrics
        self.model = owner.models(model)
        self.stream_mode = "streaming" if streaming else "non_streaming"
        self.provider = provider if provider in LLM_PROVIDERS else "other"
        # chat: a turn's reply; judge: grading an ended conversation (a fixed set).
        self.operation = operation if operation in LLM_OPERATIONS else "chat"
        self._log = owner.logger.bind(
            provider=provider, model=model, stream_mode=self.stream_mode, operation=self.operation
        )
        self._started = self._owner.clock()
        self._first_token_at: float | None = None
        self._finished = False
        self._metrics.in_flight.labels(self.model).inc()
        self._log.info("llm_request_started")

    def retry(self, error_type: str, attempt: int, wait_seconds: float) -> None:
        error_type = self._owner.error_types(error_type)
        self._metrics.retries.labels(self.model, error_type).inc()
        self._log.warning(
            "llm_request_retrying",
            error_type=error_type,
            attempt=attempt,
            wait_seconds=wait_seconds,
        )

    def first_token(self) -> None:
        if self._first_token_at is None:
            self._first_token_at = self._owner.clock()
            self._metrics.ttft.labels(self.model).observe(self._first_token_at - self._started)

    def succeeded(
        self,
        *,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        total_tokens: int | None = None,
        cached_prompt_tokens: int | None = None,
        remaining_requests: int | None = None,
        remaining_tokens: int | None = None,
        cost_usd: float | None = None,
        response_model: str | None = None,
    ) -> None:
        if self._finished:
            return
        self._finished = True
        self._metrics.in_flight.labels(self.model).dec()
        latency = self._observe_latency()
        m, model = self._metrics, self.model
        m.requests.labels(model, self.stream_mode, "success", self.operation).inc()
        self._genai(latency, "", response_model, prompt_tokens, completion_tokens)
        self._count_billed(
            prompt_tokens, completion_tokens, total_tokens, cached_prompt_tokens, cost_usd
        )
        tpot = self._time_per_output_token(completion_tokens)
        if tpot is not None:
            m.time_per_output_token.labels(model).observe(tpot)
        self.headroom(remaining_requests, remaining_tokens)
        self._log.info(
            "llm_request_completed",
            latency_seconds=round(latency, 6),
            ttft_seconds=self._ttft(),
            prompt_tokens=prompt_tokens,
            cached_prompt_tokens=cached_prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost_usd,
        )

    def headroom(self, remaining_requests: int | None, remaining_tokens: int | None) -> None:
        """The provider's remaining quota, from any answer that reports it (a 429 too);
        left unset (not zeroed) when it does not."""
        m, model = self._metrics, self.model
        if remaining_requests is not None:
            m.rate_limit_remaining_requests.labels(model).set(remaining_requests)
        if remaining_tokens is not None:
            m.rate_limit_remaining_tokens.labels(model).set(remaining_tokens)

    def failed(
        self,
        error_type: str,
        *,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        total_tokens: int | None = None,
        cached_prompt_tokens: int | None = None,
        cost_usd: float | None = None,
    ) -> None:
        """The call ended in error; what was measured up to then is still recorded, tokens
        included (a stream stopped midway was billed for what it produced)."""
        if self._finished:
            return
        self._finished = True
        self._metrics.in_flight.labels(self.model).dec()
        error_type = self._owner.error_types(error_type)
        latency = self._observe_latency()
        self._metrics.requests.labels(self.model, self.stream_mode, "error", self.operation).inc()
        self._metrics.errors.labels(self.model, error_type).inc()
        self._genai(latency, error_type, None, prompt_tokens, completion_tokens)
        self._count_billed(
            prompt_tokens, completion_tokens, total_tokens, cached_prompt_tokens, cost_usd
        )
        # A client that left is no fault of the provider's, nor of ours: no error log.
        log = self._log.info if error_type == "cancelled" else self._log.error
        log(
            "llm_request_failed",
            latency_seconds=round(latency, 6),
            ttft_seconds=self._ttft(),
            error_type=error_type,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    def _genai(
        self,
        latency: float,
        error_type: str,
        response_model: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> None:
        """The GenAI conventions' client metrics, from the same observation as llm_*."""
        m = self._metrics
        labels = (
            "chat",  # gen_ai.operation.name: the judge's calls are chat completions too
            self.provider,
            self.model,
            self._owner.models(response_model) if response_model else self.model,
        )
        m.genai_duration.labels(*labels, error_type).observe(latency, exemplar=request_exemplar())
        for token_type, count in (("input", input_tokens), ("output", output_tokens)):
            if count is not None:
                m.genai_tokens.labels(*labels, token_type).observe(count)

    def _count_billed(
        self,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        total_tokens: int | None,
        cached_prompt_tokens: int | None,
        cost_usd: float | None,
    ) -> None:
        m, model = self._metrics, self.model
        for token_type, count in (
            ("prompt", prompt_tokens),
            ("cached_prompt", cached_prompt_tokens),
            ("completion", completion_tokens),
            ("total", total_tokens),
        ):
            if count:
                m.tokens.labels(model, token_type).inc(count)
        if cost_usd:
            caller = current_caller()
            key_name = self._owner.key_names(caller) if caller else ""
            m.cost.labels(model, key_name, self.operation).inc(cost_usd)

    def _observe_latency(self) -> float:
        latency = self._owner.clock() - self._started
        self._metrics.latency.labels(self.model, self.stream_mode).observe(
            latency, exemplar=request_exemplar()
        )
        return latency

    def _ttft(self) -> float | None:
        if self._first_token_at is None:
            return None
        return round(self._first_token_at - self._started, 6)

    def _time_per_output_token(self, completion_tokens: int | None) -> float | None:
        # Streams only, and only with tokens after the first: one observation per call.
        if self._first_token_at is None or not completion_tokens or completion_tokens < 2:
            return None
        return (self._owner.clock() - self._first_token_at) / (completion_tokens - 1)
