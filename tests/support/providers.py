"""Scripted providers for tests that need a backend to fail in a particular way."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable

from parley.llm import ChatRequest, Completion, LLMError, StreamChunk, Usage

Step = LLMError | str


class ScriptedProvider:
    """Each call takes the next step: an ``LLMError`` to raise, or a reply text.

    For streams, ``fail_after`` content chunks of a reply the error in ``mid_stream``
    is raised instead of finishing.
    """

    name = "scripted"

    def __init__(
        self,
        steps: Iterable[Step] = (),
        *,
        mid_stream: LLMError | None = None,
        fail_after: int = 1,
        chunk_delay: float = 0.0,
        first_delay: float = 0.0,
    ) -> None:
        self.steps: deque[Step] = deque(steps)
        self.mid_stream = mid_stream
        self.fail_after = fail_after
        self.chunk_delay = chunk_delay
        self.first_delay = first_delay  # before the first content chunk
        self.calls: list[ChatRequest] = []
        self.closed_streams = 0

    def _next(self, request: ChatRequest) -> str:
        self.calls.append(request)
        step = self.steps.popleft() if self.steps else "ok reply"
        if isinstance(step, LLMError):
            raise step
        return step

    async def complete(self, request: ChatRequest) -> Completion:
        text = self._next(request)
        if self.first_delay:
            await asyncio.sleep(self.first_delay)
        return Completion(text, request.model, Usage(5, len(text.split()), 5 + len(text.split())))

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        text = self._next(request)
        words = text.split(" ")
        try:
            yield StreamChunk()
            if self.first_delay:
                await asyncio.sleep(self.first_delay)
            for index, word in enumerate(words):
                if self.mid_stream is not None and index == self.fail_after:
                    raise self.mid_stream
                if self.chunk_delay and index:
                    await asyncio.sleep(self.chunk_delay)
                yield StreamChunk(content=word if index == 0 else " " + word)
            yield StreamChunk(usage=Usage(5, len(words), 5 + len(words)), finish_reason="stop")
        finally:
            self.closed_streams += 1

    async def aclose(self) -> None:
        return None


async def collect(stream: AsyncIterable[StreamChunk], into: list[str]) -> None:
    """Gather a stream's content into ``into``, so a test can look at it after a failure."""
    async for chunk in stream:
        into.append(chunk.content)
