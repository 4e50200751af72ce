"""The human handoff over the API: an escalated conversation waits in /v1/handoffs, one
of two agents claiming it at once gets it, only its holder writes as the agent (or hands
it on, or puts it back), and resolving it returns it to the bot, which sees the agent's
messages, or completes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from parley.llm import Role
from tests.api.helpers import parse_sse
from tests.conftest import app_client, make_settings
from tests.support.providers import ScriptedProvider

BOOTSTRAP = "bootstrap-secret"
ADMIN = {"Authorization": f"Bearer {BOOTSTRAP}"}


@pytest.fixture
def provider() -> ScriptedProvider:
    return ScriptedProvider()


@pytest.fixture
def client(tmp_path: Path, provider: ScriptedProvider) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, api_keys=BOOTSTRAP)
    with app_client(settings, provider) as test_client:
        goal = {"id": "support", "name": "Support", "instructions": "Help."}
        assert test_client.post("/v1/goals/", json=goal, headers=ADMIN).status_code == 201
        yield test_client


def _key(client: TestClient, name: str, role: str) -> dict[str, str]:
    made = client.post("/v1/keys/", json={"name": name, "role": role}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['secret']}"}


def _escalated(client: TestClient, customer: dict[str, str]) -> str:
    made = client.post("/v1/conversations/", json={"goal_id": "support"}, headers=customer)
    conversation: str = made.json()["id"]
    turn = client.post(
        f"/v1/conversations/{conversation}/messages",
        json={"content": "get me a human"},
        headers=customer,
    )
    assert turn.json()["escalation_reason"] == "trigger_phrase"
    return conversation


def _post(client: TestClient, path: str, headers: dict[str, str], body: Any = None) -> Any:
    return client.post(f"/v1/conversations/{path}", json=body, headers=headers)


def test_an_escalated_conversation_waits_in_the_queue_with_its_wait(client: TestClient) -> None:
    customer, ann = _key(client, "shop", "client"), _key(client, "ann", "agent")
    conversation = _escalated(client, customer)
    body = client.get(f"/v1/conversations/{conversation}", headers=customer).json()
    handoff = body["handoff"]
    assert (handoff["state"], handoff["agent"], handoff["reason"]) == (
        "waiting",
        None,
        "trigger_phrase",
    )
    queue = client.get("/v1/handoffs/", headers=ann).json()
    assert [item["id"] for item in queue["items"]] == [conversation]
    assert queue["items"][0]["wait_seconds"] >= 0
    assert client.get("/v1/handoffs/", headers=customer).status_code == 403
    assigned = client.get("/v1/handoffs/?state=assigned", headers=ann).json()
    assert assigned["items"] == []


def test_of_two_agents_claiming_one_gets_it_and_only_the_holder_writes_as_agent(
    client: TestClient, provider: ScriptedProvider
) -> None:
    customer = _key(client, "shop", "client")
    ann, bob = _key(client, "ann", "agent"), _key(client, "bob", "agent")
    conversation = _escalated(client, customer)
    first = _post(client, f"{conversation}/assign", ann)
    assert first.status_code == 200
    assert (first.json()["handoff"]["state"], first.json()["handoff"]["agent"]) == (
        "assigned",
        "ann",
    )
    second = _post(client, f"{conversation}/assign", bob)
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "already_assigned"

    refused = _post(client, f"{conversation}/messages", bob, {"content": "hello"})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "not_assigned"
    calls = len(provider.calls)
    written = _post(client, f"{conversation}/messages", ann, {"content": "Ann here, hello"})
    assert written.status_code == 201
    message = written.json()["message"]
    assert (message["role"], message["author"]) == ("agent", "ann")
    assert written.json()["conversation"]["handoff"]["first_agent_reply_at"] is not None
    assert len(provider.calls) == calls  # an agent's message asks no LLM

    # Handed on by its holder, not by another agent; put back in the queue by its holder.
    not_holder = _post(client, f"{conversation}/assign", bob, {"agent": "bob"})
    assert not_holder.json()["error"]["code"] == "not_assigned"
    moved = _post(client, f"{conversation}/assign", ann, {"agent": "bob"})
    assert moved.json()["handoff"]["agent"] == "bob"
    back = _post(client, f"{conversation}/unassign", bob)
    assert (back.json()["handoff"]["state"], back.json()["handoff"]["agent"]) == ("waiting", None)
    assert back.json()["handoff"]["escalated_at"] == first.json()["handoff"]["escalated_at"]


def test_resolving_returns_the_conversation_to_the_bot_which_sees_the_agent(
    client: TestClient, provider: ScriptedProvider
) -> None:
    customer, ann = _key(client, "shop", "client"), _key(client, "ann", "agent")
    conversation = _escalated(client, customer)
    _post(client, f"{conversation}/assign", ann)
    _post(client, f"{conversation}/messages", ann, {"content": "Your order ships today."})
    other = _key(client, "bob", "agent")
    assert (
        _post(client, f"{conversation}/resolve", other, {"return_to_bot": True}).status_code == 409
    )
    resolved = _post(
        client, f"{conversation}/resolve", ann, {"return_to_bot": True, "note": "answered"}
    )
    assert resolved.status_code == 200
    body = resolved.json()
    assert (body["status"], body["turns"]) == ("active", 0)
    assert (body["handoff"]["state"], body["handoff"]["note"]) == ("resolved", "answered")
    again = _post(client, f"{conversation}/resolve", ann, {"return_to_bot": True})
    assert again.json()["error"]["code"] == "not_in_handoff"

    turn = _post(client, f"{conversation}/messages", customer, {"content": "thanks!"})
    assert turn.status_code == 200
    history = provider.calls[-1].messages
    assert ("Your order ships today.", Role.ASSISTANT) in [(m.content, m.role) for m in history]


def test_an_agent_can_complete_a_conversation_and_a_client_never_writes_as_agent(
    client: TestClient,
) -> None:
    customer, ann = _key(client, "shop", "client"), _key(client, "ann", "agent")
    conversation = _escalated(client, customer)
    assert _post(client, f"{conversation}/assign", customer).status_code == 403
    _post(client, f"{conversation}/assign", ann)
    done = _post(client, f"{conversation}/resolve", ann, {"return_to_bot": False})
    assert done.json()["status"] == "completed"
    detail = client.get(f"/v1/conversations/{conversation}", headers=customer).json()
    assert [m["role"] for m in detail["messages"] if m["author"] is not None] == []


def test_in_development_mode_an_agent_names_itself_in_a_header(tmp_path: Path) -> None:
    with app_client(make_settings(tmp_path)) as client:
        goal = {"id": "support", "name": "Support", "instructions": "Help."}
        client.post("/v1/goals/", json=goal)
        conversation = _escalated(client, {})
        ann = {"X-Parley-Agent": "ann"}
        claimed = _post(client, f"{conversation}/assign", ann)
        assert claimed.json()["handoff"]["agent"] == "ann"
        bob = _post(client, f"{conversation}/messages", {"X-Parley-Agent": "bob"}, {"content": "x"})
        assert bob.json()["error"]["code"] == "not_assigned"
        bad = client.get("/v1/handoffs/", headers={"X-Parley-Agent": "Not A Name!"})
        assert bad.status_code == 422


def test_a_customer_message_in_a_handoff_is_stored_for_the_agent_on_every_channel(
    client: TestClient, provider: ScriptedProvider
) -> None:
    """No more 409 for the customer: the message is stored (role user), never sent to the
    LLM, and answered 202 with the handoff (SSE: a handoff event; WebSocket: a handoff
    frame). A retry with the same Idempotency-Key stores nothing more."""
    customer, ann = _key(client, "shop", "client"), _key(client, "ann", "agent")
    conversation = _escalated(client, customer)
    calls = len(provider.calls)
    keyed = {**customer, "Idempotency-Key": "k-1"}
    held = _post(client, f"{conversation}/messages", keyed, {"content": "still there?"})
    assert held.status_code == 202
    body = held.json()
    assert (body["held_for_agent"], body["reply"]) == (True, None)
    assert body["user_message"]["role"] == "user"
    assert body["conversation"]["handoff"]["state"] == "waiting"
    again = _post(client, f"{conversation}/messages", keyed, {"content": "still there?"})
    assert again.status_code == 202
    assert again.json()["user_message"]["id"] == body["user_message"]["id"]

    _post(client, f"{conversation}/assign", ann)
    streamed = _post(
        client, f"{conversation}/messages", customer, {"content": "hi", "stream": True}
    )
    events = parse_sse(streamed.text)
    assert [name for name, _ in events] == ["accepted", "handoff"]
    assert (events[1][1]["state"], events[1][1]["agent"]) == ("assigned", "ann")
    with client.websocket_connect(f"/v1/conversations/{conversation}/ws", headers=customer) as ws:
        ws.send_json({"type": "message", "content": "over ws"})
        turn = [_turn_frame(ws), _turn_frame(ws)]
        assert [frame["type"] for frame in turn] == ["accepted", "handoff"]
        assert turn[1]["handoff"]["agent"] == "ann"
    assert len(provider.calls) == calls  # none of them reached the LLM
    detail = client.get(f"/v1/conversations/{conversation}", headers=ann).json()
    said = [m["content"] for m in detail["messages"] if m["role"] == "user"]
    assert said[-3:] == ["still there?", "hi", "over ws"]
    other = _key(client, "other", "client")  # another customer cannot probe it
    assert _post(client, f"{conversation}/messages", other, {"content": "x"}).status_code == 404


def _turn_frame(ws: Any) -> Any:
    """The next frame of a turn: the conversation's live events come between them."""
    while (frame := ws.receive_json())["type"] == "event":
        pass
    return frame


