import pytest

from parley.llm import ChatMessage, ChatRequest, LLMError, LLMErrorKind, Role
from parley.llm.simulated import RateWindow, SimulatedProvider, SimulatedTiming
from parley.llm.tokens import count_prompt_tokens, count_tokens

REQUEST = ChatRequest(
    model="sim-model",
    messages=(
        ChatMessage(Role.SYSTEM, "You help customers track orders."),
        ChatMessage(Role.USER, "Where is my parcel?"),
    ),
)
FAST = SimulatedTiming(0.0, 0.0)


async def test_same_conversation_gets_the_same_reply() -> None:
    """Replies are deterministic: built from the conversation, not from chance."""
    first = await SimulatedProvider(timing=FAST).complete(REQUEST)
    second = await SimulatedProvider(timing=FAST, seed=7).complete(REQUEST)
    assert first.content == second.content
    assert "Where is my parcel" in first.content


async def test_usage_is_counted_from_the_text() -> None:
    """Prompt and completion tokens are computed from the messages and the reply."""
    completion = await SimulatedProvider(timing=FAST).complete(REQUEST)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_prompt_tokens(REQUEST.messages)
    assert completion.usage.completion_tokens == count_tokens(completion.content)
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


async def test_stream_opens_with_a_role_only_chunk_and_ends_with_usage() -> None:
    """The stream looks like an OpenAI-style one: empty first chunk, usage on the last."""
    chunks = [chunk async for chunk in SimulatedProvider(timing=FAST).stream(REQUEST)]
    assert chunks[0].content == ""
    assert chunks[-1].usage is not None
    assert chunks[-1].finish_reason == "stop"
    text = "".join(chunk.content for chunk in chunks)
    assert text == (await SimulatedProvider(timing=FAST).complete(REQUEST)).content
    assert chunks[-1].usage.completion_tokens == len([c for c in chunks if c.content])


async def test_max_tokens_truncates_the_reply() -> None:
    """A reply longer than max_tokens stops there, with finish reason 'length'."""
    request = ChatRequest(REQUEST.model, REQUEST.messages, max_tokens=3)
    completion = await SimulatedProvider(timing=FAST).complete(request)
    assert completion.finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


async def test_failure_rate_one_always_fails_and_zero_never() -> None:
    """The configured failure rate decides whether calls fail, as server errors."""
    with pytest.raises(LLMError) as raised:
        await SimulatedProvider(timing=FAST, failure_rate=1.0).complete(REQUEST)
    assert raised.value.kind is LLMErrorKind.SERVER_ERROR
    for _ in range(20):
        await SimulatedProvider(timing=FAST, failure_rate=0.0).complete(REQUEST)


def test_failure_rate_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        SimulatedProvider(failure_rate=1.5)


async def test_rate_window_reports_headroom_and_enforces_the_quota() -> None:
    """Like Groq: remaining requests and tokens are reported, and a spent quota is a 429."""
    now = [0.0]
    window = RateWindow(requests_per_minute=2, tokens_per_minute=10_000, clock=lambda: now[0])
    provider = SimulatedProvider(timing=FAST, rate_window=window)
    first = await provider.complete(REQUEST)
    assert first.rate_limit is not None
    assert first.rate_limit.remaining_requests == 1
    assert first.rate_limit.remaining_tokens == 10_000 - count_prompt_tokens(REQUEST.messages)
    chunks = [chunk async for chunk in provider.stream(REQUEST)]
    assert chunks[0].rate_limit is not None
    assert chunks[0].rate_limit.remaining_requests == 0
    now[0] = 20.0
    with pytest.raises(LLMError) as limited:
        await provider.complete(REQUEST)
    assert limited.value.kind is LLMErrorKind.RATE_LIMITED
    assert limited.value.retry_after == 40.0
    now[0] = 61.0  # the window has moved on
    assert (await provider.complete(REQUEST)).rate_limit is not None


def test_rate_window_gives_back_the_tokens_of_calls_that_left_the_minute() -> None:
    now = [0.0]
    window = RateWindow(requests_per_minute=100, tokens_per_minute=1_000, clock=lambda: now[0])
    assert window.admit(600).remaining_tokens == 400
    now[0] = 30.0
    assert window.admit(300).remaining_tokens == 100
    with pytest.raises(LLMError):
        window.admit(200)  # 1,100 in one minute
    now[0] = 60.0  # the first call has left the window; the refused one never counted
    assert window.admit(200).remaining_tokens == 500
    assert window.admit(500).remaining_tokens == 0
