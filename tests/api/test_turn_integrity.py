"""A turn is stored exactly once whatever the client does: hang-ups at each point of a turn,
retries and concurrent messages, on SQLite and PostgreSQL, through a real uvicorn."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs
from websockets.asyncio.client import connect

from parley.api.state import state_of
from parley.app import create_app
from parley.llm import LLMError, LLMErrorKind
from tests.api.helpers import start_conversation
from tests.conftest import make_settings
from tests.support.live_server import LiveServer
from tests.support.providers import ScriptedProvider

pytestmark = pytest.mark.integration

WORDS = [f"w{i}" for i in range(30)]
REPLY = " ".join(WORDS)


@pytest.fixture
def provider() -> ScriptedProvider:
    return ScriptedProvider()


@pytest.fixture
def app(tmp_path: Path, database_url: str, provider: ScriptedProvider) -> FastAPI:
    return create_app(make_settings(tmp_path, database_url=database_url), provider=provider)


@pytest.fixture
def server(app: FastAPI) -> Iterator[LiveServer]:
    with LiveServer(app) as live:
        yield live


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        yield client


async def _messages(http: httpx.AsyncClient, conversation_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/conversations/{conversation_id}")
    response.raise_for_status()
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def _turns_settled(app: FastAPI) -> None:
    """Wait (with a deadline) until no turn is in flight in the server."""
    async with asyncio.timeout(20):
        # Polled: the turns run on the server's event loop, in another thread.
        while len(state_of(app).services.chat.in_flight):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def _sse_until(
    http: httpx.AsyncClient, conversation_id: str, stop: str, tokens: int = 0, **headers: str
) -> list[str]:
    """Stream a turn and hang up once ``stop`` arrived (after ``tokens`` tokens for "token")."""
    seen: list[str] = []
    async with http.stream(
        "POST",
        f"/v1/conversations/{conversation_id}/messages",
        json={"content": "tell me", "stream": True},
        headers=headers,
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                seen.append(line.removeprefix("event: "))
                if seen[-1] == stop and (stop != "token" or seen.count("token") >= tokens):
                    break
    return seen


async def _ws_until(server: LiveServer, conversation_id: str, stop: str, tokens: int = 0) -> None:
    url = f"{server.ws_url}/v1/conversations/{conversation_id}/ws"
    async with asyncio.timeout(20), connect(url) as ws:
        await ws.send(json.dumps({"type": "message", "content": "tell me"}))
        count = 0
        while True:
            frame = json.loads(await ws.recv())
            count += frame["type"] == "token"
            if frame["type"] == stop and (stop != "token" or count >= tokens):
                return


async def _write_succeeds_at_once(http: httpx.AsyncClient, conversation_id: str) -> None:
    """A write right after the hang-up: SQLite must not be left locked by an orphaned
    transaction (it was, for 20 s and more, with every write failing)."""
    started = time.monotonic()
    response = await http.post(
        f"/v1/conversations/{conversation_id}/close", timeout=httpx.Timeout(5.0)
    )
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 5


async def _completion_tokens_counted(http: httpx.AsyncClient) -> float:
    exposition = (await http.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "llm_tokens_used"
        for sample in family.samples
        if sample.labels.get("type") == "completion"
    )


# (where the client hangs up, what the stored reply is then)
HANG_UPS = [
    ("accepted", None),
    ("token", "interrupted"),
    ("last_token", "complete"),
]


@pytest.mark.parametrize(("point", "stored"), HANG_UPS)
@pytest.mark.parametrize("channel", ["sse", "ws"])
async def test_a_hang_up_stores_what_the_readme_says_and_the_next_write_succeeds(
    app: FastAPI,
    server: LiveServer,
    http: httpx.AsyncClient,
    provider: ScriptedProvider,
    channel: str,
    point: str,
    stored: str | None,
) -> None:
    """Before the first token: no reply. Mid-stream: the LLM call stops and the partial
    reply is stored as interrupted. After the last token: the whole reply is stored."""
    provider.steps.append(REPLY)
    if point == "accepted":
        provider.first_delay = 30  # the LLM has not answered when the client leaves
    elif point == "token":
        provider.chunk_delay = 0.05
    stop, tokens = ("token", len(WORDS)) if point == "last_token" else (point, 3)
    conversation_id = await start_conversation(http)
    if channel == "sse":
        await _sse_until(http, conversation_id, stop, tokens)
    else:
        await _ws_until(server, conversation_id, stop, tokens)
    await _turns_settled(app)
    await _write_succeeds_at_once(http, conversation_id)
    messages = await _messages(http, conversation_id)
    assert messages[0]["content"] == "tell me"
    replies = [m for m in messages if m["role"] == "assistant"]
    # The token metrics count what the provider produced, as the stored reply does.
    billed = await _completion_tokens_counted(http)
    assert billed == sum(r["usage"]["completion_tokens"] for r in replies)
    if stored is None:
        assert replies == []
        return
    assert len(replies) == 1
    reply = replies[0]
    assert (reply["status"], reply["reply_to"]) == (stored, messages[0]["id"])
    if stored == "complete":
        assert reply["content"] == REPLY
    else:
        assert REPLY.startswith(reply["content"])
        assert 3 <= len(reply["content"].split()) < len(WORDS)
    assert reply["usage"]["completion_tokens"] == len(reply["content"].split())


@pytest.mark.parametrize("clients", [20, 100])
async def test_concurrent_messages_to_one_conversation_hold_max_turns(
    http: httpx.AsyncClient, clients: int
) -> None:
    """``max_turns: 5``: five replies, the sixth message escalates, every later one is held
    for the human agent (202, stored, never answered); seq and created_at agree; each reply
    names its message."""
    conversation_id = await start_conversation(http, max_turns=5)

    async def send(index: int) -> int:
        response = await http.post(
            f"/v1/conversations/{conversation_id}/messages", json={"content": f"m{index}"}
        )
        return response.status_code

    codes = await asyncio.gather(*(send(i) for i in range(clients)))
    assert sorted(codes) == [200] * 6 + [202] * (clients - 6)
    messages = await _messages(http, conversation_id)
    users = [m for m in messages if m["role"] == "user"]
    replies = [m for m in messages if m["role"] == "assistant"]
    assert len(users) == clients
    assert len(replies) == 5
    assert {r["reply_to"] for r in replies} < {u["id"] for u in users}
    assert [m["seq"] for m in messages] == list(range(1, clients + 6))
    times = [m["created_at"] for m in messages]
    assert times == sorted(times)


async def test_a_retry_after_a_cut_stream_stores_nothing_twice(
    app: FastAPI, http: httpx.AsyncClient, provider: ScriptedProvider
) -> None:
    """The client hangs up mid-stream and retries with the same Idempotency-Key: it gets
    the same turn back, and the conversation holds one user message and one reply."""
    provider.steps.append(REPLY)
    provider.chunk_delay = 0.05
    conversation_id = await start_conversation(http)
    key = {"Idempotency-Key": "retry-1"}
    await _sse_until(http, conversation_id, "token", 2, **key)
    await _turns_settled(app)
    again = await http.post(
        f"/v1/conversations/{conversation_id}/messages", json={"content": "tell me"}, headers=key
    )
    assert again.status_code == 200
    messages = await _messages(http, conversation_id)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    turn = again.json()
    assert turn["user_message"]["id"] == messages[0]["id"]
    assert turn["reply"]["id"] == messages[1]["id"]
    assert len(provider.calls) == 1


async def test_the_same_key_with_other_content_is_a_conflict(http: httpx.AsyncClient) -> None:
    conversation_id = await start_conversation(http)
    url = f"/v1/conversations/{conversation_id}/messages"
    key = {"Idempotency-Key": "k"}
    assert (await http.post(url, json={"content": "one"}, headers=key)).status_code == 200
    refused = await http.post(url, json={"content": "two"}, headers=key)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "idempotency_key_reused"


async def test_a_websocket_retry_with_the_same_id_stores_nothing_twice(
    server: LiveServer, http: httpx.AsyncClient, provider: ScriptedProvider
) -> None:
    conversation_id = await start_conversation(http)
    url = f"{server.ws_url}/v1/conversations/{conversation_id}/ws"
    frames: list[list[dict[str, Any]]] = []
    async with asyncio.timeout(20), connect(url) as ws:
        for _ in range(2):
            await ws.send(json.dumps({"type": "message", "content": "hi", "id": "m-1"}))
            turn = [json.loads(await ws.recv())]
            while turn[-1]["type"] != "done":
                turn.append(json.loads(await ws.recv()))
            frames.append(turn)
    first, second = frames
    assert second[0]["message"] == first[0]["message"]
    assert second[-1]["message"] == first[-1]["message"]
    assert len(await _messages(http, conversation_id)) == 2
    assert len(provider.calls) == 1


async def test_a_whole_reply_whose_client_left_stops_the_llm_and_is_recorded_as_499(
    app: FastAPI, server: LiveServer, http: httpx.AsyncClient, provider: ScriptedProvider
) -> None:
    provider.steps.append("slow answer")
    provider.first_delay = 30
    conversation_id = await start_conversation(http)
    with pytest.raises(httpx.ReadTimeout):
        await http.post(
            f"/v1/conversations/{conversation_id}/messages",
            json={"content": "hi"},
            timeout=httpx.Timeout(30, read=0.5),
        )
    await _turns_settled(app)
    assert [m["role"] for m in await _messages(http, conversation_id)] == ["user"]
    metrics = (await http.get("/metrics")).text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("http_requests_total{")
        and 'status="499"' in line
        and "/messages" in line
    )
    assert line.endswith(" 1.0")
    cancelled = next(
        line
        for line in metrics.splitlines()
        if line.startswith("llm_errors_total{") and 'error_type="cancelled"' in line
    )
    assert cancelled.endswith(" 1.0")


async def _keyed_turn_failed_then(
    http: httpx.AsyncClient, provider: ScriptedProvider, action: str
) -> str:
    """A keyed turn whose LLM call failed, then the conversation ``action``-ed (close or
    escalate); returns the conversation's id."""
    provider.steps.append(LLMError(LLMErrorKind.MALFORMED_RESPONSE, "garbled"))  # not retried
    conversation_id = await start_conversation(http, max_llm_failures=5)
    failed = await http.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"content": "hi"},
        headers={"Idempotency-Key": "k"},
    )
    assert failed.status_code == 502
    body = {"reason": "manual"} if action == "escalate" else None
    (await http.post(f"/v1/conversations/{conversation_id}/{action}", json=body)).raise_for_status()
    return conversation_id


