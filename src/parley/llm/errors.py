"""The one error type providers raise, with a kind from a fixed set."""

from __future__ import annotations

from enum import StrEnum

from parley.llm.types import RateLimit


class LLMErrorKind(StrEnum):
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    SERVER_ERROR = "server_error"
    BAD_REQUEST = "bad_request"
    AUTH = "auth"
    MALFORMED_RESPONSE = "malformed_response"
    STREAM_INTERRUPTED = "stream_interrupted"
    CANCELLED = "cancelled"  # the client went away; not the provider's fault
    UNKNOWN = "unknown"


# Worth another attempt: the same request may well succeed a moment later.
RETRYABLE = frozenset(
    {
        LLMErrorKind.RATE_LIMITED,
        LLMErrorKind.TIMEOUT,
        LLMErrorKind.CONNECTION,
        LLMErrorKind.SERVER_ERROR,
    }
)


class LLMError(Exception):
    def __init__(
        self,
        kind: LLMErrorKind,
        message: str,
        *,
        retry_after: float | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        self.rate_limit = rate_limit  # the quota left, as the failed answer reported it

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE
