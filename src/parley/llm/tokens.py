"""A small deterministic tokenizer: word and punctuation pieces, each with its leading space.

Close enough to BPE counts for English chat to make usage figures realistic, and it
needs no vocabulary download.
"""

from __future__ import annotations

import re

from parley.llm.types import ChatMessage, ChatRequest, Usage

_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")

# OpenAI-style framing: every message costs a few tokens beyond its text.
_PER_MESSAGE_OVERHEAD = 4
_REPLY_PRIMING = 2


def split_tokens(text: str) -> list[str]:
    return _PIECE.findall(text)


def count_tokens(text: str) -> int:
    return len(split_tokens(text))


def count_prompt_tokens(messages: tuple[ChatMessage, ...]) -> int:
    return sum(count_tokens(m.content) + _PER_MESSAGE_OVERHEAD for m in messages) + _REPLY_PRIMING


def estimate_usage(request: ChatRequest, completion_chunks: int) -> Usage:
    """Usage of a call cut before the provider reported it: the prompt as counted here, and
    one token per content chunk received (providers stream about a token per chunk)."""
    prompt = count_prompt_tokens(request.messages)
    return Usage(prompt, completion_chunks, prompt + completion_chunks)
