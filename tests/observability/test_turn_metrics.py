"""Turn metrics: every turn counted once by channel and outcome, with its time to the first
token and its duration; the LLM calls in flight."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect

from parley.app import create_app
from parley.domain.errors import (
    ConversationClosedError,
    DatabaseUnavailableError,
    DomainError,
    ReplyFailedError,
    TurnCrashedError,
    TurnInterruptedError,
)
from parley.domain.models import Conversation, ConversationStatus, Message
from parley.domain.turns import Accepted, Failed, TurnEvent
from parley.llm import LLMError, LLMErrorKind, Role
from parley.observability import TurnMetrics
from parley.store.conversations import ConversationRepository
from parley.telemetry import TurnTelemetry
from tests.api.helpers import make_conversation, make_goal, start_conversation
from tests.conftest import app_client, make_settings
from tests.support.live_server import LiveServer
from tests.support.metrics import series, value
from tests.support.providers import ScriptedProvider


def _turns(registry: CollectorRegistry, channel: str, outcome: str) -> float | None:
    return value(registry, "conversation_turns_total", channel=channel, outcome=outcome)


def _registry(client: TestClient) -> CollectorRegistry:
    registry: CollectorRegistry = client.app.state.instrumentation.registry  # type: ignore[attr-defined]
    return registry


def test_each_http_and_sse_turn_is_counted_once_with_its_outcome(tmp_path: Path) -> None:
    provider = ScriptedProvider(["fine", LLMError(LLMErrorKind.AUTH, "no"), "fine too"])
    with app_client(make_settings(tmp_path, llm_max_retries=0), provider) as client:
        registry = _registry(client)
        make_goal(client, trigger_phrases=["human"])
        conversation_id = make_conversation(client)
        url = f"/v1/conversations/{conversation_id}/messages"
        assert client.post(url, json={"content": "hi"}).status_code == 200
        assert client.post(url, json={"content": "hi", "stream": True}).status_code == 200
        assert client.post(url, json={"content": "again", "stream": True}).status_code == 200
        assert client.post(url, json={"content": "a human"}).status_code == 200
        # For the human agent now: stored, not answered.
        assert client.post(url, json={"content": "more"}).status_code == 202
        streamed = client.post(url, json={"content": "more", "stream": True})
        assert "event: handoff" in streamed.text
        client.post(f"/v1/conversations/{conversation_id}/close")
        assert client.post(url, json={"content": "closed"}).status_code == 409
        assert client.post(url, json={"content": "closed", "stream": True}).status_code == 409
        assert _turns(registry, "http", "ok") == 1
        assert _turns(registry, "sse", "llm_error") == 1
        assert _turns(registry, "sse", "ok") == 1
        assert _turns(registry, "http", "escalated") == 1
        assert _turns(registry, "http", "handoff") == 1
        assert _turns(registry, "sse", "handoff") == 1
        assert _turns(registry, "http", "rejected") == 1
        assert _turns(registry, "sse", "rejected") == 1
        assert value(registry, "conversation_turn_duration_seconds_count", channel="http") == 3
        assert value(registry, "conversation_turn_duration_seconds_count", channel="sse") == 3
        # Time to first token: only the streamed turn that produced a token.
        assert value(registry, "conversation_turn_ttft_seconds_count", channel="sse") == 1
        assert value(registry, "llm_requests_in_flight", model="llama-3.1-8b-instant") == 0


@pytest.mark.integration
async def test_websocket_turns_and_a_client_that_leaves_are_counted(tmp_path: Path) -> None:
    provider = ScriptedProvider(["one", " ".join(["w"] * 200)], chunk_delay=0.01)
    app = create_app(make_settings(tmp_path), provider=provider)
    registry: CollectorRegistry = app.state.instrumentation.registry
    with LiveServer(app) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            conversation_id = await start_conversation(http)
        url = f"{server.ws_url}/v1/conversations/{conversation_id}/ws"
        async with asyncio.timeout(30), connect(url) as ws:
            await ws.send(json.dumps({"type": "message", "content": "hi"}))
            while json.loads(await ws.recv())["type"] != "done":
                pass
            await ws.send(json.dumps({"type": "message", "content": "long"}))
            while json.loads(await ws.recv())["type"] != "token":
                pass
            assert value(registry, "conversation_turns_in_flight") == 1
        async with asyncio.timeout(30):
            # Polled: the server's loop runs in another thread.
            while not _turns(registry, "ws", "cancelled"):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            while value(registry, "llm_requests_in_flight", model="llama-3.1-8b-instant"):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            while value(registry, "conversation_turns_in_flight"):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    assert _turns(registry, "ws", "ok") == 1
    assert value(registry, "conversation_turn_ttft_seconds_count", channel="ws") == 2


@pytest.mark.integration
async def test_an_sse_client_that_hangs_up_is_recorded_as_499_and_cancelled(
    tmp_path: Path,
) -> None:
    """It was a 200: the response had started, but the client never got its end."""
    provider = ScriptedProvider([" ".join(["w"] * 200)], chunk_delay=0.01)
    app = create_app(make_settings(tmp_path), provider=provider)
    registry: CollectorRegistry = app.state.instrumentation.registry
    path = "/v1/conversations/{conversation_id}/messages"
    with LiveServer(app) as server:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
            url = f"/v1/conversations/{await start_conversation(http)}/messages"
            body = {"content": "long", "stream": True}
            async with http.stream("POST", url, json=body) as response:
                async for line in response.aiter_lines():
                    if line == "event: token":
                        break
        async with asyncio.timeout(30):
            # Polled: the server's loop runs in another thread.
            labels = {"path": path, "method": "POST", "status": "499"}
            while not value(registry, "http_requests_total", **labels):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    # Never answered 200 (that series does not even exist): the 499 is the whole story.
    assert value(registry, "http_requests_total", path=path, method="POST", status="200") is None
    assert _turns(registry, "sse", "cancelled") == 1


@pytest.mark.integration
def test_whole_replies_say_where_their_time_went_and_overhead_leaves_out_the_llm(
    tmp_path: Path,
) -> None:
    """Server-Timing on a whole reply (db, llm, app), and parley_turn_overhead_seconds per
    channel: the turn's time minus the LLM's, so a slow LLM is not Parley's overhead."""
    provider = ScriptedProvider(first_delay=1.0)
    with app_client(make_settings(tmp_path), provider) as client:
        registry = _registry(client)
        make_goal(client)
        conversation_id = make_conversation(client)
        url = f"/v1/conversations/{conversation_id}/messages"
        began = time.perf_counter()
        whole = client.post(url, json={"content": "hi"})
        answered = {"http": time.perf_counter() - began}
        assert whole.status_code == 200
        timing = dict(
            part.strip().split(";dur=") for part in whole.headers["server-timing"].split(",")
        )
        assert set(timing) == {"db", "llm", "app"}
        assert float(timing["llm"]) >= 1000  # milliseconds: the provider's delay
        assert float(timing["db"]) > 0
        began = time.perf_counter()
        streamed = client.post(url, json={"content": "hi", "stream": True})
        answered["sse"] = time.perf_counter() - began
        assert "server-timing" not in streamed.headers  # sent before the time is known
        for channel in ("http", "sse"):
            count = "parley_turn_overhead_seconds_count"
            assert value(registry, count, channel=channel) == 1
            overhead = value(registry, "parley_turn_overhead_seconds_sum", channel=channel)
            assert overhead is not None
            # The LLM's second is not in it, however long the rest took: the turn ends
            # before its request is answered. (Against the turn's duration, a busy
            # machine's stall before the turn began once made the overhead the larger.)
            assert overhead <= answered[channel] - 1.0, channel


