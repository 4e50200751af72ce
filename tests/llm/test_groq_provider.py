"""The Groq provider, end to end: the real SDK against a Groq-compatible server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from parley.llm import (
    ChatMessage,
    ChatRequest,
    LLMError,
    LLMErrorKind,
    LLMGateway,
    RetryPolicy,
    Role,
)
from parley.llm.groq import GroqProvider, server_sent_data
from tests.support.groq_server import (
    CutMidStream,
    ErrorEvent,
    GroqTestServer,
    MalformedChunk,
    Reply,
    StallMidStream,
    Status,
    WrongShape,
)
from tests.support.live_server import LiveServer
from tests.support.ports import free_port
from tests.support.providers import collect

REQUEST = ChatRequest(
    "llama-3.1-8b-instant",
    (ChatMessage(Role.SYSTEM, "Be brief."), ChatMessage(Role.USER, "Hello?")),
    max_tokens=64,
)

# One test process for the module (make test runs several): its fixture starts once.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("groq_provider")]


@pytest.fixture(scope="module")
def groq_server() -> Iterator[tuple[GroqTestServer, LiveServer]]:
    fake = GroqTestServer()
    with LiveServer(fake.app) as live:
        yield fake, live


@pytest.fixture
def fake(groq_server: tuple[GroqTestServer, LiveServer]) -> GroqTestServer:
    server, _ = groq_server
    server.script.clear()
    server.requests.clear()
    return server


@pytest.fixture
async def provider(groq_server: tuple[GroqTestServer, LiveServer]) -> AsyncIterator[GroqProvider]:
    _, live = groq_server
    provider = GroqProvider(api_key="gsk_test", base_url=live.http_url, timeout_seconds=2.0)
    yield provider
    await provider.aclose()


def _gateway(provider: GroqProvider, retries: int = 2) -> LLMGateway:
    return LLMGateway(
        provider, timeout_seconds=5, retry=RetryPolicy(max_retries=retries, backoff_seconds=0)
    )


async def test_completion_returns_text_usage_and_rate_limit_headroom(
    fake: GroqTestServer, provider: GroqProvider
) -> None:
    """A plain call sends the OpenAI wire format and reads usage and rate-limit headers."""
    fake.then(
        Reply(
            "Hi there friend",
            prompt_tokens=9,
            headers={
                "x-ratelimit-remaining-requests": "14399",
                "x-ratelimit-remaining-tokens": "5800",
            },
        )
    )
    completion = await provider.complete(REQUEST)
    assert completion.content == "Hi there friend"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (9, 3)
    assert completion.rate_limit is not None
    assert completion.rate_limit.remaining_requests == 14399
    assert completion.rate_limit.remaining_tokens == 5800
    sent = fake.requests[0]
    assert sent["headers"]["authorization"] == "Bearer gsk_test"
    assert sent["body"]["model"] == "llama-3.1-8b-instant"
    assert sent["body"]["messages"][1] == {"role": "user", "content": "Hello?"}


async def test_missing_rate_limit_headers_leave_headroom_unknown(
    fake: GroqTestServer, provider: GroqProvider
) -> None:
    fake.then(Reply("ok"))
    assert (await provider.complete(REQUEST)).rate_limit is None


@pytest.mark.parametrize("usage_field", ["x_groq", "usage"])
async def test_stream_yields_content_and_usage_from_the_last_chunk(
    fake: GroqTestServer, provider: GroqProvider, usage_field: str
) -> None:
    """Streaming: content in order; usage read from x_groq.usage or usage on the last chunk."""
    fake.then(Reply("one two three", prompt_tokens=4, usage_field=usage_field))
    chunks = [chunk async for chunk in provider.stream(REQUEST)]
    assert chunks[0].content == ""  # the role-only opening chunk
    assert "".join(c.content for c in chunks) == "one two three"
    usages = [c.usage for c in chunks if c.usage is not None]
    assert len(usages) == 1
    assert usages[0].completion_tokens == 3
    assert usages[0].total_tokens == 7
    assert fake.requests[0]["body"]["stream"] is True


async def test_rate_limit_is_retried_after_the_servers_retry_after(
    fake: GroqTestServer, provider: GroqProvider
) -> None:
    """429 with retry-after: the SDK does not retry itself; the gateway does, once."""
    fake.then(Status(429, headers={"retry-after": "0.2"}), Reply("after the wait"))
    completion = await _gateway(provider).complete(REQUEST)
    assert completion.content == "after the wait"
    assert len(fake.requests) == 2


async def test_rate_limit_error_carries_retry_after(
    fake: GroqTestServer, provider: GroqProvider
) -> None:
    fake.then(Status(429, headers={"retry-after": "3"}))
    with pytest.raises(LLMError) as raised:
        await provider.complete(REQUEST)
    assert raised.value.kind is LLMErrorKind.RATE_LIMITED
    assert raised.value.retry_after == 3.0
    assert len(fake.requests) == 1  # the SDK's own retries are off


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, LLMErrorKind.SERVER_ERROR),
        (503, LLMErrorKind.SERVER_ERROR),
        (400, LLMErrorKind.BAD_REQUEST),
        (401, LLMErrorKind.AUTH),
    ],
)
async def test_http_errors_map_to_error_kinds(
    fake: GroqTestServer, provider: GroqProvider, status: int, kind: LLMErrorKind
) -> None:
    fake.then(Status(status))
    with pytest.raises(LLMError) as raised:
        await provider.complete(REQUEST)
    assert raised.value.kind is kind


async def test_server_error_exhausts_retries_through_the_gateway(
    fake: GroqTestServer, provider: GroqProvider
) -> None:
    fake.then(Status(500), Status(500), Status(500))
    with pytest.raises(LLMError) as raised:
        await _gateway(provider, retries=2).complete(REQUEST)
    assert raised.value.kind is LLMErrorKind.SERVER_ERROR
    assert len(fake.requests) == 3


async def test_slow_server_times_out(
    fake: GroqTestServer, groq_server: tuple[GroqTestServer, LiveServer]
) -> None:
    """The SDK's timeout is the configured one, and maps to the timeout kind."""
    _, live = groq_server
    fake.then(Reply("late", delay_seconds=1.0))
    provider = GroqProvider(api_key="k", base_url=live.http_url, timeout_seconds=0.2)
    with pytest.raises(LLMError) as raised:
        await provider.complete(REQUEST)
    await provider.aclose()
    assert raised.value.kind is LLMErrorKind.TIMEOUT


