"""parley.client against a live Parley: every call, every channel, and errors raised in
the one error shape, on HTTP, SSE and WebSocket alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from parley.app import create_app
from parley.client import (
    Accepted,
    Done,
    Escalated,
    HeldForAgent,
    ParleyClient,
    ParleyError,
    StreamEvent,
    Token,
    TurnFailed,
)
from parley.domain.models import ConversationStatus, EscalationReason, HandoffState
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
    settings = make_settings(tmp_path, api_keys="k1", llm_max_retries=0)
    with LiveServer(create_app(settings, provider=provider)) as live:
        yield live


@pytest.fixture
async def parley(server: LiveServer) -> AsyncIterator[ParleyClient]:
    async with ParleyClient(server.http_url, api_key="k1", timeout=30) as client:
        yield client


def _kinds(events: list[StreamEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


async def test_goals_and_conversations_round_trip(parley: ParleyClient) -> None:
    goal = await parley.create_goal(
        "Support", "Help.", goal_id="support", escalation={"trigger_phrases": ["human"]}
    )
    assert (await parley.get_goal("support")) == goal
    assert [g.id for g in await parley.list_goals()] == ["support"]
    assert (await parley.update_goal("support", name="Help desk")).name == "Help desk"
    created = [await parley.create_conversation("support", {"n": n}) for n in range(3)]
    first = await parley.list_conversations(limit=2)
    rest = await parley.list_conversations(limit=2, cursor=first.next_cursor)
    assert [c.id for c in [*first.items, *rest.items]] == [c.id for c in reversed(created)]
    closed = await parley.close_conversation(created[0].id)
    assert closed.status is ConversationStatus.COMPLETED
    escalated = await parley.escalate_conversation(created[1].id, note="angry")
    assert escalated.escalation is not None
    assert escalated.escalation.reason is EscalationReason.MANUAL
    only_active = await parley.list_conversations(status=ConversationStatus.ACTIVE)
    assert [c.id for c in only_active.items] == [created[2].id]


async def test_a_turn_on_each_channel(parley: ParleyClient, provider: ScriptedProvider) -> None:
    provider.steps.extend(["whole reply", "streamed reply here", "socket one", "socket two"])
    await parley.create_goal("Support", "Help.", goal_id="support")
    conversation = await parley.create_conversation("support")
    whole = await parley.send_message(conversation.id, "hi", idempotency_key="k")
    assert whole.reply is not None
    assert whole.reply.content == "whole reply"
    again = await parley.send_message(conversation.id, "hi", idempotency_key="k")
    assert again.reply == whole.reply
    streamed = [event async for event in parley.stream_message(conversation.id, "more")]
    assert _kinds(streamed)[0] == "Accepted"
    assert _kinds(streamed)[-1] == "Done"
    text = "".join(event.content for event in streamed if isinstance(event, Token))
    assert text == "streamed reply here"
    async with parley.chat(conversation.id) as chat:
        await chat.ping()
        for expected in ("socket one", "socket two"):
            events = [event async for event in chat.send("again")]
            assert isinstance(events[0], Accepted)
            done = events[-1]
            assert isinstance(done, Done)
            assert done.message.content == expected
    detail = await parley.get_conversation(conversation.id, messages_limit=2)
    assert [m.content for m in detail.messages] == ["again", "socket two"]
    assert detail.messages_next_before is not None


async def test_errors_are_raised_in_the_one_shape(server: LiveServer) -> None:
    async with ParleyClient(server.http_url, api_key="wrong") as stranger:
        with pytest.raises(ParleyError) as refused:
            await stranger.list_goals()
    assert (refused.value.status, refused.value.type) == (401, "unauthorized")
    async with ParleyClient(server.http_url, api_key="k1") as parley:
        with pytest.raises(ParleyError) as missing:
            await parley.get_goal("nope")
        assert (missing.value.status, missing.value.code) == (404, "goal_not_found")
        await parley.create_goal("Support", "Help.", goal_id="support")
        conversation = await parley.create_conversation("support")
        await parley.close_conversation(conversation.id)
        with pytest.raises(ParleyError) as closed:
            await parley.send_message(conversation.id, "hi")
        assert (closed.value.status, closed.value.code) == (409, "conversation_closed")
        with pytest.raises(ParleyError) as closed_stream:
            async for _ in parley.stream_message(conversation.id, "hi"):
                pass
        assert closed_stream.value.code == "conversation_closed"
        async with parley.chat(conversation.id) as chat:
            events = [event async for event in chat.send("hi")]
        assert len(events) == 1
        assert isinstance(events[0], TurnFailed)
        assert events[0].error.code == "conversation_closed"


async def test_a_failed_llm_turn_is_an_event_with_its_status_then_the_escalation(
    parley: ParleyClient, provider: ScriptedProvider
) -> None:
    down = LLMError(LLMErrorKind.SERVER_ERROR, "down")
    provider.steps.extend([down, down])
    await parley.create_goal("Support", "Help.", goal_id="s", escalation={"max_llm_failures": 1})
    streamed = await parley.create_conversation("s")
    events = [event async for event in parley.stream_message(streamed.id, "hi")]
    assert _kinds(events) == ["Accepted", "TurnFailed", "Escalated"]
    failed = events[1]
    assert isinstance(failed, TurnFailed)
    assert (failed.error.status, failed.error.code) == (502, "llm_server_error")
    assert isinstance(events[2], Escalated)
    socket = await parley.create_conversation("s")
    async with parley.chat(socket.id) as chat:
        events = [event async for event in chat.send("hi")]
    assert _kinds(events) == ["Accepted", "TurnFailed", "Escalated"]


async def test_a_message_held_for_an_agent_ends_its_turn_on_every_channel(
    parley: ParleyClient,
) -> None:
    """A message to a conversation in a handoff is stored for the agent: the WebSocket
    turn used to wait forever for a frame after ``handoff``."""
    await parley.create_goal("Support", "Help.", goal_id="s")
    conversation = await parley.create_conversation("s")
    await parley.escalate_conversation(conversation.id)
    whole = await parley.send_message(conversation.id, "still there?")
    assert whole.held_for_agent
    assert whole.reply is None
    streamed = [event async for event in parley.stream_message(conversation.id, "hello?")]
    assert _kinds(streamed) == ["Accepted", "HeldForAgent"]
    async with parley.chat(conversation.id) as chat:
        events = [event async for event in chat.send("anyone?")]
    assert _kinds(events) == ["Accepted", "HeldForAgent"]
    held = events[1]
    assert isinstance(held, HeldForAgent)
    assert held.handoff.state is HandoffState.WAITING


async def test_a_client_on_the_callers_httpx_client_uses_its_key_and_leaves_it_open(
    server: LiveServer,
) -> None:
    headers = {"authorization": "Bearer k1"}
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers) as http:
        async with ParleyClient(http=http) as parley:
            await parley.create_goal("Support", "Help.", goal_id="support")
            conversation = await parley.create_conversation("support")
            async with parley.chat(conversation.id) as chat:  # the key reaches the socket
                await chat.ping()
        assert (await http.get("/v1/goals/support")).status_code == 200  # still open
