"""The one place every provider call goes through: timeouts, retries and call observers.

Observers see each logical call (start, retries, first token, end), which is where the
metrics and the structured logs hook in without the providers knowing about either.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from parley import defaults
from parley.llm.errors import LLMError, LLMErrorKind
from parley.llm.provider import LLMProvider
from parley.llm.tokens import estimate_usage
from parley.llm.types import (
    ChatMessage,
    ChatRequest,
    Completion,
    Operation,
    RateLimit,
    StreamChunk,
    Usage,
)


@dataclass(frozen=True, slots=True)
class LLMCallInfo:
    provider: str
    model: str
    streaming: bool
    operation: Operation = Operation.CHAT
    conversation_id: str | None = None
    max_tokens: int | None = None
    messages: tuple[ChatMessage, ...] = ()  # what the provider is sent


class LLMCallRecorder(Protocol):
    """Told what happens during one logical call (all its attempts). ``wants_content``:
    ``succeeded`` is given the reply's text (content capture is on); else it never is,
    and a stream's chunks are not collected for it."""

    wants_content: bool

    def retrying(self, error: LLMError, attempt: int, wait_seconds: float) -> None: ...

    def first_token(self) -> None: ...

    def succeeded(
        self,
        usage: Usage | None,
        rate_limit: RateLimit | None,
        *,
        response_model: str | None = None,
        finish_reason: str | None = None,
        content: str | None = None,
    ) -> None: ...

    def propagation_headers(self) -> Mapping[str, str]:
        """Headers the provider request should carry for this call (trace context)."""
        ...

    def failed(self, error: LLMError, usage: Usage | None = None) -> None:
        """``usage``: what the call was billed for although it failed (a stopped stream)."""
        ...


class LLMCallObserver(Protocol):
    def call_started(self, call: LLMCallInfo) -> LLMCallRecorder: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = defaults.LLM_MAX_RETRIES
    backoff_seconds: float = defaults.LLM_RETRY_BACKOFF_SECONDS
    max_wait_seconds: float = defaults.LLM_RETRY_MAX_WAIT_SECONDS

    def wait_before(self, attempt: int, error: LLMError) -> float:
        """Seconds to wait before ``attempt`` (1 = first retry); honours Retry-After."""
        if error.retry_after is not None:
            return min(error.retry_after, self.max_wait_seconds)
        return min(self.backoff_seconds * 2.0 ** (attempt - 1), self.max_wait_seconds)


