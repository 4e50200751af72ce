"""What a provider implements. An OpenAI-compatible backend is a short file against this."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from parley.llm.types import ChatRequest, Completion, StreamChunk


class LLMProvider(Protocol):
    name: str

    async def complete(self, request: ChatRequest) -> Completion:
        """Return the whole reply; raise ``LLMError`` on failure."""
        ...

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        """Yield the reply in chunks; the last one carries usage when the backend reports it."""
        ...

    async def aclose(self) -> None: ...
