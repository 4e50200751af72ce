"""Groq through its official SDK (``AsyncGroq``), streaming and not.

The SDK's own retries are switched off: the gateway retries, so that every attempt
and every retry is seen in one place.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import groq
import httpx
from groq.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
from groq.types.completion_usage import CompletionUsage

from parley.llm.errors import LLMError, LLMErrorKind
from parley.llm.types import ChatRequest, Completion, RateLimit, StreamChunk, Usage


class GroqProvider:
    name = "groq"

    def __init__(
        self, *, api_key: str, base_url: str | None = None, timeout_seconds: float = 30.0
    ) -> None:
        self._client = groq.AsyncGroq(
            api_key=api_key, base_url=base_url, timeout=timeout_seconds, max_retries=0
        )

    async def complete(self, request: ChatRequest) -> Completion:
        try:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=request.model,
                messages=_messages(request),
                max_tokens=request.max_tokens,
            )
            completion = await raw.parse()
        except Exception as exc:
            raise to_llm_error(exc) from exc
        if not completion.choices:
            raise LLMError(LLMErrorKind.MALFORMED_RESPONSE, "response has no choices")
        return Completion(
            content=completion.choices[0].message.content or "",
            model=completion.model,
            usage=_usage(completion.usage),
            finish_reason=completion.choices[0].finish_reason,
            rate_limit=rate_limit_from_headers(raw.headers),
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        try:
            stream = await self._client.chat.completions.create(
                model=request.model,
                messages=_messages(request),
                max_tokens=request.max_tokens,
                stream=True,
            )
        except Exception as exc:
            raise to_llm_error(exc) from exc
        rate_limit: RateLimit | None = rate_limit_from_headers(stream.response.headers)
        # Only content counts as started: a cut after the role-only opening chunk is a
        # connection error the gateway may retry, not an interrupted reply.
        started = False
        try:
            async for chunk in stream:
                piece = _stream_chunk(chunk, rate_limit)
                rate_limit = None
                started = started or bool(piece.content)
                yield piece
        except Exception as exc:
            error = to_llm_error(exc)
            if started and error.kind in (LLMErrorKind.CONNECTION, LLMErrorKind.TIMEOUT):
                error = LLMError(LLMErrorKind.STREAM_INTERRUPTED, error.message)
            raise error from exc
        finally:
            await stream.close()

    async def aclose(self) -> None:
        await self._client.close()


def _messages(request: ChatRequest) -> list[ChatCompletionMessageParam]:
    messages: list[Any] = [{"role": m.role.value, "content": m.content} for m in request.messages]
    return messages


def _usage(usage: CompletionUsage | None) -> Usage | None:
    if usage is None:
        return None
    return Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


def _stream_chunk(chunk: ChatCompletionChunk, rate_limit: RateLimit | None) -> StreamChunk:
    choice = chunk.choices[0] if chunk.choices else None
    # Groq reports stream usage in x_groq.usage; OpenAI-style servers in usage.
    usage = chunk.usage or (chunk.x_groq.usage if chunk.x_groq else None)
    return StreamChunk(
        content=(choice.delta.content or "") if choice else "",
        usage=_usage(usage),
        finish_reason=choice.finish_reason if choice else None,
        rate_limit=rate_limit,
    )


def rate_limit_from_headers(headers: Mapping[str, str]) -> RateLimit | None:
    requests = _int_header(headers, "x-ratelimit-remaining-requests")
    tokens = _int_header(headers, "x-ratelimit-remaining-tokens")
    if requests is None and tokens is None:
        return None
    return RateLimit(remaining_requests=requests, remaining_tokens=tokens)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def to_llm_error(exc: BaseException) -> LLMError:
    """Map an SDK or transport exception onto the fixed set of error kinds."""
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, groq.APITimeoutError | httpx.TimeoutException):
        return LLMError(LLMErrorKind.TIMEOUT, "request to Groq timed out")
    if isinstance(exc, groq.APIConnectionError):
        return LLMError(LLMErrorKind.CONNECTION, "could not connect to Groq")
    if isinstance(exc, groq.RateLimitError):
        return LLMError(
            LLMErrorKind.RATE_LIMITED,
            "Groq rate limit reached",
            retry_after=_retry_after(exc.response),
            rate_limit=rate_limit_from_headers(exc.response.headers),
        )
    if isinstance(exc, groq.AuthenticationError | groq.PermissionDeniedError):
        return LLMError(LLMErrorKind.AUTH, "Groq refused the API key")
    if isinstance(exc, groq.InternalServerError):
        return LLMError(LLMErrorKind.SERVER_ERROR, f"Groq answered {exc.status_code}")
    if isinstance(exc, groq.APIStatusError):
        kind = LLMErrorKind.SERVER_ERROR if exc.status_code >= 500 else LLMErrorKind.BAD_REQUEST
        return LLMError(kind, f"Groq answered {exc.status_code}")
    if isinstance(exc, groq.APIResponseValidationError | json.JSONDecodeError):
        return LLMError(LLMErrorKind.MALFORMED_RESPONSE, "Groq sent a response Parley cannot read")
    if isinstance(exc, groq.APIError):
        # An error event inside a stream.
        return LLMError(LLMErrorKind.SERVER_ERROR, "Groq reported an error mid-stream")
    if isinstance(exc, httpx.TransportError):
        return LLMError(LLMErrorKind.CONNECTION, "connection to Groq failed")
    return LLMError(LLMErrorKind.UNKNOWN, type(exc).__name__)
