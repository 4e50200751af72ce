from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from parley.llm import (
    ChatMessage,
    ChatRequest,
    LLMCallInfo,
    LLMError,
    LLMErrorKind,
    LLMGateway,
    RateLimit,
    RetryPolicy,
    Role,
    StreamChunk,
    Usage,
)
from tests.support.providers import ScriptedProvider, collect

REQUEST = ChatRequest("m", (ChatMessage(Role.USER, "hi"),))
NO_WAIT = RetryPolicy(max_retries=2, backoff_seconds=0.0)


@dataclass
class Recorder:
    events: list[tuple[str, object]] = field(default_factory=list)
    wants_content: bool = False
    content: str | None = None

    def retrying(self, error: LLMError, attempt: int, wait_seconds: float) -> None:
        self.events.append(("retrying", (error.kind, attempt, wait_seconds)))

    def first_token(self) -> None:
        self.events.append(("first_token", None))

    def succeeded(
        self,
        usage: Usage | None,
        rate_limit: RateLimit | None,
        *,
        response_model: str | None = None,
        finish_reason: str | None = None,
        content: str | None = None,
    ) -> None:
        self.events.append(("succeeded", usage))
        self.content = content

    def propagation_headers(self) -> Mapping[str, str]:
        return {}

    def failed(self, error: LLMError, usage: Usage | None = None) -> None:
        self.events.append(("failed", error.kind))


@dataclass
class Observer:
    calls: list[tuple[LLMCallInfo, Recorder]] = field(default_factory=list)
    wants_content: bool = False

    def call_started(self, call: LLMCallInfo) -> Recorder:
        recorder = Recorder(wants_content=self.wants_content)
        self.calls.append((call, recorder))
        return recorder


def _gateway(
    provider: ScriptedProvider, retry: RetryPolicy = NO_WAIT
) -> tuple[LLMGateway, Observer]:
    observer = Observer()
    return LLMGateway(provider, retry=retry, observers=[observer]), observer


def _error(kind: LLMErrorKind, retry_after: float | None = None) -> LLMError:
    return LLMError(kind, kind.value, retry_after=retry_after)


async def test_retryable_errors_are_retried_until_success() -> None:
    """A server error and a timeout are retried; the call then succeeds once."""
    provider = ScriptedProvider(
        [_error(LLMErrorKind.SERVER_ERROR), _error(LLMErrorKind.TIMEOUT), "fine"]
    )
    gateway, observer = _gateway(provider)
    completion = await gateway.complete(REQUEST)
    assert completion.content == "fine"
    assert len(provider.calls) == 3
    ((_, recorder),) = observer.calls
    assert [name for name, _ in recorder.events] == ["retrying", "retrying", "succeeded"]


async def test_non_retryable_errors_fail_at_once() -> None:
    """Bad requests and auth errors are not worth a second attempt."""
    provider = ScriptedProvider([_error(LLMErrorKind.AUTH)])
    gateway, observer = _gateway(provider)
    with pytest.raises(LLMError) as raised:
        await gateway.complete(REQUEST)
    assert raised.value.kind is LLMErrorKind.AUTH
    assert len(provider.calls) == 1
    assert observer.calls[0][1].events == [("failed", LLMErrorKind.AUTH)]


async def test_retries_stop_at_the_configured_maximum() -> None:
    """max_retries=2 means three attempts in all, then the last error."""
    provider = ScriptedProvider([_error(LLMErrorKind.SERVER_ERROR)] * 5)
    gateway, _ = _gateway(provider)
    with pytest.raises(LLMError):
        await gateway.complete(REQUEST)
    assert len(provider.calls) == 3


def test_retry_after_is_honoured_and_capped() -> None:
    """Retry-After from the provider wins over backoff, up to the cap."""
    policy = RetryPolicy(max_retries=3, backoff_seconds=0.5, max_wait_seconds=4.0)
    assert policy.wait_before(1, _error(LLMErrorKind.RATE_LIMITED, retry_after=2.0)) == 2.0
    assert policy.wait_before(1, _error(LLMErrorKind.RATE_LIMITED, retry_after=60.0)) == 4.0
    assert policy.wait_before(1, _error(LLMErrorKind.SERVER_ERROR)) == 0.5
    assert policy.wait_before(3, _error(LLMErrorKind.SERVER_ERROR)) == 2.0


