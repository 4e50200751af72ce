"""Groq through its official SDK (``AsyncGroq``), streaming and not.

The SDK's own retries are switched off: the gateway retries, so that every attempt
and every retry is seen in one place.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import groq
import httpx
from groq.types.completion_usage import CompletionUsage

from parley import defaults
from parley.llm.errors import LLMError, LLMErrorKind
from parley.llm.types import ChatRequest, Completion, RateLimit, StreamChunk, Usage


class GroqProvider:
    name = "groq"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout_seconds: float = defaults.LLM_TIMEOUT_SECONDS,
        max_connections: int = defaults.LLM_MAX_CONNECTIONS,
    ) -> None:
        # One connection per stream in flight: the SDK's default pool (100) queued the
        # 101st stream behind the others.
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = groq.AsyncGroq(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout_seconds,
            max_retries=0,
            # The SDK's aiohttp transport (its ``aiohttp`` extra): httpx's own reads a
            # stream through h11 and an anyio cancel scope per read, a third of a
            # streamed turn's CPU; aiohttp parses in C on plain asyncio.
            http_client=groq.DefaultAioHttpClient(limits=limits, timeout=timeout_seconds),
        )

    async def complete(self, request: ChatRequest) -> Completion:
        try:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=request.model,
                messages=[],
                max_tokens=request.max_tokens,
                # Groq's JSON mode: the reply is one JSON object (the judge's verdict).
                response_format={"type": "json_object"} if request.json_output else groq.omit,
                extra_body=_history(request),
                extra_headers=dict(request.headers) if request.headers else None,
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
        # The SDK makes the request (auth, headers, status errors); its raw response is
        # read here by a lean parser: building its pydantic model for every chunk was
        # the largest CPU cost of a streamed turn.
        opening = self._client.chat.completions.with_streaming_response.create(
            model=request.model,
            messages=[],
            max_tokens=request.max_tokens,
            stream=True,
            extra_body=_history(request),
            extra_headers=dict(request.headers) if request.headers else None,
        )
        try:
            response = await opening.__aenter__()
        except Exception as exc:
            raise to_llm_error(exc) from exc
        rate_limit: RateLimit | None = rate_limit_from_headers(response.headers)
        # Only content counts as started: a cut after the role-only opening chunk is a
        # connection error the gateway may retry, not an interrupted reply.
        started = False
        try:
            async for data in server_sent_data(response.iter_lines()):
                if data.startswith("[DONE]"):
                    break
                piece = stream_chunk(json.loads(data), rate_limit)
                rate_limit = None
                started = started or bool(piece.content)
                yield piece
        except Exception as exc:
            error = to_llm_error(exc)
            if started and error.kind in (LLMErrorKind.CONNECTION, LLMErrorKind.TIMEOUT):
                error = LLMError(LLMErrorKind.STREAM_INTERRUPTED, error.message)
            raise error from exc
        finally:
            await opening.__aexit__(None, None, None)

    async def aclose(self) -> None:
        await self._client.close()


def _history(request: ChatRequest) -> dict[str, list[dict[str, str]]]:
    """The messages, as the body's ``messages``: given through ``extra_body``, which the
    SDK merges into the JSON as it is, they skip its type-driven transform of the
    params, which walked every message of the history on every call (15 % of a
    streamed turn's CPU with 40 messages). Plain role/content strings need none."""
    return {"messages": [{"role": m.role.value, "content": m.content} for m in request.messages]}


def _usage(usage: CompletionUsage | None) -> Usage | None:
    if usage is None:
        return None
    details = usage.prompt_tokens_details
    return Usage(
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        details.cached_tokens if details is not None else 0,
    )


async def server_sent_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The data of each server-sent event (its ``data:`` lines joined); an ``error``
    event, or a payload carrying ``error``, raises the SDK's own ``APIError``."""
    event: str | None = None
    data: list[str] = []
    async for line in lines:
        if line:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "event":
                event = value
            continue
        if data:
            joined = "\n".join(data)
            if event == "error" or joined.startswith('{"error"'):
                raise groq.APIError("Groq reported an error mid-stream", _request(), body=joined)
            yield joined
        event, data = None, []
    if data:
        yield "\n".join(data)


def _request() -> httpx.Request:
    return httpx.Request("POST", "https://api.groq.com/openai/v1/chat/completions")


def stream_chunk(payload: Any, rate_limit: RateLimit | None) -> StreamChunk:
    """One chunk of an OpenAI-style stream, read as plain JSON (no model validation);
    anything not shaped as documented is a malformed response."""
    try:
        choices = payload.get("choices") or ()
        choice = choices[0] if choices else None
        delta = (choice.get("delta") or {}) if choice else {}
        content = delta.get("content") or ""
        # Groq reports stream usage in x_groq.usage; OpenAI-style servers in usage.
        usage = payload.get("usage") or (payload.get("x_groq") or {}).get("usage")
        if not isinstance(content, str):
            raise TypeError("content is not text")
        return StreamChunk(
            content=content,
            usage=_usage_of(usage) if usage else None,
            finish_reason=choice.get("finish_reason") if choice else None,
            rate_limit=rate_limit,
        )
    except (AttributeError, IndexError, KeyError, TypeError) as exc:
        raise LLMError(
            LLMErrorKind.MALFORMED_RESPONSE, "Groq sent a response Parley cannot read"
        ) from exc


def _usage_of(usage: Mapping[str, Any]) -> Usage:
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        int(usage["prompt_tokens"]),
        int(usage["completion_tokens"]),
        int(usage["total_tokens"]),
        int(details.get("cached_tokens") or 0),
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


def _aiohttp_cause(exc: BaseException) -> BaseException | None:
    cause = exc.__cause__
    while cause is not None and not isinstance(cause, aiohttp.ClientError):
        cause = cause.__cause__
    return cause


def to_llm_error(exc: BaseException) -> LLMError:
    """Map an SDK or transport exception onto the fixed set of error kinds."""
    if isinstance(exc, LLMError):
        return exc
    cause = _aiohttp_cause(exc)
    if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(
        cause, aiohttp.ServerTimeoutError
    ):
        # httpx-aiohttp raises every aiohttp connection error, a refused connection or a
        # server hanging up included, as httpx's ConnectTimeout; the cause tells.
        return LLMError(LLMErrorKind.CONNECTION, "connection to Groq failed")
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
