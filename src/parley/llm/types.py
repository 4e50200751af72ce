"""Provider-neutral request and response values."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    # A human agent's message in a handed-off conversation: stored as such, and sent to the
    # LLM as the assistant's side once the bot has the conversation back.
    AGENT = "agent"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


class Operation(StrEnum):
    """What a call is for (a metric label): a turn's reply, or grading an ended one."""

    CHAT = "chat"
    JUDGE = "judge"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int | None = None
    operation: Operation = Operation.CHAT
    # Ask for a JSON object (the provider's JSON mode) rather than prose.
    json_output: bool = False
    # The conversation the call is for (traces name it; never sent to the provider).
    conversation_id: str | None = None
    # Headers the call carries besides the provider's own (a trace's traceparent).
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    # Of prompt_tokens, those the provider served from its prompt cache (billed lower).
    cached_prompt_tokens: int = 0


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Headroom the provider reports (Groq's ``x-ratelimit-remaining-*`` headers)."""

    remaining_requests: int | None = None
    remaining_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    content: str
    model: str
    usage: Usage | None
    finish_reason: str | None = None
    rate_limit: RateLimit | None = None


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One piece of a streamed reply. ``content`` may be empty (role-only or usage-only)."""

    content: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    rate_limit: RateLimit | None = None