def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = float(sample.value)
    return samples


def _value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_every_wait_of_the_handoff_is_measured_by_goal(client: TestClient) -> None:
    """Queue depth and oldest wait from the store; pickup, first response and resolution
    times; handoffs by reason, resolutions by kind, abandonments."""
    customer, ann = _key(client, "shop", "client"), _key(client, "ann", "agent")
    worked, waiting, left = (_escalated(client, customer) for _ in range(3))
    samples = _samples(client)
    assert _value(samples, "handoff_queue_depth", goal_id="support", state="waiting") == 3
    oldest = _value(samples, "handoff_oldest_waiting_seconds", goal_id="support")
    assert oldest is not None
    assert oldest >= 0
    reason = {"goal_id": "support", "reason": "trigger_phrase"}
    assert _value(samples, "handoffs_total", **reason) == 3

    _post(client, f"{worked}/assign", ann)
    held = _value(_samples(client), "handoff_queue_depth", goal_id="support", state="assigned")
    assert held == 1
    _post(client, f"{worked}/messages", ann, {"content": "one"})
    _post(client, f"{worked}/messages", ann, {"content": "two"})  # not a first response
    _post(client, f"{worked}/resolve", ann, {"return_to_bot": True})
    _post(client, f"{left}/close", customer)
    samples = _samples(client)
    goal = {"goal_id": "support"}
    assert _value(samples, "handoff_wait_seconds_count", **goal) == 1
    assert _value(samples, "handoff_first_response_seconds_count", **goal) == 1
    assert _value(samples, "handoff_resolution_seconds_count", **goal) == 1
    returned = {"goal_id": "support", "resolution": "returned_to_bot"}
    assert _value(samples, "handoffs_resolved_total", **returned) == 1
    assert _value(samples, "handoffs_abandoned_total", **goal) == 1
    assert _value(samples, "handoff_queue_depth", goal_id="support", state="waiting") == 1
    # Emptied, a state seen before reads 0 (a series, not a gap).
    assert _value(samples, "handoff_queue_depth", goal_id="support", state="assigned") == 0
    assert waiting  # still in the queue: the depth above


def test_ended_conversations_are_counted_by_whether_a_human_had_them(
    client: TestClient,
) -> None:
    """Containment's parts: a conversation the customer closes without an escalation, one
    an agent completes, one whose customer leaves the queue."""
    customer, ann = _key(client, "shop", "client"), _key(client, "ann", "agent")
    made = client.post("/v1/conversations/", json={"goal_id": "support"}, headers=customer)
    _post(client, f"{made.json()['id']}/close", customer)
    completed, left = _escalated(client, customer), _escalated(client, customer)
    _post(client, f"{completed}/assign", ann)
    _post(client, f"{completed}/resolve", ann, {"return_to_bot": False})
    _post(client, f"{left}/close", customer)
    samples = _samples(client)
    ended, goal = "conversations_ended_total", {"goal_id": "support"}
    by_client = {"source": "client", "outcome": "unknown"}
    assert _value(samples, ended, **goal, **by_client, escalated="false") == 1
    agent = {"source": "agent", "outcome": "unknown"}
    assert _value(samples, ended, **goal, **agent, escalated="true") == 1
    left_queue = {"source": "client", "outcome": "abandoned"}
    assert _value(samples, ended, **goal, **left_queue, escalated="true") == 1
