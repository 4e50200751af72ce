"""The live streams over SSE, on a real server: the customer and the agents follow a
handoff as it happens, a reconnect with Last-Event-ID gets what was missed and nothing
twice, the bound answers 503, a conversation deleted ends its streams (SSE and WebSocket)
as not found, and (PostgreSQL) an event made on one replica, or a deletion, reaches a
subscriber on another through LISTEN/NOTIFY, not the heartbeat's look."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from parley.api.schemas import LiveEventOut
from parley.app import create_app
from parley.client import ParleyClient, ParleyError
from tests.conftest import make_settings
from tests.support.live_server import LiveServer

pytestmark = pytest.mark.integration

BOOTSTRAP = "bootstrap-secret"


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path, api_keys=BOOTSTRAP, database_url=database_url)
    with LiveServer(create_app(settings)) as live:
        yield live


@contextlib.asynccontextmanager
async def _client(url: str, key: str = BOOTSTRAP) -> AsyncIterator[ParleyClient]:
    async with ParleyClient(url, api_key=key, timeout=30) as parley:
        yield parley


async def _keys(url: str) -> dict[str, str]:
    """A goal that escalates on "human", and a client key and two agent keys."""
    async with httpx.AsyncClient(base_url=url, headers=_bearer(BOOTSTRAP)) as admin:
        goal = {
            "id": "support",
            "name": "Support",
            "instructions": "Help.",
            "escalation": {"trigger_phrases": ["human"]},
        }
        (await admin.post("/v1/goals/", json=goal)).raise_for_status()
        secrets = {}
        for name, role in (("alice", "client"), ("ann", "agent"), ("bob", "agent")):
            made = await admin.post("/v1/keys/", json={"name": name, "role": role})
            made.raise_for_status()
            secrets[name] = made.json()["secret"]
    return secrets


def _bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


async def _take(events: AsyncGenerator[LiveEventOut, None], count: int) -> list[LiveEventOut]:
    taken: list[LiveEventOut] = []
    async with asyncio.timeout(20):
        async for event in events:
            taken.append(event)
            if len(taken) == count:
                break
    await events.aclose()
    return taken


def _what(event: LiveEventOut) -> str:
    if event.message is not None:
        return f"{event.message.role.value}:{event.message.content}"
    assert event.step is not None
    return event.step.value


async def _subscribed(server: LiveServer, stream: str, count: int = 1) -> None:
    """Until the server counts ``count`` streams open (a new one reads the log from then
    on; a stream whose client left is closed)."""
    async with asyncio.timeout(20), httpx.AsyncClient(base_url=server.http_url) as http:
        while True:
            text = (await http.get("/metrics")).text
            if f'live_streams_open{{stream="{stream}"}} {count:.1f}' in text:
                return
            await asyncio.sleep(0.02)


async def test_the_customer_and_the_agents_follow_a_handoff_and_resume_where_they_left(
    server: LiveServer,
) -> None:
    keys = await _keys(server.http_url)
    async with (
        _client(server.http_url, keys["alice"]) as alice,
        _client(server.http_url, keys["ann"]) as ann,
    ):
        conversation = await alice.create_conversation("support")
        customer_sees = asyncio.create_task(_take(alice.follow_conversation(conversation.id), 5))
        queue_sees = asyncio.create_task(_take(ann.follow_handoffs(), 5))
        await _subscribed(server, "conversation")
        await _subscribed(server, "queue")
        await alice.send_message(conversation.id, "a human please")
        await alice.send_message(conversation.id, "hello?")  # held for the agent
        await ann.assign(conversation.id)
        await ann.send_as_agent(conversation.id, "Ann here")
        await ann.resolve(conversation.id, return_to_bot=False, note="done")
        seen = await customer_sees
        queued = await queue_sees
        expected = ["escalated", "user:hello?", "assigned", "agent:Ann here", "completed"]
        assert [_what(e) for e in seen] == expected
        assert [e.seq for e in seen] == [1, 2, 3, 4, 5]
        assert [_what(e) for e in queued] == expected
        assert seen[2].handoff is not None
        assert seen[2].handoff.agent == "ann"
        # Reconnecting after event 2: the rest, nothing twice.
        resumed = await _take(alice.follow_conversation(conversation.id, last_event_id=2), 3)
        assert [e.seq for e in resumed] == [3, 4, 5]
        again = await _take(ann.follow_handoffs(last_event_id=queued[3].id), 1)
        assert [e.id for e in again] == [queued[4].id]
    # Every client gone: every stream closed, none left counting against the bound.
    await _subscribed(server, "conversation", 0)
    await _subscribed(server, "queue", 0)


async def test_streams_refuse_what_the_caller_may_not_see_and_ids_they_cannot_read(
    server: LiveServer,
) -> None:
    keys = await _keys(server.http_url)
    async with _client(server.http_url) as admin, _client(server.http_url, keys["alice"]) as alice:
        theirs = await admin.create_conversation("support")
        with pytest.raises(ParleyError) as hidden:
            await _take(alice.follow_conversation(theirs.id), 1)
        assert (hidden.value.status, hidden.value.code) == (404, "conversation_not_found")
        with pytest.raises(ParleyError) as forbidden:
            await _take(alice.follow_handoffs(), 1)
        assert forbidden.value.status == 403
    async with httpx.AsyncClient(base_url=server.http_url, headers=_bearer(BOOTSTRAP)) as http:
        for bad in ("-1", "x", "99999999999999999999"):
            answer = await http.get("/v1/handoffs/events", headers={"last-event-id": bad})
            assert answer.status_code == 422, bad
            assert answer.json()["error"]["type"] == "validation_error"


async def test_past_the_streams_bound_a_new_stream_is_answered_503(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_keys=BOOTSTRAP, live_max_streams=1)
    with LiveServer(create_app(settings)) as server:
        async with _client(server.http_url) as admin:
            first = asyncio.create_task(_take(admin.follow_handoffs(), 1))
            await _subscribed(server, "queue")
            with pytest.raises(ParleyError) as refused:
                await _take(admin.follow_handoffs(), 1)
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
    assert (refused.value.status, refused.value.code) == (503, "too_many_streams")
    assert refused.value.retry_after == 5


@pytest.mark.postgres
async def test_an_event_on_one_replica_reaches_a_subscriber_on_another(tmp_path: Path) -> None:
    """Two replicas on one PostgreSQL database; the heartbeat (when a stream would look in
    the log by itself) is longer than the test's deadline, so only LISTEN/NOTIFY can
    bring the event in time."""
    from tests.conftest import postgres_url

    url = await postgres_url()
    settings: dict[str, Any] = {
        "api_keys": BOOTSTRAP,
        "database_url": url,
        "live_heartbeat_seconds": 600,
    }
    with (
        LiveServer(create_app(make_settings(tmp_path / "a", **settings))) as a,
        LiveServer(create_app(make_settings(tmp_path / "b", **settings))) as b,
    ):
        keys = await _keys(a.http_url)
        async with (
            _client(a.http_url, keys["alice"]) as alice_on_a,
            _client(b.http_url, keys["alice"]) as alice_on_b,
            _client(b.http_url, keys["bob"]) as bob_on_b,
            _client(a.http_url, keys["ann"]) as ann_on_a,
        ):
            conversation = await alice_on_a.create_conversation("support")
            customer = asyncio.create_task(
                _take(alice_on_b.follow_conversation(conversation.id), 3)
            )
            queue = asyncio.create_task(_take(bob_on_b.follow_handoffs(), 3))
            await _subscribed(b, "conversation")
            await _subscribed(b, "queue")
            await alice_on_a.send_message(conversation.id, "a human please")
            await ann_on_a.assign(conversation.id)
            await ann_on_a.send_as_agent(conversation.id, "Ann here")
            expected = ["escalated", "assigned", "agent:Ann here"]
            assert [_what(e) for e in await customer] == expected
            assert [_what(e) for e in await queue] == expected
            # Deleted on one replica: a stream on the other ends at once.
            await ann_on_a.resolve(conversation.id, return_to_bot=False)
            await _subscribed(b, "conversation", 0)  # the customer's first stream closed
            following = asyncio.create_task(
                _stream_ends_not_found(alice_on_b, str(conversation.id))
            )
            await _subscribed(b, "conversation")
            await alice_on_a.delete_conversation(conversation.id)
            ended = await following
            assert (ended.status, ended.code) == (404, "conversation_not_found")


async def _completed(url: str, keys: dict[str, str]) -> str:
    """A conversation of alice's that ann took and completed: it may be deleted."""
    async with _client(url, keys["alice"]) as alice, _client(url, keys["ann"]) as ann:
        conversation = await alice.create_conversation("support")
        await alice.send_message(conversation.id, "a human please")
        await ann.assign(conversation.id)
        await ann.resolve(conversation.id, return_to_bot=False)
    return str(conversation.id)


