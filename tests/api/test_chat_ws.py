"""WebSocket chat through a real uvicorn and the ``websockets`` client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from parley.api.state import state_of
from parley.app import create_app
from parley.llm import LLMError, LLMErrorKind
from tests.conftest import make_settings
from tests.support.live_server import LiveServer
from tests.support.providers import ScriptedProvider

pytestmark = pytest.mark.integration


@pytest.fixture
def provider() -> ScriptedProvider:
    return ScriptedProvider()


@pytest.fixture
def server(tmp_path: Path, provider: ScriptedProvider) -> Iterator[LiveServer]:
    app = create_app(make_settings(tmp_path, api_keys="sekret"), provider=provider)
    with LiveServer(app) as live:
        yield live


AUTH = {"Authorization": "Bearer sekret"}


def _conversation(server: LiveServer, **escalation: Any) -> str:
    with httpx.Client(base_url=server.http_url, headers=AUTH) as http:
        goal: dict[str, Any] = {"id": "support", "name": "Support", "instructions": "Help."}
        if escalation:
            goal["escalation"] = escalation
        http.post("/v1/goals/", json=goal).raise_for_status()
        response = http.post("/v1/conversations/", json={"goal_id": "support"})
        response.raise_for_status()
        conversation_id: str = response.json()["id"]
        return conversation_id


def _url(server: LiveServer, conversation_id: str) -> str:
    return f"{server.ws_url}/v1/conversations/{conversation_id}/ws"


async def _recv(ws: ClientConnection, *, events: bool = False) -> dict[str, Any]:
    """The next frame; a turn's only, unless ``events`` (pushed live events are skipped)."""
    async with asyncio.timeout(30):
        while True:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if events or frame["type"] != "event":
                return frame


async def _until(ws: ClientConnection, *types: str) -> list[dict[str, Any]]:
    async with asyncio.timeout(30):
        frames = [await _recv(ws)]
        while frames[-1]["type"] not in types:
            frames.append(await _recv(ws))
        return frames


async def test_chat_streams_tokens_then_done_with_usage(
    server: LiveServer, provider: ScriptedProvider
) -> None:
    provider.steps.append("hello from the assistant")
    conversation_id = _conversation(server)
    async with connect(_url(server, conversation_id), additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "message", "content": "hi"}))
        frames = await _until(ws, "done", "error")
    assert frames[0]["type"] == "accepted"
    assert frames[0]["message"]["content"] == "hi"
    tokens = [f["content"] for f in frames if f["type"] == "token"]
    assert "".join(tokens) == "hello from the assistant"
    done = frames[-1]
    assert done["type"] == "done"
    assert done["message"]["content"] == "hello from the assistant"
    assert done["usage"]["completion_tokens"] == 4


async def test_malformed_frames_get_error_frames_and_the_socket_stays_open(
    server: LiveServer,
) -> None:
    conversation_id = _conversation(server)
    async with connect(_url(server, conversation_id), additional_headers=AUTH) as ws:
        cases: list[tuple[str | bytes, str]] = [
            ("not json", "invalid_frame"),
            ("[1, 2]", "invalid_frame"),
            (json.dumps({"type": "dance"}), "unknown_frame_type"),
            (json.dumps({"type": "message"}), "invalid_frame"),
            (json.dumps({"type": "message", "content": 5}), "invalid_frame"),
            (b"\x00binary", "invalid_frame"),
            ('{"type": "message", "content": "a\\u0000b"}', "invalid_text"),
            ('{"type": "message", "content": "lone \\ud800"}', "invalid_text"),
            (json.dumps({"type": "message", "content": " \n "}), "blank_content"),
            # Unknown fields are refused, as on HTTP, not dropped.
            (json.dumps({"type": "message", "content": "hi", "role": "agent"}), "invalid_frame"),
            (
                '{"type": "message", "content": "x", "x": ' + "[" * 5000 + "]" * 5000 + "}",
                "invalid_frame",
            ),
        ]
        for raw, code in cases:
            await ws.send(raw)
            frame = await _recv(ws)
            assert (frame["type"], frame["code"]) == ("error", code), raw
        await ws.send(json.dumps({"type": "ping"}))
        assert await _recv(ws) == {"type": "pong"}


@pytest.mark.parametrize("conversation_id", ["00000000-0000-0000-0000-000000000000", "nope"])
async def test_unknown_conversation_closes_with_4404(
    server: LiveServer, conversation_id: str
) -> None:
    async with connect(_url(server, conversation_id), additional_headers=AUTH) as ws:
        frame = await _recv(ws)
        assert frame["code"] == "conversation_not_found"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4404


async def test_missing_api_key_is_refused_at_the_handshake(server: LiveServer) -> None:
    conversation_id = _conversation(server)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(_url(server, conversation_id)):
            pass
    assert refused.value.response.status_code == 403