@pytest.mark.parametrize(
    ("action", "code"), [("close", "conversation_closed"), ("escalate", "conversation_escalated")]
)
@pytest.mark.parametrize("stream", [False, True])
async def test_a_keyed_retry_after_the_conversation_ended_is_a_409_not_a_crash(
    http: httpx.AsyncClient, provider: ScriptedProvider, action: str, code: str, stream: bool
) -> None:
    """The same 409 as any message to a closed (or escalated) conversation, on the whole and
    the streamed channel, with nothing logged as a crash and no second LLM call."""
    conversation_id = await _keyed_turn_failed_then(http, provider, action)
    with capture_logs() as logs:
        retry = await http.post(
            f"/v1/conversations/{conversation_id}/messages",
            json={"content": "hi", "stream": stream},
            headers={"Idempotency-Key": "k"},
        )
    assert retry.status_code == 409
    assert retry.json()["error"]["code"] == code
    assert not [log for log in logs if log["log_level"] in ("error", "critical")]
    assert len(provider.calls) == 1
    assert [m["role"] for m in await _messages(http, conversation_id)] == ["user"]


async def test_a_websocket_retry_after_the_conversation_closed_is_an_error_frame(
    server: LiveServer, http: httpx.AsyncClient, provider: ScriptedProvider
) -> None:
    conversation_id = await _keyed_turn_failed_then(http, provider, "close")
    url = f"{server.ws_url}/v1/conversations/{conversation_id}/ws"
    async with asyncio.timeout(20), connect(url) as ws:
        await ws.send(json.dumps({"type": "message", "content": "hi", "id": "k"}))
        frame = json.loads(await ws.recv())
    assert (frame["type"], frame["code"]) == ("error", "conversation_closed")
    assert len(provider.calls) == 1


async def test_ten_concurrent_retries_with_one_key_make_one_llm_call(
    http: httpx.AsyncClient, provider: ScriptedProvider
) -> None:
    """One turn stored, one LLM call, the same reply told to each of the ten."""
    provider.steps.append("the one reply")
    provider.first_delay = 0.3
    conversation_id = await start_conversation(http)

    async def send() -> httpx.Response:
        return await http.post(
            f"/v1/conversations/{conversation_id}/messages",
            json={"content": "hi"},
            headers={"Idempotency-Key": "storm"},
        )

    answers = await asyncio.gather(*(send() for _ in range(10)))
    assert [answer.status_code for answer in answers] == [200] * 10
    assert len({answer.json()["reply"]["id"] for answer in answers}) == 1
    assert len(provider.calls) == 1
    assert [m["role"] for m in await _messages(http, conversation_id)] == ["user", "assistant"]