async def test_slow_provider_times_out() -> None:
    """A call that exceeds the timeout fails as a timeout."""

    class Slow(ScriptedProvider):
        async def complete(self, request: ChatRequest):  # type: ignore[no-untyped-def]
            import asyncio

            await asyncio.sleep(1)
            raise AssertionError("not reached")

    gateway = LLMGateway(Slow(), timeout_seconds=0.05, retry=RetryPolicy(max_retries=0))
    with pytest.raises(LLMError) as raised:
        await gateway.complete(REQUEST)
    assert raised.value.kind is LLMErrorKind.TIMEOUT


async def test_stream_is_retried_only_before_the_first_content() -> None:
    """A stream that fails to start is retried; first token and success are reported."""
    provider = ScriptedProvider([_error(LLMErrorKind.CONNECTION), "hello there"])
    gateway, observer = _gateway(provider)
    chunks = [chunk async for chunk in gateway.stream(REQUEST)]
    assert "".join(c.content for c in chunks) == "hello there"
    events = [name for name, _ in observer.calls[0][1].events]
    assert events == ["retrying", "first_token", "succeeded"]
    assert observer.calls[0][0].streaming is True


async def test_stream_failing_midway_is_not_retried() -> None:
    """Once content has gone out, a failure ends the stream: no duplicate text."""
    provider = ScriptedProvider(
        ["one two three"], mid_stream=_error(LLMErrorKind.CONNECTION), fail_after=1
    )
    gateway, observer = _gateway(provider)
    received: list[str] = []
    with pytest.raises(LLMError):
        await collect(gateway.stream(REQUEST), received)
    assert "".join(received) == "one"
    assert len(provider.calls) == 1
    assert observer.calls[0][1].events[-1] == ("failed", LLMErrorKind.CONNECTION)


async def test_consumer_leaving_a_stream_closes_the_provider_stream() -> None:
    """When the client goes away, the provider's stream is closed and the call ends."""
    provider = ScriptedProvider(["one two three four"])
    gateway, observer = _gateway(provider)
    stream = gateway.stream(REQUEST)
    async for chunk in stream:
        if chunk.content:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    assert provider.closed_streams == 1
    assert observer.calls[0][1].events[-1] == ("failed", LLMErrorKind.CANCELLED)


async def test_unexpected_provider_exception_becomes_unknown_error() -> None:
    """A provider bug surfaces as an LLMError of kind unknown, not a raw exception."""

    class Broken(ScriptedProvider):
        async def complete(self, request: ChatRequest):  # type: ignore[no-untyped-def]
            raise KeyError("oops")

    gateway = LLMGateway(Broken(), retry=NO_WAIT)
    with pytest.raises(LLMError) as raised:
        await gateway.complete(REQUEST)
    assert raised.value.kind is LLMErrorKind.UNKNOWN


async def test_stream_that_never_starts_times_out() -> None:
    """No content within the timeout: the stream fails as a timeout (and may be retried)."""

    class Silent(ScriptedProvider):
        async def stream(self, request: ChatRequest):  # type: ignore[no-untyped-def]
            import asyncio

            yield StreamChunk()  # the role-only chunk arrives, then nothing
            await asyncio.sleep(5)

    gateway = LLMGateway(Silent(), timeout_seconds=0.05, retry=RetryPolicy(max_retries=0))
    with pytest.raises(LLMError) as raised:
        await collect(gateway.stream(REQUEST), [])
    assert raised.value.kind is LLMErrorKind.TIMEOUT


async def test_a_slow_consumer_is_not_timed_out_by_the_stream_start_timeout() -> None:
    """The start timeout measures the provider, never the time the consumer takes."""
    import asyncio

    gateway = LLMGateway(
        ScriptedProvider(["hello world"]), timeout_seconds=0.05, retry=RetryPolicy(max_retries=0)
    )
    received = []
    async for chunk in gateway.stream(REQUEST):
        await asyncio.sleep(0.1)  # longer than the timeout, on every chunk
        received.append(chunk.content)
    assert "".join(received) == "hello world"


async def test_only_an_observer_that_wants_the_content_is_given_the_reply_and_the_messages() -> (
    None
):
    """The whole reply and a stream's, across a retry that started over; the messages
    sent come with the call's description."""
    provider = ScriptedProvider(["a whole reply", _error(LLMErrorKind.CONNECTION), "a stream"])
    capturing, plain = Observer(wants_content=True), Observer()
    gateway = LLMGateway(provider, retry=NO_WAIT, observers=[capturing, plain])
    await gateway.complete(REQUEST)
    assert [chunk.content async for chunk in gateway.stream(REQUEST)] != []
    assert [recorder.content for _, recorder in capturing.calls] == ["a whole reply", "a stream"]
    assert [recorder.content for _, recorder in plain.calls] == [None, None]
    assert capturing.calls[0][0].messages == REQUEST.messages
