"""An offline provider: deterministic replies, realistic timing, optional failures.

It is the embedded default so that the service, its dashboards and its alerts can be
exercised without an API key. Replies are built from the conversation and token
counts are computed from the text.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from parley import defaults
from parley.llm.errors import LLMError, LLMErrorKind
from parley.llm.tokens import count_prompt_tokens, split_tokens
from parley.llm.types import (
    ChatRequest,
    Completion,
    Operation,
    RateLimit,
    Role,
    StreamChunk,
    Usage,
)

_OPENINGS = (
    "Thanks for reaching out.",
    "Happy to help with that.",
    "Good question.",
    "Let me look into that for you.",
)
_CLOSINGS = (
    "Is there anything else you would like to know?",
    "Let me know if that answers your question.",
    "Tell me more and I can be more specific.",
)


# A user message carrying this makes the simulated LLM fail (every attempt): `parley
# demo --fail` sends it to make failures, and their alerts, happen on purpose.
FAIL_MARKER = "[simulate-llm-failure]"
# In a transcript the judge reads, this makes the simulated judge answer prose, not the
# JSON verdict (a malformed answer, retried and then given up).
MALFORMED_VERDICT_MARKER = "[simulate-malformed-verdict]"
# The simulated judge's rule: achieved when the customer's last message says the goal
# was met in so many words; not achieved otherwise.
SATISFIED_WORDS = ("thank", "solved", "great", "perfect", "works")


@dataclass(frozen=True, slots=True)
class SimulatedTiming:
    ttft_seconds: float = defaults.SIM_TTFT_SECONDS
    token_delay_seconds: float = defaults.SIM_TOKEN_DELAY_SECONDS


class RateWindow:
    """A per-minute request and token quota, reported (and enforced) as Groq does."""

    def __init__(
        self,
        requests_per_minute: int,
        tokens_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._calls: deque[tuple[float, int]] = deque()
        # Kept as calls come and go: summing the window on every call cost O(calls a
        # minute), a few percent of a turn at a hundred turns a second.
        self._used_tokens = 0

    def admit(self, tokens: int) -> RateLimit:
        now = self._clock()
        while self._calls and now - self._calls[0][0] >= 60.0:
            self._used_tokens -= self._calls.popleft()[1]
        used_tokens = self._used_tokens
        if len(self._calls) >= self.requests_per_minute or (
            self._calls and used_tokens + tokens > self.tokens_per_minute
        ):
            raise LLMError(
                LLMErrorKind.RATE_LIMITED,
                "simulated rate limit reached",
                retry_after=round(60.0 - (now - self._calls[0][0]), 3),
                rate_limit=RateLimit(
                    remaining_requests=max(0, self.requests_per_minute - len(self._calls)),
                    remaining_tokens=max(0, self.tokens_per_minute - used_tokens),
                ),
            )
        self._calls.append((now, tokens))
        self._used_tokens += tokens
        return RateLimit(
            remaining_requests=self.requests_per_minute - len(self._calls),
            remaining_tokens=max(0, self.tokens_per_minute - used_tokens - tokens),
        )


class SimulatedProvider:
    name = "simulated"

    def __init__(
        self,
        *,
        timing: SimulatedTiming | None = None,
        failure_rate: float = 0.0,
        seed: int = 0,
        rate_window: RateWindow | None = None,
    ) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError("failure_rate must be between 0 and 1")
        self.timing = timing or SimulatedTiming()
        self.failure_rate = failure_rate
        self.rate_window = rate_window
        # One generator per provider: failures are reproducible for a seed, yet a retry
        # of the same request can succeed, as with a real flaky backend.
        self._random = random.Random(seed)

    async def complete(self, request: ChatRequest) -> Completion:
        prompt_tokens = count_prompt_tokens(request.messages)  # once: it reads the history
        rate_limit = self._admit(request, prompt_tokens)
        pieces, finish_reason = self._reply_pieces(request)
        await asyncio.sleep(
            self.timing.ttft_seconds + self.timing.token_delay_seconds * len(pieces)
        )
        return Completion(
            content="".join(pieces),
            model=request.model,
            usage=Usage(prompt_tokens, len(pieces), prompt_tokens + len(pieces)),
            finish_reason=finish_reason,
            rate_limit=rate_limit,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        prompt_tokens = count_prompt_tokens(request.messages)
        rate_limit = self._admit(request, prompt_tokens)
        pieces, finish_reason = self._reply_pieces(request)
        # Role-only opening chunk, as OpenAI-style APIs send; headers arrive with it.
        yield StreamChunk(rate_limit=rate_limit)
        await asyncio.sleep(self.timing.ttft_seconds)
        for index, piece in enumerate(pieces):
            if index:
                await asyncio.sleep(self.timing.token_delay_seconds)
            yield StreamChunk(content=piece)
        usage = Usage(prompt_tokens, len(pieces), prompt_tokens + len(pieces))
        yield StreamChunk(usage=usage, finish_reason=finish_reason)

    async def aclose(self) -> None:
        return None

    def _admit(self, request: ChatRequest, prompt_tokens: int) -> RateLimit | None:
        """Quota first (as a real API checks it before the model runs), then failures."""
        rate_limit = None
        if self.rate_window is not None:
            rate_limit = self.rate_window.admit(prompt_tokens + (request.max_tokens or 0))
        if self.failure_rate and self._random.random() < self.failure_rate:
            raise LLMError(LLMErrorKind.SERVER_ERROR, "simulated provider failure")
        last = next((m for m in reversed(request.messages) if m.role is Role.USER), None)
        chat = request.operation is Operation.CHAT  # a judge reads the marker in a transcript
        if chat and last is not None and FAIL_MARKER in last.content:
            raise LLMError(LLMErrorKind.SERVER_ERROR, "simulated provider failure (asked for)")
        return rate_limit

    @staticmethod
    def _reply_pieces(request: ChatRequest) -> tuple[list[str], str]:
        if request.operation is Operation.JUDGE:
            return split_tokens(judge_verdict(request)), "stop"
        pieces = split_tokens(compose_reply(request))
        if request.max_tokens is not None and len(pieces) > request.max_tokens:
            return pieces[: request.max_tokens], "length"
        return pieces, "stop"


def compose_reply(request: ChatRequest) -> str:
    """The reply for a conversation: same conversation, same words."""
    user_turns = [m.content for m in request.messages if m.role is Role.USER]
    last = user_turns[-1] if user_turns else ""
    digest = hashlib.sha256("\x1f".join(m.content for m in request.messages).encode()).digest()
    topic = " ".join(last.split()[:12]).rstrip(".?!") or "your request"
    system = next((m.content for m in request.messages if m.role is Role.SYSTEM), "")
    focus = " ".join(system.split()[:8]).rstrip(".?!")
    sentences = [
        _OPENINGS[digest[0] % len(_OPENINGS)],
        f'You asked about "{topic}".',
        f"This is turn {len(user_turns)} of our conversation.",
    ]
    if focus:
        sentences.append(f"My brief is: {focus}.")
    sentences.append(_CLOSINGS[digest[1] % len(_CLOSINGS)])
    return " ".join(sentences)


def judge_verdict(request: ChatRequest) -> str:
    """The simulated judge, deterministic and offline: reads the transcript's last
    ``customer:`` line; achieved (score 0.9) when it holds one of SATISFIED_WORDS, not
    achieved (0.2) otherwise; prose, not JSON, when the transcript holds
    MALFORMED_VERDICT_MARKER."""
    transcript = request.messages[-1].content if request.messages else ""
    if MALFORMED_VERDICT_MARKER in transcript:
        return "I think the customer was mostly happy."
    said = [line for line in transcript.splitlines() if line.startswith("customer:")]
    last = said[-1].lower() if said else ""
    if any(word in last for word in SATISFIED_WORDS):
        verdict = {"label": "achieved", "score": 0.9, "explanation": "The customer says so."}
    else:
        verdict = {
            "label": "not_achieved",
            "score": 0.2,
            "explanation": "The customer's last message does not say the goal was met.",
        }
    return json.dumps(verdict)