def _failed_turn(error: DomainError) -> list[TurnEvent]:
    now = datetime.now(UTC)
    conversation = Conversation(uuid.uuid4(), "g", ConversationStatus.ACTIVE, {}, 1, now, now)
    message = Message(uuid.uuid4(), conversation.id, 1, Role.USER, "hi", now)
    return [Accepted(conversation, message), Failed(error)]


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (ReplyFailedError(LLMErrorKind.SERVER_ERROR, "down", escalated=False), "llm_error"),
        (TurnInterruptedError(), "interrupted"),
        (TurnCrashedError(), "crashed"),
        (ConversationClosedError(), "rejected"),
    ],
)
async def test_a_failed_turn_is_counted_by_what_failed_it(error: DomainError, outcome: str) -> None:
    """A bug is ``crashed``, never read as a shutdown (``interrupted``) on the dashboard."""
    registry = CollectorRegistry()
    telemetry = TurnTelemetry(TurnMetrics.register(registry))

    async def events() -> AsyncIterator[TurnEvent]:
        for event in _failed_turn(error):
            yield event

    assert len([event async for event in telemetry.observe("http", events())]) == 2
    counted = {
        labels["outcome"]
        for labels in series(registry, "conversation_turns")
        if value(registry, "conversation_turns_total", **labels)
    }
    assert counted == {outcome}


def test_a_turn_that_crashes_answers_500_and_is_counted_crashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object) -> None:
        raise RuntimeError("a bug in storing the reply")

    monkeypatch.setattr(ConversationRepository, "store_reply", broken)
    with app_client(make_settings(tmp_path), ScriptedProvider(["fine"])) as client:
        registry = _registry(client)
        make_goal(client)
        url = f"/v1/conversations/{make_conversation(client)}/messages"
        answer = client.post(url, json={"content": "hi"})
        assert answer.status_code == 500
        assert answer.json()["error"]["code"] == "internal_error"
        streamed = client.post(url, json={"content": "hi", "stream": True})
        assert "internal_error" in streamed.text
        assert _turns(registry, "http", "crashed") == 1
        assert _turns(registry, "sse", "crashed") == 1
        assert _turns(registry, "http", "interrupted") == 0


def test_a_turn_the_database_refuses_before_it_starts_is_a_failed_turn_on_every_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 on the messages route before a turn started was counted `rejected`, the
    client's doing: no SLO saw a database outage that refused every message."""

    async def unavailable(*_: object, **__: object) -> None:
        raise DatabaseUnavailableError("refused")

    with app_client(make_settings(tmp_path)) as client:
        registry = _registry(client)
        make_goal(client)
        conversation_id = make_conversation(client)
        monkeypatch.setattr(ConversationRepository, "open_turn", unavailable)
        url = f"/v1/conversations/{conversation_id}/messages"
        assert client.post(url, json={"content": "hi"}).status_code == 503
        assert client.post(url, json={"content": "hi", "stream": True}).status_code == 503
        with client.websocket_connect(f"{url.removesuffix('/messages')}/ws") as ws:
            ws.send_json({"type": "message", "content": "hi"})
            assert ws.receive_json()["code"] == "database_unavailable"
        for channel in ("http", "sse", "ws"):
            assert _turns(registry, channel, "db_error") == 1, channel
            assert not _turns(registry, channel, "rejected"), channel  # 0: pre-created