async def test_malformed_chunk_is_a_malformed_response(
    fake: GroqTestServer, provider: GroqProvider
) -> None:
    fake.then(MalformedChunk())
    with pytest.raises(LLMError) as raised:
        async for _ in provider.stream(REQUEST):
            pass
    assert raised.value.kind is LLMErrorKind.MALFORMED_RESPONSE


async def test_a_chunk_of_the_wrong_shape_is_a_malformed_response(
    fake: GroqTestServer, provider: GroqProvider
) -> None:
    fake.then(WrongShape())
    with pytest.raises(LLMError) as raised:
        async for _ in provider.stream(REQUEST):
            pass
    assert raised.value.kind is LLMErrorKind.MALFORMED_RESPONSE


async def test_an_error_event_mid_stream_is_a_server_error(
    fake: GroqTestServer, provider: GroqProvider
) -> None:
    fake.then(ErrorEvent())
    received: list[str] = []
    with pytest.raises(LLMError) as raised:
        await collect(provider.stream(REQUEST), received)
    assert raised.value.kind is LLMErrorKind.SERVER_ERROR
    assert "".join(received) == "Hello"


async def test_server_sent_events_join_data_lines_and_skip_comments() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in [": keep-alive", "", 'data: {"a":', "data: 1}", "", "data:[DONE]", ""]:
            yield line

    assert [data async for data in server_sent_data(lines())] == ['{"a":\n1}', "[DONE]"]


async def test_connection_cut_mid_stream_is_stream_interrupted(
    fake: GroqTestServer, provider: GroqProvider
) -> None:
    """Content arrives, then the connection drops: the error says so, and is not retried."""
    fake.then(CutMidStream(after=2), Reply("never sent"))
    received: list[str] = []
    with pytest.raises(LLMError) as raised:
        await collect(_gateway(provider).stream(REQUEST), received)
    assert raised.value.kind is LLMErrorKind.STREAM_INTERRUPTED
    assert "".join(received).split() == ["Hello", "from"]
    assert len(fake.requests) == 1