class LLMGateway:
    def __init__(
        self,
        provider: LLMProvider,
        *,
        timeout_seconds: float = defaults.LLM_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
        observers: Sequence[LLMCallObserver] = (),
    ) -> None:
        self.provider = provider
        self.timeout_seconds = timeout_seconds
        self.retry = retry or RetryPolicy()
        self.observers = list(observers)

    def add_observer(self, observer: LLMCallObserver) -> None:
        self.observers.append(observer)

    async def complete(self, request: ChatRequest) -> Completion:
        recorders = self._start(request, streaming=False)
        request = _with_headers(request, recorders)
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    completion = await self.provider.complete(request)
            except asyncio.CancelledError:
                # The turn was abandoned (client gone): billed for the prompt at least.
                _notify_cancelled(recorders, estimate_usage(request, 0))
                raise
            except Exception as exc:
                error = _as_llm_error(exc)
                if not await self._should_retry(recorders, error, attempt):
                    _notify_failed(recorders, error)
                    raise error from exc
                attempt += 1
                continue
            for recorder in recorders:
                recorder.succeeded(
                    completion.usage,
                    completion.rate_limit,
                    response_model=completion.model,
                    finish_reason=completion.finish_reason,
                    content=completion.content if recorder.wants_content else None,
                )
            return completion

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        """Stream a reply; a failure before the first content chunk is retried.

        The timeout covers the wait for the first content (connection, queueing, time to
        first token). After that, stalls between chunks are the provider's transport
        read timeout to catch (the Groq SDK's is the same setting), which keeps the
        per-chunk path free of timer bookkeeping.
        """
        recorders = self._start(request, streaming=True)
        request = _with_headers(request, recorders)
        attempt = 0
        capture = any(recorder.wants_content for recorder in recorders)
        while True:
            texts: list[str] | None = [] if capture else None
            seen_content = False
            content_chunks = 0
            usage: Usage | None = None
            rate_limit: RateLimit | None = None
            finish_reason: str | None = None
            chunks = aiter(self.provider.stream(request))
            try:
                start = await self._first_content(chunks)
                usage, rate_limit = start.usage, start.rate_limit
                # Yielded outside the timeout: its timer must never fire while the
                # consumer, not the provider, holds control.
                for chunk in start.preamble:
                    yield chunk
                if start.first is not None:
                    seen_content = True
                    for recorder in recorders:
                        recorder.first_token()
                    content_chunks = 1
                    if texts is not None:
                        texts.append(start.first.content)
                    yield start.first
                    async for chunk in chunks:
                        if chunk.usage is not None:
                            usage = chunk.usage
                        finish_reason = chunk.finish_reason or finish_reason
                        content_chunks += bool(chunk.content)
                        if texts is not None:
                            texts.append(chunk.content)
                        yield chunk
            except Exception as exc:
                error = _as_llm_error(exc, mid_stream=seen_content)
                if seen_content or not await self._should_retry(recorders, error, attempt):
                    _notify_failed(recorders, error)
                    raise error from exc
                attempt += 1
                continue
            except (GeneratorExit, asyncio.CancelledError):
                # The consumer went away (client disconnected): the call ends unfinished,
                # billed for the prompt and what it produced so far.
                _notify_cancelled(recorders, usage or estimate_usage(request, content_chunks))
                raise
            finally:
                await _aclose(chunks)
            content = "".join(texts) if texts is not None else None
            for recorder in recorders:
                wanted = content if recorder.wants_content else None
                recorder.succeeded(usage, rate_limit, finish_reason=finish_reason, content=wanted)
            return

    async def _first_content(self, chunks: AsyncIterator[StreamChunk]) -> _StreamStart:
        """Read up to the first content chunk, within the timeout."""
        start = _StreamStart()
        async with asyncio.timeout(self.timeout_seconds):
            async for chunk in chunks:
                start.usage = chunk.usage or start.usage
                start.rate_limit = chunk.rate_limit or start.rate_limit
                if chunk.content:
                    start.first = chunk
                    break
                start.preamble.append(chunk)
        return start

    def _start(self, request: ChatRequest, *, streaming: bool) -> list[LLMCallRecorder]:
        info = LLMCallInfo(
            self.provider.name,
            request.model,
            streaming,
            request.operation,
            request.conversation_id,
            request.max_tokens,
            request.messages,
        )
        return [observer.call_started(info) for observer in self.observers]

    async def _should_retry(
        self, recorders: list[LLMCallRecorder], error: LLMError, attempt: int
    ) -> bool:
        if not error.retryable or attempt >= self.retry.max_retries:
            return False
        wait = self.retry.wait_before(attempt + 1, error)
        for recorder in recorders:
            recorder.retrying(error, attempt + 1, wait)
        await asyncio.sleep(wait)
        return True

    async def aclose(self) -> None:
        await self.provider.aclose()


def _with_headers(request: ChatRequest, recorders: list[LLMCallRecorder]) -> ChatRequest:
    """The request with the headers its observers ask for (none: the request as it is)."""
    headers = [pair for r in recorders for pair in r.propagation_headers().items()]
    return dataclasses.replace(request, headers=tuple(headers)) if headers else request


def _as_llm_error(exc: Exception, *, mid_stream: bool = False) -> LLMError:
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, TimeoutError):
        if mid_stream:
            return LLMError(LLMErrorKind.STREAM_INTERRUPTED, "stream stalled past the timeout")
        return LLMError(LLMErrorKind.TIMEOUT, "LLM call timed out")
    return LLMError(LLMErrorKind.UNKNOWN, f"provider raised {type(exc).__name__}")


def _notify_failed(
    recorders: list[LLMCallRecorder], error: LLMError, usage: Usage | None = None
) -> None:
    for recorder in recorders:
        recorder.failed(error, usage)


def _notify_cancelled(recorders: list[LLMCallRecorder], billed: Usage) -> None:
    _notify_failed(recorders, LLMError(LLMErrorKind.CANCELLED, "client went away"), billed)


@dataclass(slots=True)
class _StreamStart:
    """What a stream sent up to its first content: metadata chunks, then that chunk."""

    preamble: list[StreamChunk] = field(default_factory=list)
    first: StreamChunk | None = None
    usage: Usage | None = None
    rate_limit: RateLimit | None = None


async def _aclose(iterator: AsyncIterator[StreamChunk]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