async def _stream_ends_not_found(parley: ParleyClient, conversation: str) -> ParleyError:
    with pytest.raises(ParleyError) as ended:
        await _take(parley.follow_conversation(conversation), 1)
    return ended.value


async def test_a_deleted_conversation_ends_its_streams_as_not_found(server: LiveServer) -> None:
    keys = await _keys(server.http_url)
    conversation = await _completed(server.http_url, keys)
    async with (
        _client(server.http_url, keys["alice"]) as alice,
        _client(server.http_url, keys["ann"]) as ann,
        connect(
            f"{server.ws_url}/v1/conversations/{conversation}/ws",
            additional_headers=_bearer(keys["alice"]),
        ) as socket,
    ):
        customer = asyncio.create_task(_stream_ends_not_found(alice, conversation))
        agent = asyncio.create_task(_stream_ends_not_found(ann, conversation))
        await _subscribed(server, "conversation", 3)  # both SSE streams and the socket's
        await alice.delete_conversation(conversation)
        for ended in await asyncio.gather(customer, agent):
            assert (ended.status, ended.code) == (404, "conversation_not_found")
        async with asyncio.timeout(20):
            frame = json.loads(await socket.recv())
        assert (frame["type"], frame["code"]) == ("events_stopped", "conversation_not_found")
        with pytest.raises(ParleyError) as again:  # reconnecting: the usual 404
            await _take(alice.follow_conversation(conversation, last_event_id=1), 1)
        assert again.value.status == 404


