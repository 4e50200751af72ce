"""LLM providers behind one small protocol, and the gateway every call goes through."""

from parley.llm.errors import LLMError, LLMErrorKind
from parley.llm.gateway import (
    LLMCallInfo,
    LLMCallObserver,
    LLMCallRecorder,
    LLMGateway,
    RetryPolicy,
)
from parley.llm.provider import LLMProvider
from parley.llm.types import (
    ChatMessage,
    ChatRequest,
    Completion,
    Operation,
    RateLimit,
    Role,
    StreamChunk,
    Usage,
)

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "Completion",
    "LLMCallInfo",
    "LLMCallObserver",
    "LLMCallRecorder",
    "LLMError",
    "LLMErrorKind",
    "LLMGateway",
    "LLMProvider",
    "Operation",
    "RateLimit",
    "RetryPolicy",
    "Role",
    "StreamChunk",
    "Usage",
]