async def test_a_stream_that_stalls_after_content_is_interrupted_by_the_read_timeout(
    fake: GroqTestServer, groq_server: tuple[GroqTestServer, LiveServer]
) -> None:
    """The gateway's timeout covers the wait for the first content only; a hang after it
    is the transport's read timeout to end, or the turn would hang with it."""
    _, live = groq_server
    fake.then(StallMidStream(after=1, seconds=30))
    provider = GroqProvider(api_key="k", base_url=live.http_url, timeout_seconds=0.3)
    received: list[str] = []
    try:
        with pytest.raises(LLMError) as raised:
            await collect(_gateway(provider).stream(REQUEST), received)
    finally:
        await provider.aclose()
    assert raised.value.kind is LLMErrorKind.STREAM_INTERRUPTED
    assert "".join(received) == "Hello"


async def test_a_cut_before_the_first_content_is_retried(
    fake: GroqTestServer, provider: GroqProvider
) -> None:
    """Only the role-only opening chunk arrived: no content was seen, so the gateway retries."""
    fake.then(CutMidStream(after=0), Reply("second try"))
    received: list[str] = []
    await collect(_gateway(provider).stream(REQUEST), received)
    assert "".join(received) == "second try"
    assert len(fake.requests) == 2


async def test_a_cut_before_the_first_content_is_a_connection_error_not_an_interruption(
    fake: GroqTestServer, provider: GroqProvider
) -> None:
    """With no retries left, the error is the connection's, not ``stream_interrupted``."""
    fake.then(CutMidStream(after=0))
    with pytest.raises(LLMError) as raised:
        await collect(_gateway(provider, retries=0).stream(REQUEST), [])
    assert raised.value.kind is LLMErrorKind.CONNECTION
    assert raised.value.retryable


async def test_a_refused_connection_is_a_connection_error_not_a_timeout() -> None:
    """Counted and retried as ``connection`` on both calls: a timeout would send whoever
    is paged to look at a slow LLM instead of an unreachable one."""
    # A port that was just free: nothing listens there.
    refusing = f"http://127.0.0.1:{free_port()}"
    provider = GroqProvider(api_key="k", base_url=refusing, timeout_seconds=2.0)
    try:
        with pytest.raises(LLMError) as whole:
            await provider.complete(REQUEST)
        with pytest.raises(LLMError) as streamed:
            await collect(provider.stream(REQUEST), [])
    finally:
        await provider.aclose()
    assert whole.value.kind is LLMErrorKind.CONNECTION
    assert streamed.value.kind is LLMErrorKind.CONNECTION


async def test_a_429_reports_the_remaining_quota_from_its_headers(
    fake: GroqTestServer, provider: GroqProvider
) -> None:
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-remaining-tokens": "12"}
    fake.then(Status(429, headers=headers))
    with pytest.raises(LLMError) as raised:
        await provider.complete(REQUEST)
    assert raised.value.rate_limit is not None
    assert (
        raised.value.rate_limit.remaining_requests,
        raised.value.rate_limit.remaining_tokens,
    ) == (0, 12)


@pytest.mark.parametrize("streaming", [False, True])
async def test_cached_prompt_tokens_are_read_as_groq_reports_them(
    fake: GroqTestServer, provider: GroqProvider, streaming: bool
) -> None:
    """usage.prompt_tokens_details.cached_tokens, whole or on a stream's last chunk (in
    x_groq.usage): Groq bills them at half price, so they must not be read as prompt."""
    fake.then(Reply("one two", prompt_tokens=2000, cached_tokens=1536))
    if streaming:
        chunks = [chunk async for chunk in provider.stream(REQUEST)]
        (usage,) = [c.usage for c in chunks if c.usage is not None]
    else:
        completion = await provider.complete(REQUEST)
        assert completion.usage is not None
        usage = completion.usage
    assert (usage.prompt_tokens, usage.cached_prompt_tokens, usage.completion_tokens) == (
        2000,
        1536,
        2,
    )


async def test_a_usage_without_details_has_no_cached_tokens(
    fake: GroqTestServer, provider: GroqProvider
) -> None:
    fake.then(Reply("one", prompt_tokens=10))
    completion = await provider.complete(REQUEST)
    assert completion.usage is not None
    assert completion.usage.cached_prompt_tokens == 0