async def test_open_streams_end_once_their_key_is_revoked(server: LiveServer) -> None:
    """Opened before the revocation, a conversation's stream, the queue's and a
    WebSocket's pushed events each end at their next event (401 ``unauthorized``; the
    socket closed 1008) instead of serving the revoked key on; another key's stream goes
    on."""
    keys = await _keys(server.http_url)
    async with (
        _client(server.http_url, keys["alice"]) as alice,
        _client(server.http_url, keys["ann"]) as ann,
        _client(server.http_url, keys["bob"]) as bob,
        httpx.AsyncClient(base_url=server.http_url, headers=_bearer(BOOTSTRAP)) as admin,
    ):
        conversation = await alice.create_conversation("support")
        customer = asyncio.create_task(_stream_ends(alice.follow_conversation(conversation.id)))
        queue = asyncio.create_task(_stream_ends(ann.follow_handoffs()))
        kept = asyncio.create_task(_take(bob.follow_handoffs(), 1))
        async with connect(
            f"{server.ws_url}/v1/conversations/{conversation.id}/ws",
            additional_headers=_bearer(keys["alice"]),
        ) as socket:
            await _subscribed(server, "conversation", 2)
            await _subscribed(server, "queue", 2)
            for name in ("alice", "ann"):
                (await admin.post(f"/v1/keys/{name}/revoke")).raise_for_status()
            escalated = await admin.post(f"/v1/conversations/{conversation.id}/escalate", json={})
            escalated.raise_for_status()
            for ended in await asyncio.gather(customer, queue):
                assert (ended.status, ended.code) == (401, "unauthorized")
            assert [_what(event) for event in await kept] == ["escalated"]
            async with asyncio.timeout(20):
                frame = json.loads(await socket.recv())
                assert (frame["type"], frame["code"]) == ("error", "unauthorized")
                await socket.wait_closed()
            assert socket.close_code == 1008


async def _stream_ends(events: AsyncGenerator[LiveEventOut, None]) -> ParleyError:
    with pytest.raises(ParleyError) as ended:
        await _take(events, 1)
    return ended.value
