"""Structured start/complete/fail log events for every LLM call, as a gateway observer."""

from __future__ import annotations

import time
from typing import Any

from parley.llm.errors import LLMError
from parley.llm.gateway import LLMCallInfo, LLMCallRecorder
from parley.llm.types import RateLimit, Usage


class LoggingObserver:
    """Structured start/complete/fail events for every LLM call."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    def call_started(self, call: LLMCallInfo) -> LLMCallRecorder:
        return _LoggingRecorder(self._logger, call)


class _LoggingRecorder:
    def __init__(self, logger: Any, call: LLMCallInfo) -> None:
        self._log = logger
        self._call = call
        self._started = time.perf_counter()
        self._first_token: float | None = None
        self._emit("info", "llm_request_started")

    def _emit(self, level: str, event: str, **fields: object) -> None:
        getattr(self._log, level)(
            event,
            provider=self._call.provider,
            model=self._call.model,
            stream_mode="streaming" if self._call.streaming else "non_streaming",
            **fields,
        )

    def _elapsed(self) -> float:
        return round(time.perf_counter() - self._started, 6)

    def retrying(self, error: LLMError, attempt: int, wait_seconds: float) -> None:
        self._emit(
            "warning",
            "llm_request_retrying",
            error_type=error.kind.value,
            attempt=attempt,
            wait_seconds=wait_seconds,
        )

    def first_token(self) -> None:
        self._first_token = self._elapsed()

    def succeeded(self, usage: Usage | None, rate_limit: RateLimit | None) -> None:
        self._emit(
            "info",
            "llm_request_completed",
            latency_seconds=self._elapsed(),
            ttft_seconds=self._first_token,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )

    def failed(self, error: LLMError) -> None:
        self._emit(
            "error",
            "llm_request_failed",
            latency_seconds=self._elapsed(),
            error_type=error.kind.value,
            error=error.message,
        )