async def test_trigger_phrase_sends_escalated_and_later_messages_are_held_for_the_agent(
    server: LiveServer, provider: ScriptedProvider
) -> None:
    conversation_id = _conversation(server)
    async with connect(_url(server, conversation_id), additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "message", "content": "a human please"}))
        frames = await _until(ws, "escalated")
        assert frames[-1] == {"type": "escalated", "reason": "trigger_phrase"}
        await ws.send(json.dumps({"type": "message", "content": "hello?"}))
        frames = await _until(ws, "handoff")
        assert [f["type"] for f in frames] == ["accepted", "handoff"]
        assert frames[-1]["handoff"]["state"] == "waiting"
    assert provider.calls == []


async def test_the_socket_pushes_the_conversations_live_events(
    server: LiveServer, provider: ScriptedProvider
) -> None:
    """Its escalation and the customer's held message reach the socket as ``event``
    frames, numbered by the conversation's seq; a socket opened with ``last_event_id``
    gets what came after it."""
    conversation_id = _conversation(server)
    async with connect(_url(server, conversation_id), additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "message", "content": "a human please"}))
        await ws.send(json.dumps({"type": "message", "content": "hello?"}))
        pushed: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while len(pushed) < 2:
                frame = await _recv(ws, events=True)
                if frame["type"] == "event":
                    pushed.append(frame)
    assert [(f["seq"], f["event"], f["step"]) for f in pushed] == [
        (1, "handoff", "escalated"),
        (2, "message", None),
    ]
    assert pushed[1]["message"]["content"] == "hello?"
    resumed = f"{_url(server, conversation_id)}?last_event_id=1"
    async with connect(resumed, additional_headers=AUTH) as ws:
        frame = await _recv(ws, events=True)
    assert (frame["type"], frame["seq"]) == ("event", 2)


async def test_llm_failure_sends_error_then_escalated(
    server: LiveServer, provider: ScriptedProvider
) -> None:
    """One failure answers with an error only; the policy's last allowed one escalates."""
    provider.steps.extend([LLMError(LLMErrorKind.AUTH, "bad key")] * 2)
    conversation_id = _conversation(server, max_llm_failures=2)
    async with connect(_url(server, conversation_id), additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "message", "content": "hi"}))
        first = await _until(ws, "error")
        assert (first[-1]["code"], first[-1]["escalated"]) == ("llm_auth", False)
        await ws.send(json.dumps({"type": "message", "content": "hi again"}))
        frames = await _until(ws, "escalated")
    error = frames[-2]
    assert (error["type"], error["code"], error["escalated"]) == ("error", "llm_auth", True)
    assert frames[-1] == {"type": "escalated", "reason": "llm_failure"}


async def test_client_vanishing_mid_stream_keeps_the_user_message_and_the_partial_reply(
    server: LiveServer, provider: ScriptedProvider
) -> None:
    """The socket drops mid-reply: the LLM call stops, and what it produced is stored as an
    interrupted reply to the user's message."""
    provider.steps.append(" ".join(f"w{i}" for i in range(2000)))
    provider.chunk_delay = 0.005
    conversation_id = _conversation(server)
    async with connect(_url(server, conversation_id), additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "message", "content": "long one"}))
        await _until(ws, "token")
    for _ in range(250):
        if provider.closed_streams:
            break
        await asyncio.sleep(0.02)
    assert provider.closed_streams == 1
    async with httpx.AsyncClient(base_url=server.http_url, headers=AUTH) as http:
        messages = (await http.get(f"/v1/conversations/{conversation_id}")).json()["messages"]
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "interrupted"),
    ]
    reply = messages[1]
    assert reply["reply_to"] == messages[0]["id"]
    # What was produced before the stop, in order (how much depends on when the server
    # saw the socket go: at least the token the client received).
    words = reply["content"].split()
    assert words == [f"w{i}" for i in range(len(words))]
    assert 1 <= len(words) < 2000
    assert reply["usage"]["completion_tokens"] == len(reply["content"].split())


async def test_hundreds_of_abrupt_disconnects_leave_the_server_healthy(tmp_path: Path) -> None:
    """500 sockets dropped without a close frame at every point of a turn: the open-socket
    gauge returns to 0, no turn is left running, and a normal chat works after."""
    provider = ScriptedProvider(chunk_delay=0.002)
    app = create_app(make_settings(tmp_path), provider=provider)
    registry = app.state.instrumentation.registry
    with LiveServer(app) as server:
        conversation_id = _conversation(server, max_turns=10_000)
        url = _url(server, conversation_id)

        async def drop(index: int) -> None:
            async with connect(url) as ws:
                if index % 3:
                    await ws.send(json.dumps({"type": "message", "content": f"m{index}"}))
                if index % 3 == 2:
                    await ws.recv()
                ws.transport.abort()  # no close frame: the network just goes away

        for start in range(0, 500, 50):
            await asyncio.gather(*(drop(i) for i in range(start, start + 50)))
        in_flight = state_of(app).services.chat.in_flight
        async with asyncio.timeout(30):
            # Polled: the server's loop runs in another thread.
            while registry.get_sample_value("ws_connections_active") or len(in_flight):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "message", "content": "still there?"}))
            assert (await _until(ws, "done"))[-1]["type"] == "done"
